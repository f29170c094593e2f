import numpy as np
import pytest
import torch

from spectograms import Spectrogram, frames


@pytest.mark.parametrize('frontend', ['paper', 'released'])
@pytest.mark.parametrize('seconds,expected_frames', [(1, 126), (4, 501)])
def test_shape(frontend, seconds, expected_frames):
    out = Spectrogram(16000, frontend)(torch.randn(2, 16000 * seconds))
    assert out.shape == (2, 3, 128, expected_frames) == (2, 3, 128, frames(16000 * seconds))
    assert torch.isfinite(out).all() and not out.requires_grad


def test_paper_channels_follow_a_tone():
    rate, frequency = 16000, 2000.0
    tone = torch.sin(2 * torch.pi * frequency * torch.arange(rate) / rate)[None]
    magnitude, phase, mel = Spectrogram(rate, 'paper')(tone)[0]
    # 128 bins over 0-8 kHz: 2 kHz is bin 2000 / (16000 / 254) = 31.75
    assert abs(int(magnitude[:, 20:100].mean(1).argmax()) - 31.75) <= 1
    assert phase.abs().max() <= torch.pi + 1e-5
    top_mel = int(mel[:, 20:100].mean(1).argmax())
    silent = Spectrogram(rate, 'paper')(torch.zeros(1, rate))[0]
    assert mel[top_mel, 50] > silent[2, top_mel, 50] + 60     # loud where the tone is
    assert silent[0].max() == pytest.approx(-100.0)           # the power floor, 1e-10


def test_released_variant_reads_log_spaced_frequencies():
    rate = 16000
    front = Spectrogram(rate, 'released')
    freqs = front.bin_index.float() * rate / front.n_fft
    assert freqs[0] == pytest.approx(40, abs=rate / front.n_fft)
    assert freqs[-1] == pytest.approx(8000, abs=1)
    ratios = freqs[64:] / freqs[63:-1]
    assert np.allclose(ratios.numpy(), ratios.mean().item(), rtol=0.1)
