"""CLAR's front end: a batch of waveforms to a (B, 3, 128, frames) time-frequency tensor.

The three channels are the log magnitude of the STFT, its phase (radians, not unwrapped;
0 below the power floor, 0 or pi where the STFT is real) and the log mel spectrogram, stacked. It runs on the device, batched, with no gradient.

Two settings:
- `paper` (default), as the paper's text: 16 ms window (254 samples at 16 kHz, which gives
  128 frequency bins), 8 ms hop (128 samples), 128 mel bands. The mel bands are taken from
  the same window zero-padded to 1024 points, so that no low band is empty.
- `released`, as the authors' code: a 2048-point window, hop 128, magnitude and phase of
  the STFT evaluated at 128 log-spaced frequencies from 40 Hz to 8 kHz themselves (as the
  released code's log-frequency STFT does; rounding them to the 2048-point FFT's bins would
  make 18 low rows copies of their neighbours), mel 128 bands 40 Hz-8 kHz (Slaney).

Both give 1 + samples // 128 frames (126 for one second at 16 kHz); power is in decibels,
10*log10(max(|S|^2, 1e-10)).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchaudio

FRONTENDS = ('paper', 'released')
BINS = 128
HOP = 128
POWER_FLOOR = 1e-10


def frames(samples, hop=HOP):
    """Number of time frames for a clip of `samples` (centred frames)."""
    return 1 + samples // hop


def phase_of(stft, power):
    """The phase channel: the angle of each STFT value, 0 where the power is below the floor
    (the magnitude channel shows the floor there, and the angle is rounding noise), and 0
    or pi where the value is real up to rounding (|imag| <= 1e-4 |S|): the DC and Nyquist
    bins, and the first frame, which reflect padding makes even about its centre. Their
    rounding-sized imaginary part has either sign, so torch.angle gave pi or -pi at random,
    and a CPU and a GPU disagreed by 2 pi there."""
    return phase_of_parts(stft.real, stft.imag, power, torch.angle(stft))


def phase_of_parts(real, imag, power, angle):
    """phase_of on the real and imaginary parts, given their angle (ExportableSpectrogram
    computes it without complex numbers)."""
    is_real = imag.square() <= 1e-8 * power
    phase = torch.where(is_real, torch.where(real < 0, math.pi, 0.0), angle)
    return torch.where(power < POWER_FLOOR, 0.0, phase)


def atan2(y, x):
    """torch.atan2(y, x) from operators that ONNX has (it has no atan2): atan of the smaller
    magnitude over the larger (a ratio in [0, 1], where atan is accurate), then moved to its
    octant and quadrant. Agrees with torch.atan2 to a few float32 roundings; 0 at (0, 0)."""
    ax, ay = x.abs(), y.abs()
    steep = ay > ax
    larger = torch.where(steep, ay, ax)
    ratio = torch.where(steep, ax, ay) / torch.where(larger > 0, larger, 1.0)
    angle = torch.atan(ratio)
    angle = torch.where(steep, math.pi / 2 - angle, angle)
    angle = torch.where(x < 0, math.pi - angle, angle)
    return torch.where(y < 0, -angle, angle)


class Spectrogram(nn.Module):
    """Waveforms (B, T) -> [log magnitude, phase, log mel] of shape (B, 3, 128, 1 + T // 128)."""

    def __init__(self, sample_rate=16000, frontend='paper'):
        super().__init__()
        if frontend not in FRONTENDS:
            raise ValueError(f'frontend must be one of {FRONTENDS}, got {frontend!r}')
        self.frontend, self.sample_rate = frontend, sample_rate
        nyquist = sample_rate / 2
        if frontend == 'paper':
            self.n_fft = 2 * BINS - 2           # 254 points -> 128 bins
            self.mel_fft = 1024
            self.register_buffer('bin_index', torch.arange(BINS), persistent=False)
            mel_range, norm, scale = (0.0, nyquist), None, 'htk'
        else:
            self.n_fft = 2048
            self.mel_fft = 2048
            freqs = torch.logspace(math.log10(40.0), math.log10(min(8000.0, nyquist)), BINS,
                                   dtype=torch.float64)
            self.register_buffer('frequencies', freqs.float(), persistent=False)
            self.register_buffer('fourier_kernel', fourier_kernel(freqs, self.n_fft, sample_rate),
                                 persistent=False)
            mel_range, norm, scale = (40.0, min(8000.0, nyquist)), 'slaney', 'slaney'
        self.register_buffer('window', torch.hann_window(self.n_fft), persistent=False)
        # the mel bands use the same window length, zero-padded to mel_fft points
        mel_window = torch.zeros(self.mel_fft)
        offset = (self.mel_fft - self.n_fft) // 2
        mel_window[offset:offset + self.n_fft] = torch.hann_window(self.n_fft)
        self.register_buffer('mel_window', mel_window, persistent=False)
        filters = torchaudio.functional.melscale_fbanks(
            self.mel_fft // 2 + 1, mel_range[0], mel_range[1], BINS, sample_rate,
            norm=norm, mel_scale=scale)
        self.register_buffer('mel_filters', filters, persistent=False)

    @torch.no_grad()
    def forward(self, waveforms):
        waveforms = waveforms.float()
        full = torch.stft(waveforms, self.n_fft, HOP, window=self.window, center=True,
                          return_complex=True)
        stft = (full.index_select(1, self.bin_index) if self.frontend == 'paper' else
                self.at_frequencies(waveforms))
        power = stft.real.square() + stft.imag.square()
        magnitude = 10 * torch.log10(power + POWER_FLOOR)
        phase = phase_of(stft, power)
        mel_stft = full if self.mel_fft == self.n_fft else torch.stft(
            waveforms, self.mel_fft, HOP, window=self.mel_window, center=True,
            return_complex=True)
        power = mel_stft.real.square() + mel_stft.imag.square()
        mel = torch.einsum('bft,fm->bmt', power, self.mel_filters)
        log_mel = 10 * torch.log10(mel + POWER_FLOOR)
        return torch.stack([magnitude, phase, log_mel], dim=1)

    def at_frequencies(self, waveforms):
        """The STFT at self.frequencies, (B, 128, frames) complex: the same centred,
        reflect-padded, Hann-windowed frames as torch.stft, each multiplied by the complex
        exponentials of those frequencies (a strided convolution). In float32 even under
        autocast: 2048-term sums in bfloat16 would blur the quiet rows."""
        with torch.autocast(waveforms.device.type, enabled=False):
            padded = F.pad(waveforms[:, None], (self.n_fft // 2, self.n_fft // 2), mode='reflect')
            real, imaginary = F.conv1d(padded, self.fourier_kernel, stride=HOP).chunk(2, dim=1)
        return torch.complex(real, imaginary)


def fourier_kernel(frequencies, n_fft, sample_rate):
    """(2 * len(frequencies), 1, n_fft) float32: the Hann window times cos and -sin of each
    frequency over a frame, phase measured from the frame's first sample (as torch.stft)."""
    time = torch.arange(n_fft, dtype=torch.float64) / sample_rate
    angle = 2 * math.pi * frequencies[:, None].double() * time
    window = torch.hann_window(n_fft, dtype=torch.float64)
    return torch.cat([window * torch.cos(angle), -window * torch.sin(angle)]).float()[:, None]


class ExportableSpectrogram(Spectrogram):
    """Spectrogram's three channels from operators that ONNX has, for export.py: no complex
    numbers, no torch.stft. Each STFT is a strided convolution of the reflect-padded waves
    with the window times cos and -sin of its bins (fourier_kernel; the `released` rows
    already are), the phase is atan2 above. The mel STFT of `paper` has a 1024-point frame
    whose window is the 254-point one zero-padded: it is computed as the 254 windowed
    samples at the 513 frequencies of a 1024-point FFT, the same frames as the first STFT.
    That moves where the phase is measured from, not the power the mel bands read.
    Agrees with Spectrogram to float32 rounding (tests/test_export.py measures it)."""

    def __init__(self, sample_rate=16000, frontend='paper'):
        super().__init__(sample_rate, frontend)
        if frontend == 'paper':
            bins = torch.arange(BINS, dtype=torch.float64) * sample_rate / self.n_fft
            self.register_buffer('fourier_kernel', fourier_kernel(bins, self.n_fft, sample_rate),
                                 persistent=False)
        mel_bins = torch.arange(self.mel_fft // 2 + 1, dtype=torch.float64) * sample_rate / self.mel_fft
        self.register_buffer('mel_kernel', fourier_kernel(mel_bins, self.n_fft, sample_rate),
                             persistent=False)

    @torch.no_grad()
    def forward(self, waveforms):
        padded = F.pad(waveforms.float()[:, None], (self.n_fft // 2, self.n_fft // 2),
                       mode='reflect')
        real, imag = parts(F.conv1d(padded, self.fourier_kernel, stride=HOP))
        power = real.square() + imag.square()
        magnitude = 10 * torch.log10(power + POWER_FLOOR)
        phase = phase_of_parts(real, imag, power, atan2(imag, real))
        real, imag = parts(F.conv1d(padded, self.mel_kernel, stride=HOP))
        mel = torch.matmul(self.mel_filters.t(), real.square() + imag.square())
        log_mel = 10 * torch.log10(mel + POWER_FLOOR)
        return torch.stack([magnitude, phase, log_mel], dim=1)


def parts(convolved):
    """The real and imaginary halves of a convolution with a fourier_kernel (slices: chunk
    would export as a sequence of tensors)."""
    half = convolved.shape[1] // 2
    return convolved[:, :half], convolved[:, half:]
