"""audio.py: decoding whole files and windows of any length, the one preparation path."""
import numpy as np
import pytest
import soundfile
import torch

import audio


@pytest.mark.parametrize('length,hop,starts,last_real', [
    (100, 1000, [0], 100),               # shorter than a clip: one padded window
    (1000, 1000, [0], 1000),
    (1400, 1000, [0], 1000),             # a tail under half a clip is dropped
    (1500, 1000, [0, 1000], 500),        # half a clip: kept, zero-padded
    (2600, 500, [0, 500, 1000, 1500, 2000], 600),
    (1500, 500, [0, 500], 1000),         # the whole windows cover the wave: nothing more
    (1200, 500, [0, 500], 700),
])
def test_windows(length, hop, starts, last_real):
    wave = torch.arange(1, length + 1, dtype=torch.float32)
    views, found = audio.windows(wave, 1000, hop)
    assert found.tolist() == starts and views.shape == (len(starts), 1000)
    for start, view in zip(starts, views):
        real = min(1000, length - start)
        assert torch.equal(view[:real], wave[start:start + real])
        assert not view[real:].any()
    assert int((views[-1] != 0).sum()) == last_real


def test_read_audio_whole_file_and_from_an_offset(tmp_path):
    rate = 22050
    t = np.arange(int(3.3 * rate)) / rate
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 300 * t), 0.1 * np.sin(2 * np.pi * 300 * t)], 1)
    path = tmp_path / 'long.flac'
    soundfile.write(path, stereo, rate, subtype='PCM_24')
    whole = audio.read_audio(str(path), 16000)
    assert len(whole) == round(3.3 * 16000)
    assert abs(np.abs(whole).max() - 0.2) < 0.01               # mean of the two channels
    part = audio.read_audio(str(path), 16000, offset=1.0, samples=16000)
    assert len(part) == 16000
    assert np.abs(part[200:-200] - whole[16200:32000 - 200]).max() < 0.02
    clip = audio.read_clip(str(path), 16000, 16000 * 4)          # padded past the end
    assert np.array_equal(clip[:len(whole)], whole) and not clip[len(whole):].any()
    rounded = audio.quantize(whole)
    assert torch.equal(rounded * 32768, torch.round(rounded * 32768))


def test_quantize_of_a_tensor_equals_the_cache_rounding():
    rng = np.random.default_rng(0)
    samples = np.concatenate([rng.uniform(-1.2, 1.2, 10000),
                              (np.arange(-40, 40) + 0.5) / 32768,     # exact halves
                              [-1.0, 32767 / 32768, 1.0]]).astype(np.float32)
    # the cache scales a clip that goes beyond +-1 to fit, then rounds
    from_cache = audio.to_int16(audio.scale_to_fit(samples)[0]).astype(np.float32) / 32768
    rounded = audio.quantize(torch.from_numpy(samples))
    assert rounded.dtype == torch.float32
    assert np.array_equal(rounded.numpy(), from_cache)
    assert np.array_equal(audio.quantize(samples).numpy(), from_cache)
    inside = samples[np.abs(samples) <= 1]               # within +-1: rounding alone
    assert np.array_equal(audio.quantize(torch.from_numpy(inside)).numpy(),
                          audio.to_int16(inside).astype(np.float32) / 32768)


def test_file_windows_start_with_the_training_clip(tmp_path):
    rate = 22050
    rng = np.random.default_rng(1)
    path = tmp_path / 'long.wav'
    soundfile.write(path, rng.uniform(-0.5, 0.5, int(2.6 * rate)), rate, subtype='FLOAT')
    views, starts = audio.file_windows(path, 16000, 16000, 8000)
    assert starts.tolist() == [0, 8000, 16000, 24000, 32000]   # the last holds 0.6 s of 1
    clip = audio.quantize(audio.read_clip(str(path), 16000, 16000))
    assert torch.equal(views[0], clip)
    whole = audio.quantize(audio.read_audio(str(path), 16000))
    assert torch.equal(views[2], whole[16000:32000])
    with pytest.raises(ValueError, match='unreadable'):
        audio.file_windows(tmp_path / 'missing.wav', 16000, 16000, 8000)
