import numpy as np
import pytest
import torch

from spectograms import Spectrogram, frames, phase_of


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


@pytest.mark.parametrize('frontend', ['paper', 'released'])
def test_phase_does_not_depend_on_rounding(frontend):
    """Where the STFT is real (the DC and Nyquist bins; the first frame, which reflect
    padding makes even about its centre) rounding leaves an imaginary part of either sign,
    and the angle came out pi or -pi at random: a float64 front end (or a GPU) disagreed by
    2 pi at hundreds of points per batch. Such points are now 0 or pi, and points below
    the power floor 0, so the phase of float32 and float64 STFTs agrees everywhere (and,
    tools/gpu_check.py checks, of CPU and GPU)."""
    front = Spectrogram(16000, frontend)
    waves = 0.1 * torch.randn(4, 16000, generator=torch.Generator().manual_seed(0))
    waves[:, 12000:] *= torch.linspace(1, 0, 4000) ** 4        # a fade into silence
    phase = front(waves)[:, 1]
    full = torch.stft(waves.double(), front.n_fft, 128, window=front.window.double(),
                      center=True, return_complex=True).index_select(1, front.bin_index)
    reference = phase_of(full, full.real.square() + full.imag.square()).float()
    assert (phase - reference).abs().max() < 1e-3
