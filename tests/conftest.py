"""Fixtures: tiny datasets written in the real on-disk layouts, with easily separable
classes (each class is a tone of its own pitch), so short runs learn them."""
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def tone_clip(class_index, rng, sample_rate=16000, seconds=0.8):
    """A clip of class `class_index`: a harmonic tone whose pitch says the class, at a
    random onset, level and small detune, with a little noise."""
    length = int(seconds * sample_rate)
    t = np.arange(length) / sample_rate
    frequency = 220.0 * 2 ** (class_index * 5 / 12) * (1 + rng.uniform(-0.01, 0.01))
    signal = sum(np.sin(2 * np.pi * k * frequency * t + rng.uniform(0, 6)) / k for k in (1, 2, 3))
    envelope = np.clip(np.minimum(t, t[-1] - t) * 20, 0, 1)
    clip = rng.uniform(0.2, 0.5) * signal * envelope / 1.8 + rng.normal(0, 0.01, length)
    return np.roll(np.pad(clip, (0, int(0.2 * sample_rate))), rng.integers(0, int(0.2 * sample_rate)))


def write_speechcommands(root, words=('yes', 'no', 'up'), speakers=12, takes=2, seed=0,
                         sample_rate=16000):
    """The Speech Commands v0.02 layout: word folders of <speaker>_nohash_<n>.wav, the two
    list files (split by speaker) and _background_noise_."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    validation, testing = [], []
    for w, word in enumerate(words):
        (root / word).mkdir(parents=True, exist_ok=True)
        for s in range(speakers):
            speaker = f'{s:08x}'
            for n in range(takes):
                relative = f'{word}/{speaker}_nohash_{n}.wav'
                clip = tone_clip(w, rng, sample_rate)[:sample_rate]
                soundfile.write(root / relative, clip, sample_rate, subtype='PCM_16')
                if s % 6 == 4:
                    validation.append(relative)
                elif s % 6 == 5:
                    testing.append(relative)
    (root / '_background_noise_').mkdir(exist_ok=True)
    soundfile.write(root / '_background_noise_' / 'white_noise.wav',
                    rng.normal(0, 0.1, 3 * sample_rate), sample_rate, subtype='PCM_16')
    (root / 'validation_list.txt').write_text('\n'.join(validation) + '\n')
    (root / 'testing_list.txt').write_text('\n'.join(testing) + '\n')
    (root / 'LICENSE').write_text('fixture\n')
    return root


def write_class_folders(root, classes=('low', 'mid', 'high'), per_class=10, seed=0):
    """A folder per class, with mixed formats, rates and channel counts."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    formats = [('.wav', 16000, 1, 'PCM_16'), ('.flac', 22050, 2, 'PCM_24'),
               ('.ogg', 44100, 1, 'VORBIS'), ('.wav', 8000, 2, 'FLOAT')]
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            extension, rate, channels, subtype = formats[i % len(formats)]
            clip = tone_clip(c, rng, rate)
            if channels == 2:
                clip = np.stack([clip, clip], axis=1)
            soundfile.write(root / name / f'clip{i}{extension}', clip, rate, subtype=subtype)
    return root


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / 'cache'


@pytest.fixture
def speechcommands(tmp_path):
    return write_speechcommands(tmp_path / 'speech_commands_v0.02')
