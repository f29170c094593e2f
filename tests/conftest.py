"""Fixtures: tiny datasets written in the real on-disk layouts, with easily separable
classes (each class is a tone of its own pitch), so short runs learn them."""
import csv
import json
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


@pytest.fixture(scope='module')
def tiny_root(tmp_path_factory):
    """A folder for tiny_run: the Speech Commands fixture in sc/ (6 speakers, 2 takes)."""
    root = tmp_path_factory.mktemp('tiny')
    write_speechcommands(root / 'sc', speakers=6, takes=2)
    return root


def tiny_run(fixture_root, name, script_name='train', **overrides):
    """The resolved configuration of a tiny CLAR (or other) run on the Speech Commands
    fixture in fixture_root/sc: width 0.125, batch 8, 4 epochs, half the labels; runs in
    fixture_root/runs."""
    import importlib
    import config
    cfg = config.script_defaults(vars(importlib.import_module(script_name)))
    root = Path(fixture_root)
    cfg.update(dataset='speechcommands', data_root=str(root / 'sc'),
               cache_dir=str(root / 'cache'), out_dir=str(root / 'runs'),
               run_name=name, encoder_width=0.125, batch_size=8, epochs=4, warmup_epochs=1,
               learning_rate=1e-3, label_fraction=0.5, batchnorm_batches=2)
    cfg.update(overrides)
    return cfg


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / 'cache'


@pytest.fixture
def speechcommands(tmp_path):
    return write_speechcommands(tmp_path / 'speech_commands_v0.02')


def _seconds_of(clip, seconds, sample_rate):
    """`clip` zero-padded or cropped to exactly `seconds`."""
    length = int(round(seconds * sample_rate))
    return np.pad(clip, (0, max(0, length - len(clip))))[:length]


NSYNTH_FAMILIES = ('bass', 'brass', 'flute', 'guitar', 'keyboard', 'mallet', 'organ', 'reed',
                   'string', 'synth_lead', 'vocal')


def write_nsynth(root, notes=None, seed=0):
    """The NSynth layout: nsynth-{train,valid,test}/examples.json (note_str -> attributes)
    and audio/<note_str>.wav, 4-s 16 kHz notes. `notes` maps each folder to
    (instrument_family, instrument number, pitch) triples."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    notes = notes or {'nsynth-train': [(0, 1, 40), (0, 2, 45), (3, 0, 60), (3, 4, 64),
                                       (10, 3, 72), (10, 5, 100)],
                      'nsynth-valid': [(0, 6, 9), (3, 7, 60), (10, 8, 72)],
                      'nsynth-test': [(0, 9, 40), (3, 10, 21), (10, 11, 72)]}
    for folder, triples in notes.items():
        (root / folder / 'audio').mkdir(parents=True, exist_ok=True)
        examples = {}
        for family, number, pitch in triples:
            family_name = NSYNTH_FAMILIES[family]
            instrument = f'{family_name}_acoustic_{number:03d}'
            note = f'{instrument}-{pitch:03d}-100'
            examples[note] = {
                'note': int(rng.integers(0, 300000)), 'note_str': note,
                'instrument': number, 'instrument_str': instrument,
                'instrument_family': family, 'instrument_family_str': family_name,
                'instrument_source': 0, 'instrument_source_str': 'acoustic',
                'pitch': pitch, 'velocity': 100, 'sample_rate': 16000,
                'qualities': [0] * 10, 'qualities_str': []}
            clip = _seconds_of(tone_clip(family, rng, 16000, seconds=3.8), 4.0, 16000)
            soundfile.write(root / folder / 'audio' / f'{note}.wav', clip, 16000, subtype='PCM_16')
        (root / folder / 'examples.json').write_text(json.dumps(examples, indent=4))
    return root


ESC50_COLUMNS = ('filename', 'fold', 'target', 'category', 'esc10', 'src_file', 'take')


def write_esc50(root, categories=(('dog', 0, True), ('rooster', 1, True), ('rain', 10, True),
                                  ('airplane', 47, False)), per_fold=1, seed=0):
    """The ESC-50 release layout: audio/{fold}-{source id}-{take}-{target}.wav (5 s, 44.1 kHz)
    and meta/esc50.csv. Clips of one source recording share a fold; the first category's
    fold-1 source gives two takes (A and B)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / 'audio').mkdir(parents=True, exist_ok=True)
    (root / 'meta').mkdir(parents=True, exist_ok=True)
    rows = []
    for c, (category, target, esc10) in enumerate(categories):
        for fold in range(1, 6):
            for n in range(per_fold):
                source = 100000 + 1000 * target + 10 * fold + n
                takes = 'AB' if (c, fold, n) == (0, 1, 0) else 'A'
                for take in takes:
                    name = f'{fold}-{source}-{take}-{target}.wav'
                    clip = _seconds_of(tone_clip(c, rng, 44100, seconds=4.6), 5.0, 44100)
                    soundfile.write(root / 'audio' / name, clip, 44100, subtype='PCM_16')
                    rows.append((name, fold, target, category, esc10, source, take))
    with open(root / 'meta' / 'esc50.csv', 'w', newline='') as table:
        writer = csv.writer(table)
        writer.writerow(ESC50_COLUMNS)
        writer.writerows(sorted(rows))
    return root


