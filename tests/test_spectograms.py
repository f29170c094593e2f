import numpy as np
import pytest
import torch

from spectograms import Spectrogram, fourier_kernel, frames


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
    freqs = Spectrogram(16000, 'released').frequencies
    assert freqs[0] == pytest.approx(40) and freqs[-1] == pytest.approx(8000)
    ratios = freqs[1:] / freqs[:-1]
    assert np.allclose(ratios.numpy(), ratios.mean().item(), rtol=1e-4)


def test_released_rows_are_all_distinct():
    """Rounded to the 2048-point FFT's bins, the 128 frequencies give 110 distinct rows."""
    magnitude, phase, _ = Spectrogram(16000, 'released')(torch.randn(1, 16000))[0]
    assert len(torch.unique(magnitude, dim=0)) == len(torch.unique(phase, dim=0)) == 128


@pytest.mark.parametrize('row', [2, 9, 40, 100, 126])
def test_released_tone_peaks_at_its_row(row):
    rate = 16000
    front = Spectrogram(rate, 'released')
    frequency = front.frequencies[row].double()
    tone = torch.sin(2 * torch.pi * frequency * torch.arange(2 * rate) / rate).float()[None]
    magnitude = front(tone)[0, 0, :, 20:-20].mean(1)       # frames clear of the edges
    assert int(magnitude.argmax()) == row


def test_released_rows_equal_the_stft_where_a_frequency_is_a_bin():
    front = Spectrogram(16000, 'released')
    waves = torch.randn(2, 16000)
    bins = torch.tensor([3, 50, 700])
    front.fourier_kernel = fourier_kernel(bins * 16000 / 2048, 2048, 16000)
    expected = torch.stft(waves, 2048, 128, window=torch.hann_window(2048), center=True,
                          return_complex=True)[:, bins]
    assert torch.allclose(front.at_frequencies(waves), expected, atol=2e-3 * expected.abs().max())
