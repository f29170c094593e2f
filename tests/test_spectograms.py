import numpy as np
import pytest
import torch

from spectograms import (HOP, ExportableSpectrogram, Spectrogram, atan2, fourier_kernel, frames,
                         phase_of)


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
    if frontend == 'paper':
        full = torch.stft(waves.double(), front.n_fft, HOP, window=front.window.double(),
                          center=True, return_complex=True).index_select(1, front.bin_index)
    else:       # the same convolution as at_frequencies, in float64
        padded = torch.nn.functional.pad(waves.double()[:, None], (front.n_fft // 2,) * 2,
                                         mode='reflect')
        real, imaginary = torch.nn.functional.conv1d(
            padded, front.fourier_kernel.double(), stride=HOP).chunk(2, dim=1)
        full = torch.complex(real, imaginary)
    reference = phase_of(full, full.real.square() + full.imag.square()).float()
    assert (phase - reference).abs().max() < 1e-3


def test_atan2_from_atan_agrees_with_torch():
    generator = torch.Generator().manual_seed(0)
    scales = torch.logspace(-30, 3, 20000)
    y = torch.randn(20000, generator=generator) * scales
    x = torch.randn(20000, generator=generator) * scales[torch.randperm(20000, generator=generator)]
    axes = torch.tensor([0.0, 1.0, -1.0, 1e-20])
    y, x = torch.cat([y, axes.repeat_interleave(4)]), torch.cat([x, axes.repeat(4)])
    assert (atan2(y, x) - torch.atan2(y, x)).abs().max() < 1e-6
    assert atan2(torch.tensor(0.0), torch.tensor(0.0)) == 0


def float64_channels(front, waves):
    """The three channels of `front`, computed in float64 with torch.stft (the released
    rows with their own convolution, as at_frequencies)."""
    waves = waves.double()

    def stft(size, window):
        return torch.stft(waves, size, HOP, window=window.double(), center=True, return_complex=True)
    full = stft(front.n_fft, front.window)
    if front.frontend == 'paper':
        values = full.index_select(1, front.bin_index)
        mel_stft = stft(front.mel_fft, front.mel_window)
    else:
        padded = torch.nn.functional.pad(waves[:, None], (front.n_fft // 2,) * 2, mode='reflect')
        real, imaginary = torch.nn.functional.conv1d(
            padded, front.fourier_kernel.double(), stride=HOP).chunk(2, dim=1)
        values, mel_stft = torch.complex(real, imaginary), full
    power = values.real.square() + values.imag.square()
    mel = torch.einsum('bft,fm->bmt', mel_stft.abs().square(), front.mel_filters.double())
    return torch.stack([10 * torch.log10(power + 1e-10), phase_of(values, power),
                        10 * torch.log10(mel + 1e-10)], dim=1)


def channel_errors(channels, reference):
    """The largest error of each channel where the reference is above -80 dB (below it the
    phase is rounding noise), the phase modulo 2 pi."""
    heard = reference[:, 0] > -80
    wrapped = torch.remainder(channels[:, 1] - reference[:, 1] + torch.pi, 2 * torch.pi) - torch.pi
    return ((channels[:, 0] - reference[:, 0]).abs()[heard].max().item(),
            wrapped.abs()[heard].max().item(),
            (channels[:, 2] - reference[:, 2]).abs()[reference[:, 2] > -80].max().item())


@pytest.mark.parametrize('frontend', ['paper', 'released'])
def test_the_exportable_front_end_is_as_accurate_as_the_torch_one(frontend):
    """Against float64 STFTs, on 16-bit clips of noise fading into silence, a tone and
    silence: on the noise within the tolerances tools/gpu_check.py holds a GPU to (0.05 dB,
    1e-3 rad, where the magnitude is above -80 dB); on all of them no further off than
    torch.stft in float32 (on the tone's quiet bins, which neither meets those tolerances
    on, the FFT of torch.stft is 0.15 dB off, the direct sum 0.03)."""
    generator = torch.Generator().manual_seed(1)
    waves = 0.1 * torch.randn(3, 16000, generator=generator)
    waves[0, 9000:] *= torch.linspace(1, 0, 7000) ** 4
    waves[1] = 0.3 * torch.sin(2 * torch.pi * 440 * torch.arange(16000) / 16000)
    waves[2] = 0
    waves = torch.round(waves * 32768) / 32768
    front = Spectrogram(16000, frontend)
    reference = float64_channels(front, waves)
    exported = ExportableSpectrogram(16000, frontend)(waves)
    noise = channel_errors(exported[:1], reference[:1])
    assert noise[0] < 0.05 and noise[1] < 1e-3 and noise[2] < 0.05
    errors = channel_errors(exported, reference)
    torch_errors = channel_errors(front(waves), reference)
    assert all(e <= max(1.1 * t, 1e-3) for e, t in zip(errors, torch_errors)), (errors, torch_errors)
    assert torch.equal(exported[2], front(waves)[2])        # silence: -100 dB, phase 0
