"""Batched waveform augmentations for CLAR (Al-Tahan and Mohsenzadeh, AISTATS 2021).

Every augmentation works on a (B, T) batch at once, each clip with its own random
parameters, with tensor ops only (no Python loop over clips), on CPU or CUDA:

    out = augment(waveforms, ["fade", "time_mask"], sample_rate=16000, generator=g)

Each augmentation is a pair of functions: ``draw_<name>`` draws the random parameters
from a CPU ``torch.Generator`` (so one seed gives the same parameters, and the same
output, on any device) and ``apply_<name>`` applies them on the waveforms' device.
``draw`` and ``apply`` do the same for a list of names, adding the per-clip Bernoulli
choice of ``<name>_p``; ``augment`` is ``apply(waveforms, draw(...))``.

Speed: pitch shift and time stretch take per-clip rates in one batched phase vocoder
(frames read at per-clip positions with index_select, phases accumulated by a scan over
frames) and per-clip resampling by interpolation at per-clip positions (gather). On CPU
the batch goes through in chunks of a few dozen clips, which keeps the working set in
cache; on a GPU it goes through whole. The drawn parameters go to the device with
non-blocking copies: a blocking one would make the host wait for all the work queued on
the GPU before it (the previous training step), every step.

Fixes to the released CLAR code (see shared/CLAR.md): the time mask has a random length,
time stretch is a real phase-vocoder stretch (pitch kept), and noisy clips are not
clipped to [0, 1].
"""

import math
from collections.abc import Sequence
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

# Phase vocoder STFT: 32 ms Hann windows at 16 kHz with 75 % overlap (torchaudio's default
# for pitch_shift). The overlap-add below relies on hop = STFT_SIZE / 4.
STFT_SIZE = 512
STFT_HOP = STFT_SIZE // 4
# The phase vocoder resets its phases where the frame energy rises by this factor (3 dB).
ONSET_RATIO = 2.0
# Pitch shift resamples through a band-limited (FFT) upsampling by this factor followed by
# linear interpolation; its images stay below -30 dB for speech-band content.
OVERSAMPLING = 4
# Fade curves: logarithmic = log(1 + a r) / log(1 + a), exponential = its inverse,
# with r in [0, 1] the position inside the fade.
FADE_CURVE_SCALE = 100.0
FADE_SHAPES = ("linear", "logarithmic", "exponential")
# Presets for the paper's "low" / "high" ablations.
PITCH_SHIFT_LOW_MAX = 5.0  # pitch_shift_low: semitones uniform in [-5, 5]
PITCH_SHIFT_HIGH_MAX = 15.0  # pitch_shift_high: |semitones| uniform in (5, 15], either sign
TIME_STRETCH_LOW = (0.5, 1.0)
TIME_STRETCH_HIGH = (1.0, 1.5)
# Power spectrum slope on log-log axes of each noise colour.
NOISE_SLOPES = {"white": 0.0, "pink": -1.0, "brown": -2.0}
# On CPU the batch is processed in chunks of about this many spectrogram values so that
# the working set stays in cache (about 3x faster on a 2-core machine); on GPUs the
# chunks are only there to bound memory.
CHUNK_VALUES = {"cpu": 2**20, "other": 2**25}

# The augmentations' settings and their defaults, in one place: the draw_* signatures, draw()
# and the training scripts' options (config.py) all read them from here.
RANGES = {
    "fade_max": 0.5,  # fade in and fade out each last up to this fraction of the clip
    "time_mask_max": 0.125,  # the masked segment lasts up to this fraction of the clip
    "time_mask_fill": "noise",  # noise (low-level Gaussian) | zero | a number
    "time_mask_noise_db": -30.0,  # level of the noise fill relative to the clip's RMS, in dB
    "time_shift_max": 0.5,  # circular shift by up to this fraction of the clip, either way
    "pitch_shift_min": -15.0,  # pitch_shift: semitones drawn uniformly from [min, max]
    "pitch_shift_max": 15.0,  # (pitch_shift_low: |n| <= 5; pitch_shift_high: 5 < |n| <= 15)
    "time_stretch_min": 0.5,  # time_stretch: rate drawn from [min, max], > 1 is faster
    "time_stretch_max": 1.5,  # (time_stretch_low: 0.5-1.0; time_stretch_high: 1.0-1.5)
    "noise_snr_min": 0.0,  # added noise: signal-to-noise ratio drawn from [min, max] dB
    "noise_snr_max": 20.0,  # (white, pink, brown and mixed noise)
}