def write_esc10_standalone(root, classes=('001 - Dog bark', '002 - Rain', '010 - Fire crackling'),
                           seed=0):
    """The stand-alone ESC-10 release layout: 'NNN - Class name'/{fold}-{freesound id}-{take}.ogg,
    Vorbis at 44.1 kHz, one clip per class and fold; the first class's fold-1 clip lasts
    3.6 s and its fold-2 clip 7.2 s (the real release has a few such)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for c, folder in enumerate(classes):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for fold in range(1, 6):
            seconds = {(0, 1): 3.6, (0, 2): 7.2}.get((c, fold), 5.0)
            clip = _seconds_of(tone_clip(c, rng, 44100, seconds=max(seconds, 5.0) - 0.2),
                               seconds, 44100)
            soundfile.write(root / folder / f'{fold}-{20000 + 100 * c + fold}-A.ogg', clip,
                            44100, format='OGG', subtype='VORBIS')
    (root / 'README.md').write_text('fixture\n')
    return root


def write_fsdd(root, digits=range(10), speakers=('jackson', 'theo'), takes=(0, 4, 5, 9, 10, 49),
               seed=0):
    """The Free Spoken Digit Dataset layout: recordings/{digit}_{speaker}_{take}.wav, 8 kHz,
    mostly under 1 s; 0_jackson_10.wav lasts 1.3 s."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / 'recordings').mkdir(parents=True, exist_ok=True)
    for digit in digits:
        for speaker in speakers:
            for take in takes:
                seconds = 1.1 if (digit, speaker, take) == (0, 'jackson', 10) else 0.3
                clip = tone_clip(digit, rng, 8000, seconds=seconds)
                soundfile.write(root / 'recordings' / f'{digit}_{speaker}_{take}.wav', clip, 8000,
                                subtype='PCM_16')
    return root / 'recordings'


def write_background_noise(root, files=(('running_tap.wav', 10.0, 16000),
                                        ('dude_miaowing.wav', 10.5, 22050)), seed=0):
    """More Speech Commands _background_noise_ recordings (name, seconds, rate), as the
    12-class set cuts its silence clips from them, plus the folder's README."""
    folder = Path(root) / '_background_noise_'
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, seconds, rate in files:
        length = int(seconds * rate)
        ramp = np.linspace(-0.5, 0.5, length)        # every second sounds different
        soundfile.write(folder / name, ramp + rng.normal(0, 0.05, length), rate, subtype='PCM_16')
    (folder / 'README.md').write_text('fixture\n')
    return folder


@pytest.fixture(scope='session')
def trained(tmp_path_factory):
    """A CLAR run of one epoch on a tiny Speech Commands fixture (what
    `python train.py --epochs=1 --encoder_width=0.125 ...` does, in this process), trained
    once for every test module that uses it: (root, run directory, config). Tests that
    change the run work on a copy."""
    import config
    import engine
    import train
    root = tmp_path_factory.mktemp('trained')
    write_speechcommands(root / 'sc', speakers=6, takes=2)
    cfg = config.script_defaults(vars(train))
    cfg.update(dataset='speechcommands', data_root=str(root / 'sc'), cache_dir=str(root / 'cache'),
               out_dir=str(root / 'runs'), run_name='clar', encoder_width=0.125, batch_size=8,
               epochs=1, warmup_epochs=0, learning_rate=1e-3, label_fraction=0.5,
               batchnorm_batches=2)
    engine.run(cfg, 'clar', train.loss, 'all')
    return root, root / 'runs' / 'clar', cfg
