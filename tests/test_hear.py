"""hear_clar.py: the HEAR 2021 API on the tiny trained run (the `trained` fixture), on the
CPU, with the white noise hear-validator sends; and a 20-minute input in bounded memory."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile
import torch

import audio
import embed
import hear_clar
from tests.conftest import ROOT


@pytest.fixture(scope='module')
def hear_model(trained):
    root, run_dir, cfg = trained
    return hear_clar.load_model(str(run_dir))


def white_noise(sounds, seconds, sample_rate=16000, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(sounds, int(seconds * sample_rate), generator=generator) * 2 - 1


def test_load_model(trained, hear_model):
    root, run_dir, cfg = trained
    assert isinstance(hear_model, torch.nn.Module) and not hear_model.training
    assert hear_model.sample_rate == 16000
    assert hear_model.scene_embedding_size == hear_model.timestamp_embedding_size == 64
    assert type(hear_model.scene_embedding_size) is int
    assert hear_model.hop_samples == 800 and hear_model.clip_samples == 16000
    from_file = hear_clar.load_model(str(run_dir / 'checkpoint_best.pt'), hop_ms=25)
    assert from_file.hop_samples == 400
    with pytest.raises(ValueError, match='pass a run directory.*no weights ship'):
        hear_clar.load_model()
    with pytest.raises(ValueError, match='hop_ms must be in'):
        hear_clar.load_model(str(run_dir), hop_ms=60)


@pytest.mark.parametrize('sounds,seconds', [(2, 1.07), (2, 1.98), (2, 4.0)])
def test_timestamp_embeddings_contract(hear_model, sounds, seconds):
    noise = white_noise(sounds, seconds)
    embeddings, timestamps = hear_clar.get_timestamp_embeddings(noise, hear_model)
    length_ms = 1000 * noise.shape[1] / 16000
    assert embeddings.dtype == torch.float32 and embeddings.dim() == 3
    assert embeddings.shape[0] == sounds and embeddings.shape[2] == hear_model.timestamp_embedding_size
    assert timestamps.shape == embeddings.shape[:2]
    assert torch.isfinite(embeddings).all()
    gaps = np.diff(timestamps.numpy(), axis=1)
    hop = gaps.mean()
    assert np.abs(gaps - hop).max() <= 1 and hop <= 50           # even, within 1 ms
    assert timestamps.min() <= hop                                 # the first no later than a hop
    assert timestamps.max() >= length_ms - 2 * hop                 # the last near the end...
    assert timestamps.max() <= length_ms                           # ... and not past it
    assert torch.equal(timestamps[0], timestamps[-1])
    assert not torch.allclose(embeddings[0], embeddings[1])       # different noise, different rows


def test_a_timestamp_embedding_is_the_clip_centred_on_it(hear_model):
    noise = white_noise(1, 1.98, seed=1)
    embeddings, timestamps = hear_clar.get_timestamp_embeddings(noise, hear_model)
    padded = torch.cat([torch.zeros(8000), audio.quantize(noise[0]), torch.zeros(8000)])
    for k in (0, 17, len(timestamps[0]) - 1):
        centre = int(timestamps[0, k]) * 16                       # ms -> samples
        window = padded[centre:centre + 16000]                    # centre - 0.5 s .. + 0.5 s
        np.testing.assert_allclose(embeddings[0, k], hear_model.embed(window[None])[0],
                                   rtol=1e-4, atol=1e-5)


def test_scene_embeddings_contract_and_embed_py(trained, hear_model, tmp_path):
    root, run_dir, cfg = trained
    noise = white_noise(4, 2.74, seed=2) * 0.5
    scenes = hear_clar.get_scene_embeddings(noise, hear_model)
    assert scenes.dtype == torch.float32
    assert scenes.shape == (4, hear_model.scene_embedding_size) and torch.isfinite(scenes).all()
    # the same vector as embed.py --pool=mean on the sound written to a file
    soundfile.write(tmp_path / 'noise.wav', noise[3].numpy(), 16000, subtype='FLOAT')
    model, _ = embed.load_model(run_dir)
    pooled, _, _ = embed.embed_recordings(model, [tmp_path / 'noise.wav'], 16000, 16000, 8000)
    np.testing.assert_allclose(scenes[3], pooled[0], rtol=1e-4, atol=1e-5)
    views, _ = audio.file_windows(tmp_path / 'noise.wav', 16000, 16000, 8000)
    assert len(views) == 5                      # 0, 0.5, ... 2.0 s: the last holds 0.74 s
    short = hear_clar.get_scene_embeddings(white_noise(2, 0.3), hear_model)    # under a clip
    assert short.shape == (2, hear_model.scene_embedding_size)


def test_batches_are_bounded_and_do_not_change_the_embeddings(trained, hear_model):
    """A 4-s input (80 windows) at a batch size of 32: the encoder never sees more than 32
    windows at once, and the embeddings are those of one batch of all 80."""
    root, run_dir, cfg = trained
    small = hear_clar.load_model(str(run_dir), batch_size=32)
    seen = []
    hook = small.encoder.register_forward_pre_hook(lambda module, args: seen.append(len(args[0])))
    noise = white_noise(1, 4.0, seed=3)
    embeddings, timestamps = hear_clar.get_timestamp_embeddings(noise, small)
    hook.remove()
    assert timestamps.shape == (1, 80) and seen == [32, 32, 16]
    at_once, _ = hear_clar.get_timestamp_embeddings(noise, hear_model)       # batch size 128
    np.testing.assert_allclose(embeddings, at_once, rtol=1e-4, atol=1e-5)


LONG_INPUT = textwrap.dedent('''
    import json, sys, time
    import torch
    sys.path.insert(0, {root!r})
    import hear_clar

    class Samples(torch.nn.Module):
        """A stand-in encoder as cheap as can be (three samples of each window through a
        linear layer), so that what is measured is the cutting and batching of windows."""
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(3, 8)
            self.out_dim = 8
            self.largest = 0
        def forward(self, windows):
            self.largest = max(self.largest, len(windows))
            return self.layer(windows[:, [0, windows.shape[1] // 2, -1]])

    def status_mib(field):      # VmRSS: resident now; VmHWM: the most resident since reset
        for line in open('/proc/self/status'):
            if line.startswith(field + ':'):
                return int(line.split()[1]) / 1024

    def reset_peak():           # (getrusage's peak would start at the forking parent's size)
        with open('/proc/self/clear_refs', 'w') as clear:
            clear.write('5')

    encoder = Samples()
    model = hear_clar.HearModel(torch.nn.Identity(), encoder, 16000, 16000).eval()
    noise = torch.rand(1, 20 * 60 * 16000) * 2 - 1              # 20 minutes
    reset_peak()
    before = status_mib('VmRSS')
    started = time.time()
    embeddings, timestamps = hear_clar.get_timestamp_embeddings(noise, model)
    scenes = hear_clar.get_scene_embeddings(noise, model)
    print(json.dumps({{'growth_mib': status_mib('VmHWM') - before, 'seconds': time.time() - started,
                      'shape': list(embeddings.shape), 'last_ms': float(timestamps[0, -1]),
                      'largest_batch': encoder.largest, 'scene_shape': list(scenes.shape)}}))
''')


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='reads /proc/self/status')
def test_twenty_minutes_in_bounded_memory(tmp_path):
    """20 minutes at 16 kHz (73 MiB of float32) is 24,000 one-second windows, 1,465 MiB if
    they were all built at once. In a fresh process, with a stand-in encoder (the network's
    own memory is per batch, and the tiny one would need minutes for 24,000 windows on a
    CPU), the peak resident memory grows by a few copies of the audio (the 16-bit rounding
    and the zero-padded copy the windows are views of), not by the windows."""
    script = tmp_path / 'long_input.py'
    script.write_text(LONG_INPUT.format(root=str(ROOT)))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured['shape'] == [1, 24000, 8] and measured['scene_shape'] == [1, 8]
    assert measured['last_ms'] == 20 * 60 * 1000 - 50
    assert measured['largest_batch'] == hear_clar.BATCH_SIZE
    audio_mib = 20 * 60 * 16000 * 4 / 2**20
    assert measured['growth_mib'] < 5 * audio_mib, measured       # 366 MiB; 1,465 for all windows