# ----------------------------------------------------------------------------- helpers

def _uniform(generator, batch_size, low, high):
    """(batch_size,) float64 uniform in [low, high)."""
    return low + (high - low) * torch.rand(batch_size, generator=generator, dtype=torch.float64)


def _uniform_int(generator, batch_size, low, high):
    """(batch_size,) int64 uniform in {low, ..., high} (tensors or ints; high >= low)."""
    span = torch.as_tensor(high) - torch.as_tensor(low) + 1
    u = torch.rand(batch_size, generator=generator, dtype=torch.float64)
    return torch.as_tensor(low) + (u * span).long().clamp(max=span - 1)


def _check_range(name_min, low, name_max, high):
    if not low <= high:
        raise ValueError(f"{name_min}={low} must not exceed {name_max}={high}")


def _chunk_size(device, values_per_clip):
    budget = CHUNK_VALUES["cpu" if device.type == "cpu" else "other"]
    return max(1, budget // max(1, values_per_clip))


def _spectrogram_values(length):
    """How many complex values the phase vocoder holds per clip of this many samples."""
    return (length // STFT_HOP + 1) * (STFT_SIZE // 2 + 1)


# ----------------------------------------------------------------------------- fade

def draw_fade(batch_size, length, sample_rate, generator, fade_max=RANGES["fade_max"]):
    """Fade-in and fade-out lengths (samples, each uniform in 0..fade_max*length) and a
    shape per clip (0 linear, 1 logarithmic, 2 exponential; 1/3 each)."""
    if not 0 <= fade_max <= 1:
        raise ValueError(f"fade_max={fade_max} must be in [0, 1]")
    longest = int(fade_max * length)
    return {
        "fade_in": _uniform_int(generator, batch_size, 0, longest),
        "fade_out": _uniform_int(generator, batch_size, 0, longest),
        "shape": torch.randint(0, len(FADE_SHAPES), (batch_size,), generator=generator),
    }


def fade_curve(position, shape):
    """Gain rising from 0 to 1 as position goes from 0 to 1; shape (broadcastable) picks
    linear (0), logarithmic (1: fast rise, concave) or exponential (2: slow rise, convex)."""
    log_scale = math.log1p(FADE_CURVE_SCALE)
    logarithmic = torch.log1p(position * FADE_CURVE_SCALE) / log_scale
    exponential = torch.expm1(position * log_scale) / FADE_CURVE_SCALE
    return torch.where(shape == 0, position, torch.where(shape == 1, logarithmic, exponential))


def apply_fade(waveforms, params, sample_rate):
    """Multiply by a fade-in and a fade-out gain. A fade of L samples attenuates exactly
    the first (last) L samples: sample t (counted from the clip's start for the fade-in,
    from its end for the fade-out) gets fade_curve((t + 1) / (L + 1)); L = 0 is no fade.
    Only the longest fade region of the batch is computed."""
    batch_size, length = waveforms.shape
    device, dtype = waveforms.device, waveforms.dtype
    shape = params["shape"].to(device, non_blocking=True)[:, None]
    out = waveforms.clone()
    for key, at_start in (("fade_in", True), ("fade_out", False)):
        fade = params[key]
        region = int(fade.max()) if fade.numel() else 0
        if region == 0:
            continue
        inverse = (1.0 / (fade.to(dtype) + 1)).to(device, non_blocking=True)[:, None]
        # Samples counted from the clip's edge: 1 at the first (last) sample.
        count = (torch.arange(1, region + 1, device=device, dtype=dtype) if at_start else
                 torch.arange(region, 0, -1, device=device, dtype=dtype))
        gain = fade_curve((count * inverse).clamp_(max=1.0), shape)
        if at_start:
            out[:, :region] *= gain
        else:
            out[:, length - region:] *= gain
    return out


# ----------------------------------------------------------------------------- time mask

def draw_time_mask(batch_size, length, sample_rate, generator, time_mask_max=RANGES["time_mask_max"],
                   time_mask_fill=RANGES["time_mask_fill"],
                   time_mask_noise_db=RANGES["time_mask_noise_db"]):
    """One segment per clip: length uniform in 1..time_mask_max*length samples (random,
    unlike the released code's fixed length), start uniform over the positions that keep
    it inside the clip; plus the unit Gaussian noise that fills it when the fill is noise."""
    if not 0 <= time_mask_max <= 1:
        raise ValueError(f"time_mask_max={time_mask_max} must be in [0, 1]")
    _parse_fill(time_mask_fill)
    longest = int(time_mask_max * length)
    segment = _uniform_int(generator, batch_size, min(1, longest), longest)
    return {
        "start": _uniform_int(generator, batch_size, 0, length - segment),
        "length": segment,
        "noise": torch.randn(batch_size, max(longest, 1), generator=generator),
        "fill": time_mask_fill,
        "noise_db": float(time_mask_noise_db),
    }


def _parse_fill(fill):
    """'noise' -> None (noise fill); 'zero' -> 0.0; a number or numeric string -> float."""
    if fill == "noise":
        return None
    if fill == "zero":
        return 0.0
    try:
        return float(fill)
    except (TypeError, ValueError):
        raise ValueError(f"time_mask_fill={fill!r} must be 'noise', 'zero' or a number") from None


def apply_time_mask(waveforms, params, sample_rate):
    """Replace each clip's segment by the constant fill, or by Gaussian noise whose RMS is
    time_mask_noise_db below the clip's own RMS (so it is low-level at any loudness)."""
    batch_size, length = waveforms.shape
    device, dtype = waveforms.device, waveforms.dtype
    start = params["start"].to(device=device, dtype=dtype, non_blocking=True)[:, None]
    segment = params["length"].to(device=device, dtype=dtype, non_blocking=True)[:, None]
    offset = torch.arange(length, device=device, dtype=dtype) - start  # exact below 2**24
    inside = (offset >= 0) & (offset < segment)
    constant = _parse_fill(params["fill"])
    if constant is not None:
        return waveforms.masked_fill(inside, constant)
    noise = params["noise"].to(device=device, dtype=dtype, non_blocking=True)
    level = waveforms.square().mean(1, keepdim=True).sqrt() * 10 ** (params["noise_db"] / 20)
    index = offset.clamp_(0, noise.shape[1] - 1).long()
    return torch.where(inside, noise.gather(1, index) * level, waveforms)


# ----------------------------------------------------------------------------- time shift

def draw_time_shift(batch_size, length, sample_rate, generator, time_shift_max=RANGES["time_shift_max"]):
    """Circular shift in samples, uniform in -time_shift_max*length..+time_shift_max*length."""
    if not 0 <= time_shift_max <= 1:
        raise ValueError(f"time_shift_max={time_shift_max} must be in [0, 1]")
    longest = int(time_shift_max * length)
    return {"shift": _uniform_int(generator, batch_size, -longest, longest)}


def apply_time_shift(waveforms, params, sample_rate):
    """Per-clip torch.roll(clip, shift): out[t] = clip[(t - shift) mod length]."""
    length = waveforms.shape[1]
    shift = params["shift"].to(waveforms.device, non_blocking=True)[:, None]
    index = torch.arange(length, device=waveforms.device) - shift
    return waveforms.gather(1, index.remainder_(length))


# ----------------------------------------------------------------------------- phase vocoder

def _stft(waveforms, window):
    """(B, L) -> (B, frames, bins) complex; centred frames over zero padding, hop = size/4."""
    size = window.numel()
    padded = F.pad(waveforms, (size // 2, size // 2))
    return torch.fft.rfft(padded.unfold(-1, size, size // 4) * window, dim=-1)


def _istft(spectrogram, window, length):
    """Inverse of _stft by weighted overlap-add: (B, frames, bins) -> (B, length)."""
    batch_size, frames, _ = spectrogram.shape
    size, hop = window.numel(), window.numel() // 4
    pieces = (torch.fft.irfft(spectrogram, n=size, dim=-1) * window).view(batch_size, frames, 4, hop)
    window_pieces = window.square().view(4, hop)
    signal = pieces.new_zeros(batch_size, frames + 3, hop)
    envelope = window.new_zeros(frames + 3, hop)
    for quarter in range(4):  # each frame spans four hops
        signal[:, quarter:quarter + frames] += pieces[:, :, quarter]
        envelope[quarter:quarter + frames] += window_pieces[quarter]
    signal = signal.flatten(1)[:, size // 2:size // 2 + length]
    envelope = envelope.flatten()[size // 2:size // 2 + length]
    signal = signal / envelope.clamp(min=1e-6)
    return signal if signal.shape[1] == length else F.pad(signal, (0, length - signal.shape[1]))


def _phase_vocoder(spectrogram, positions, last_frame):
    """Resample a spectrogram along time at fractional frame positions, per clip.

    spectrogram: (B, N, bins) complex whose frames from last_frame on are silent (at
    least two of them); positions: (B, M) input-frame position of each output frame,
    spaced by the clip's stretch rate (positions past last_frame read silence).
    Magnitudes are interpolated linearly between the two neighbouring frames. The phase
    starts at frame 0's and advances each output frame by the phase change between the
    two neighbouring input frames (the instantaneous frequency over one hop), as in
    torchaudio's and librosa's phase vocoders. As analysis and synthesis hops are equal,
    that change is the plain phase difference, so the phase is kept as a running product
    of unit phasors: no atan2, no unwrapping. At onsets (the frame read is ONSET_RATIO
    times louder than the previous one read) the phases are reset to the input's, which
    restores the vertical coherence a plain phase vocoder loses, e.g. for a word after
    silence, and at the first frame read that lies wholly inside the clip. No phase
    locking: sustained sounds may still sound phasy."""
    batch_size, frames, bins = spectrogram.shape
    # Real and imaginary planes: real arithmetic on them is faster than complex ops on
    # CPU. A tiny real offset (made in place) gives silent bins phase 0, never a 0 phasor.
    real, imaginary = torch.view_as_real(spectrogram).unbind(-1)
    real += 1e-15
    power = torch.addcmul(real * real, imaginary, imaginary)
    energy = power.sum(-1)  # (B, N)
    inverse = power.rsqrt()
    magnitude = power.mul_(inverse)
    real, imaginary = real * inverse, imaginary * inverse  # unit phasors
    # advance[:, i] = phasor[:, i + 1] * conj(phasor[:, i]): phase change over one hop.
    advance_real = torch.addcmul(real[:, 1:] * real[:, :-1], imaginary[:, 1:], imaginary[:, :-1])
    advance_imaginary = torch.addcmul(imaginary[:, 1:] * real[:, :-1], real[:, 1:], imaginary[:, :-1],
                                      value=-1)

    index = positions.floor().clamp_(0, last_frame)
    fraction = (positions - index).clamp_(0, 1)[..., None]
    index = index.long()
    clips = torch.arange(batch_size, device=positions.device)
    out_shape = (*index.shape, bins)

    def read(plane, rows):  # plane[b, rows[b, m]] for every clip b and output frame m
        return plane.reshape(-1, bins).index_select(0, rows.flatten()).view(out_shape)

    rows = index + frames * clips[:, None]
    out_magnitude = torch.lerp(read(magnitude, rows), read(magnitude, rows + 1), fraction)
    # steps[:, m] turns output frame m - 1's phasors into frame m's (steps[:, 0]: frame 0's).
    previous = F.pad(index[:, :-1], (1, 0))
    rows = previous + (frames - 1) * clips[:, None]
    steps = torch.complex(read(advance_real, rows), read(advance_imaginary, rows))
    steps[:, 0] = torch.complex(real[:, 0], imaginary[:, 0])
    energy_read = energy.gather(1, index)
    onset = F.pad(energy_read[:, 1:] > ONSET_RATIO * energy_read[:, :-1], (1, 0))
    # Frames 0 and 1 straddle the clip's start (zero padding); reset at the first full one.
    onset[:, 1:] |= (index[:, 1:] >= 2) & (previous[:, 1:] < 2)
    onset_frames = set(onset.any(0).nonzero().flatten().tolist())

    out = steps  # scanned in place: a running product over frames, batched over clips and bins
    for frame in range(1, index.shape[1]):
        out[:, frame] *= out[:, frame - 1]
        if frame in onset_frames:
            reset = torch.complex(real[clips, index[:, frame]], imaginary[clips, index[:, frame]])
            out[:, frame] = torch.where(onset[:, frame, None], reset, out[:, frame])
    out_real, out_imaginary = torch.view_as_real(out).unbind(-1)
    return torch.complex(out_real * out_magnitude, out_imaginary * out_magnitude)


def _stretch(waveforms, rate, window, out_length):
    """Phase-vocoder time stretch of (B, L) clips by per-clip rate (> 1 shorter), read out
    as out_length samples: cropped, or zero-padded where the stretched clip ends early."""
    length = waveforms.shape[1]
    # Zeros after the clip so that the STFT ends with silent frames, from last_frame on.
    spectrogram = _stft(F.pad(waveforms, (0, STFT_SIZE + 2 * STFT_HOP)), window)
    last_frame = -(-(length + STFT_SIZE // 2) // STFT_HOP)
    out_frames = out_length // STFT_HOP + 1
    positions = torch.arange(out_frames, device=rate.device, dtype=rate.dtype) * rate[:, None]
    return _istft(_phase_vocoder(spectrogram, positions, last_frame), window, out_length)


# ----------------------------------------------------------------------------- time stretch

def draw_time_stretch(batch_size, length, sample_rate, generator, time_stretch_min=RANGES["time_stretch_min"],
                      time_stretch_max=RANGES["time_stretch_max"]):
    """Stretch rate per clip, uniform in [time_stretch_min, time_stretch_max]. Convention
    as torchaudio's TimeStretch: rate > 1 plays faster (shorter), rate < 1 slower."""
    _check_range("time_stretch_min", time_stretch_min, "time_stretch_max", time_stretch_max)
    if time_stretch_min <= 0:
        raise ValueError(f"time_stretch_min={time_stretch_min} must be positive")
    return {"rate": _uniform(generator, batch_size, time_stretch_min, time_stretch_max)}


def draw_time_stretch_low(batch_size, length, sample_rate, generator):
    """Preset: rate uniform in [0.5, 1.0] (slowed down)."""
    return draw_time_stretch(batch_size, length, sample_rate, generator, *TIME_STRETCH_LOW)


def draw_time_stretch_high(batch_size, length, sample_rate, generator):
    """Preset: rate uniform in [1.0, 1.5] (sped up)."""
    return draw_time_stretch(batch_size, length, sample_rate, generator, *TIME_STRETCH_HIGH)


def apply_time_stretch(waveforms, params, sample_rate):
    """Change the tempo by `rate` keeping the pitch (phase vocoder on a 512-point STFT),
    then crop or zero-pad at the end to the original length. Not a resample."""
    batch_size, length = waveforms.shape
    device, dtype = waveforms.device, waveforms.dtype
    rate = params["rate"].to(device=device, dtype=dtype, non_blocking=True)
    window = torch.hann_window(STFT_SIZE, device=device, dtype=dtype)
    out = torch.empty_like(waveforms)
    chunk = _chunk_size(device, _spectrogram_values(length))
    for first in range(0, batch_size, chunk):
        rows = slice(first, first + chunk)
        out[rows] = _stretch(waveforms[rows], rate[rows], window, length)
    return out


# ----------------------------------------------------------------------------- pitch shift

def draw_pitch_shift(batch_size, length, sample_rate, generator, pitch_shift_min=RANGES["pitch_shift_min"],
                     pitch_shift_max=RANGES["pitch_shift_max"]):
    """Semitones per clip, uniform in [pitch_shift_min, pitch_shift_max]."""
    _check_range("pitch_shift_min", pitch_shift_min, "pitch_shift_max", pitch_shift_max)
    return {"semitones": _uniform(generator, batch_size, pitch_shift_min, pitch_shift_max)}


def draw_pitch_shift_low(batch_size, length, sample_rate, generator):
    """Preset "low": semitones uniform in [-5, 5]."""
    return draw_pitch_shift(batch_size, length, sample_rate, generator,
                            -PITCH_SHIFT_LOW_MAX, PITCH_SHIFT_LOW_MAX)


def draw_pitch_shift_high(batch_size, length, sample_rate, generator):
    """Preset "high": |semitones| uniform in (5, 15], sign + or - with probability 1/2."""
    size = _uniform(generator, batch_size, PITCH_SHIFT_LOW_MAX, PITCH_SHIFT_HIGH_MAX)
    size = PITCH_SHIFT_LOW_MAX + PITCH_SHIFT_HIGH_MAX - size  # (5, 15] rather than [5, 15)
    sign = torch.randint(0, 2, (batch_size,), generator=generator) * 2 - 1
    return {"semitones": size * sign}


def _fft_length(minimum):
    """Smallest 2^a, 3 * 2^a or 5 * 2^a >= minimum: a fast FFT size."""
    return min(factor << max(0, math.ceil(math.log2(minimum / factor))) for factor in (1, 3, 5))


def _read_at_speed(waveforms, speed, out_length):
    """Play each clip `speed` times faster: out[j] = clip(j * speed) for j < length / speed,
    zero after. Band-limited: the clip is low-passed below Nyquist / speed (anti-alias
    when speeding up) and upsampled OVERSAMPLING times by FFT zero-padding, then read by
    linear interpolation at per-clip positions."""
    batch_size, length = waveforms.shape
    device, dtype = waveforms.device, waveforms.dtype
    fft_length = _fft_length(length + STFT_SIZE // 2)  # zero padding against wrap-around
    spectrum = torch.fft.rfft(waveforms, n=fft_length)
    nyquist_fraction = torch.linspace(0, 1, spectrum.shape[1], device=device, dtype=dtype)
    cutoff = 0.98 / speed.clamp(min=1)[:, None]
    gain = ((cutoff - nyquist_fraction) / 0.04 + 0.5).clamp_(0, 1) * OVERSAMPLING  # 4 % taper
    upsampled = torch.fft.irfft(spectrum * gain, n=fft_length * OVERSAMPLING)
    step = speed.double()[:, None] * OVERSAMPLING  # float64: exact positions in long clips
    position = torch.arange(out_length, device=device, dtype=torch.float64) * step
    index = position.long().clamp_(max=upsampled.shape[1] - 2)
    fraction = position.frac_().to(dtype)
    out = torch.lerp(upsampled.gather(1, index), upsampled.gather(1, index + 1), fraction)
    inside = torch.arange(out_length, device=device) < torch.ceil(length / speed.double())[:, None]
    return out.mul_(inside)


def _shift_pitch(clips, speed, window):
    """Pitch shift of clips that are all raised (speed >= 1) or all lowered (speed < 1)."""
    length = clips.shape[1]
    if bool((speed >= 1).all()):  # resample (shorter), then stretch back to the length
        faster = _read_at_speed(clips, speed, math.ceil(length / float(speed.min())))
        return _stretch(faster, 1 / speed, window, length)
    # Stretched to shorter (with room for the stretched tail), then resampled.
    shorter = _stretch(clips, 1 / speed, window, math.ceil(length * float(speed.max())) + STFT_SIZE)
    return _read_at_speed(shorter, speed, length)


def apply_pitch_shift(waveforms, params, sample_rate):
    """Shift the pitch by n = `semitones` keeping the duration: a phase-vocoder stretch by
    s = 2^(n/12) combined with playing s times faster (band-limited resampling). The order
    keeps every intermediate signal no longer than the clip: raising the pitch resamples
    first (the clip gets shorter) then stretches back to the original length; lowering it
    stretches first (rate 1/s, shorter) then resamples. Clips are processed in chunks
    sorted by shift, so each chunk pads to similar lengths."""
    batch_size, length = waveforms.shape
    device, dtype = waveforms.device, waveforms.dtype
    speed = (2.0 ** (params["semitones"] / 12)).to(device=device, dtype=dtype, non_blocking=True)
    window = torch.hann_window(STFT_SIZE, device=device, dtype=dtype)
    order = torch.argsort(params["semitones"])
    lowered = int((params["semitones"] < 0).sum())
    chunk = _chunk_size(device, _spectrogram_values(length))
    out = torch.empty_like(waveforms)
    for rows in (order[:lowered], order[lowered:]):
        for first in range(0, len(rows), chunk):
            chunk_rows = rows[first:first + chunk].to(device, non_blocking=True)
            out[chunk_rows] = _shift_pitch(waveforms[chunk_rows], speed[chunk_rows], window)
    return out


# ----------------------------------------------------------------------------- noise

def _draw_noise(batch_size, length, generator, slope, noise_snr_min, noise_snr_max):
    _check_range("noise_snr_min", noise_snr_min, "noise_snr_max", noise_snr_max)
    return {
        "slope": slope,
        "snr_db": _uniform(generator, batch_size, noise_snr_min, noise_snr_max),
        # Complex Gaussian spectrum (real, imaginary) to be shaped by the colour.
        "spectrum": torch.randn(batch_size, length // 2 + 1, 2, generator=generator),
    }


def _draw_colour(colour):
    """draw_<colour>_noise: noise of one colour (power slope NOISE_SLOPES[colour]) at an SNR
    uniform in [noise_snr_min, noise_snr_max] dB."""
    def draw(batch_size, length, sample_rate, generator, noise_snr_min=RANGES["noise_snr_min"],
             noise_snr_max=RANGES["noise_snr_max"]):
        slope = torch.full((batch_size,), NOISE_SLOPES[colour], dtype=torch.float64)
        return _draw_noise(batch_size, length, generator, slope, noise_snr_min, noise_snr_max)
    draw.__name__ = f"draw_{colour}_noise"
    draw.__doc__ = (f"{colour.capitalize()} noise (power slope {NOISE_SLOPES[colour]:g}) at an "
                    f"SNR uniform in [noise_snr_min, noise_snr_max] dB.")
    return draw


draw_white_noise = _draw_colour("white")
draw_pink_noise = _draw_colour("pink")
draw_brown_noise = _draw_colour("brown")


def draw_mixed_noise(batch_size, length, sample_rate, generator,
                     noise_snr_min=RANGES["noise_snr_min"], noise_snr_max=RANGES["noise_snr_max"]):
    """White, pink or brown noise (1/3 each, per clip) at a random SNR."""
    slopes = torch.tensor(list(NOISE_SLOPES.values()), dtype=torch.float64)
    slope = slopes[torch.randint(0, len(slopes), (batch_size,), generator=generator)]
    return _draw_noise(batch_size, length, generator, slope, noise_snr_min, noise_snr_max)


def apply_noise(waveforms, params, sample_rate):
    """Add noise whose power spectrum is proportional to f^slope (DC removed), scaled so
    that clip power / noise power = 10^(snr_db / 10) with the clip's own power. A silent
    clip gets no noise (and no NaN). The sum is not clipped."""
    length = waveforms.shape[1]
    device, dtype = waveforms.device, waveforms.dtype
    spectrum = torch.view_as_complex(params["spectrum"].to(device=device, dtype=dtype, non_blocking=True))
    frequency = torch.arange(spectrum.shape[1], device=device, dtype=dtype).clamp_(min=1)
    slope = params["slope"].to(device=device, dtype=dtype, non_blocking=True)[:, None]
    amplitude = torch.exp(frequency.log() * (slope / 2))
    amplitude[:, 0] = 0
    noise = torch.fft.irfft(spectrum * amplitude, n=length)
    clip_power = waveforms.square().mean(1, keepdim=True)
    noise_power = noise.square().mean(1, keepdim=True).clamp_(min=torch.finfo(dtype).tiny)
    snr = params["snr_db"].to(device=device, dtype=dtype, non_blocking=True)[:, None]
    scale = torch.sqrt(clip_power / noise_power * 10 ** (-snr / 10))
    return waveforms + noise * scale


# ----------------------------------------------------------------------------- registry

class Augmentation(NamedTuple):
    draw: Callable  # (batch_size, length, sample_rate, generator, **keywords) -> dict
    apply: Callable  # (waveforms, params, sample_rate) -> Tensor
    keywords: tuple  # the augment() keywords that draw takes


_NOISE_KEYWORDS = ("noise_snr_min", "noise_snr_max")
AUGMENTATIONS = {
    "pitch_shift": Augmentation(draw_pitch_shift, apply_pitch_shift,
                                ("pitch_shift_min", "pitch_shift_max")),
    "pitch_shift_low": Augmentation(draw_pitch_shift_low, apply_pitch_shift, ()),
    "pitch_shift_high": Augmentation(draw_pitch_shift_high, apply_pitch_shift, ()),
    "fade": Augmentation(draw_fade, apply_fade, ("fade_max",)),
    "time_mask": Augmentation(draw_time_mask, apply_time_mask,
                              ("time_mask_max", "time_mask_fill", "time_mask_noise_db")),
    "time_shift": Augmentation(draw_time_shift, apply_time_shift, ("time_shift_max",)),
    "time_stretch": Augmentation(draw_time_stretch, apply_time_stretch,
                                 ("time_stretch_min", "time_stretch_max")),
    "time_stretch_low": Augmentation(draw_time_stretch_low, apply_time_stretch, ()),
    "time_stretch_high": Augmentation(draw_time_stretch_high, apply_time_stretch, ()),
    "white_noise": Augmentation(draw_white_noise, apply_noise, _NOISE_KEYWORDS),
    "pink_noise": Augmentation(draw_pink_noise, apply_noise, _NOISE_KEYWORDS),
    "brown_noise": Augmentation(draw_brown_noise, apply_noise, _NOISE_KEYWORDS),
    "mixed_noise": Augmentation(draw_mixed_noise, apply_noise, _NOISE_KEYWORDS),
}
NAMES = tuple(AUGMENTATIONS)

DEFAULTS = {
    **RANGES,
    # per-clip probability of applying each augmentation named in --augmentations
    **{f"{name}_p": 1.0 for name in NAMES},
}


def _check_names(names, ranges):
    if isinstance(names, str):
        raise ValueError(f"names must be a sequence of names, not the string {names!r}")
    for name in names:
        if name not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {name!r}; valid names: {', '.join(NAMES)}")
    for key in ranges:
        if key not in DEFAULTS:
            raise ValueError(f"unknown augmentation keyword {key!r}; valid keywords: "
                             f"{', '.join(DEFAULTS)}")


def draw(names: Sequence[str], batch_size: int, length: int, sample_rate: int = 16000,
         generator: torch.Generator | None = None, **ranges) -> list[tuple[str, dict]]:
    """Draw every named augmentation's parameters, on the CPU, in order; each params dict
    also holds "applied", the per-clip Bernoulli(<name>_p) choice."""
    _check_names(names, ranges)
    generator = torch.default_generator if generator is None else generator
    settings = {**DEFAULTS, **ranges}
    drawn = []
    for name in names:
        augmentation = AUGMENTATIONS[name]
        params = augmentation.draw(batch_size, length, sample_rate, generator,
                                   **{key: settings[key] for key in augmentation.keywords})
        probability = float(settings[f"{name}_p"])
        if not 0 <= probability <= 1:
            raise ValueError(f"{name}_p={probability} must be in [0, 1]")
        params["applied"] = torch.rand(batch_size, generator=generator) < probability
        drawn.append((name, params))
    return drawn


def _select_clips(params, rows):
    """The params of the clips at `rows` (per-clip tensors are indexed, the rest kept)."""
    return {key: value[rows] if isinstance(value, torch.Tensor) and value.dim() > 0 else value
            for key, value in params.items()}


def apply(waveforms: torch.Tensor, drawn: list[tuple[str, dict]], sample_rate: int = 16000) -> torch.Tensor:
    """Apply drawn augmentations in order; clips not chosen by "applied" pass unchanged.
    Returns a new tensor with the input's shape, dtype and device."""
    if waveforms.dim() != 2:
        raise ValueError(f"waveforms must be (batch, samples), got shape {tuple(waveforms.shape)}")
    dtype = waveforms.dtype
    out = waveforms.float() if dtype in (torch.float16, torch.bfloat16) else waveforms
    for name, params in drawn:
        applied = params["applied"]
        if applied.shape != waveforms.shape[:1]:
            raise ValueError(f"{name} was drawn for {applied.numel()} clips, not {waveforms.shape[0]}")
        if not applied.any():
            continue
        if applied.all():
            out = AUGMENTATIONS[name].apply(out, params, sample_rate)
        else:
            rows = applied.nonzero().squeeze(1)
            rows_here = rows.to(out.device, non_blocking=True)
            changed = AUGMENTATIONS[name].apply(out.index_select(0, rows_here),
                                                _select_clips(params, rows), sample_rate)
            out = out.index_copy(0, rows_here, changed)
    out = out.to(dtype)
    return out.clone() if out is waveforms else out


def augment(waveforms: torch.Tensor, names: Sequence[str], sample_rate: int = 16000,
            generator: torch.Generator | None = None, **ranges) -> torch.Tensor:
    """Augment a (B, T) batch with every named augmentation, in order, each clip with its
    own random parameters (drawn from `generator` on the CPU). Keywords: see DEFAULTS."""
    batch_size, length = waveforms.shape if waveforms.dim() == 2 else (0, 0)
    return apply(waveforms, draw(names, batch_size, length, sample_rate, generator, **ranges),
                 sample_rate)
