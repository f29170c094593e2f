"""Tests of augmentation.py on synthetic signals, checked against the drawn parameters."""

import inspect
import math

import pytest
import torch

import augmentation as aug

SAMPLE_RATE = 16000
LENGTH = 16000


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def tone(frequency, clips=1, length=LENGTH, amplitude=0.5):
    time = torch.arange(length, dtype=torch.float64) / SAMPLE_RATE
    return (amplitude * torch.sin(2 * math.pi * frequency * time)).float().repeat(clips, 1)


def peak_frequency(waveforms):
    """Per clip frequency of the strongest spectral peak (Hann window, 16x zero padding,
    parabolic interpolation on log magnitudes)."""
    length = waveforms.shape[-1]
    window = torch.hann_window(length, periodic=False, dtype=torch.float64)
    magnitude = torch.fft.rfft(waveforms.double() * window, n=16 * length).abs()
    peak = magnitude.argmax(-1, keepdim=True)
    left, centre, right = (magnitude.gather(-1, peak + step).log() for step in (-1, 0, 1))
    offset = 0.5 * (left - right) / (left - 2 * centre + right)
    return ((peak + offset).squeeze(-1)) * SAMPLE_RATE / (16 * length)


def log_log_slope(noise, low=50.0, high=4000.0):
    """Slope of log10(mean periodogram) against log10(frequency) over [low, high] Hz."""
    power = torch.fft.rfft(noise.double()).abs().square().mean(0)
    frequency = torch.fft.rfftfreq(noise.shape[-1], 1 / SAMPLE_RATE, dtype=torch.float64)
    band = (frequency >= low) & (frequency <= high)
    x, y = frequency[band].log10(), power[band].log10()
    x = x - x.mean()
    return float((x * (y - y.mean())).sum() / x.square().sum())


# ----------------------------------------------------------------------------- API

def test_names_and_defaults():
    assert set(aug.NAMES) == {
        "pitch_shift", "pitch_shift_low", "pitch_shift_high", "fade", "time_mask", "time_shift",
        "time_stretch", "time_stretch_low", "time_stretch_high",
        "white_noise", "pink_noise", "brown_noise", "mixed_noise"}
    assert all(isinstance(value, (int, float, str)) for value in aug.DEFAULTS.values())
    for name in aug.NAMES:
        assert aug.DEFAULTS[f"{name}_p"] == 1.0
        entry = aug.AUGMENTATIONS[name]
        defaults = {key: parameter.default
                    for key, parameter in inspect.signature(entry.draw).parameters.items()
                    if parameter.default is not inspect.Parameter.empty}
        assert defaults == {key: aug.DEFAULTS[key] for key in entry.keywords}
        assert callable(getattr(aug, f"draw_{name}"))


@pytest.mark.parametrize("name", aug.NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_device_and_new_tensor(name, dtype):
    waveforms = 0.1 * torch.randn(3, 4000, generator=generator(), dtype=dtype)
    before = waveforms.clone()
    out = aug.augment(waveforms, [name], SAMPLE_RATE, generator(1))
    assert out.shape == waveforms.shape and out.dtype == dtype and out.device == waveforms.device
    assert out.data_ptr() != waveforms.data_ptr()
    assert torch.isfinite(out).all()
    assert torch.equal(waveforms, before)


def test_unknown_name_or_keyword_raises():
    waveforms = torch.zeros(2, 1000)
    with pytest.raises(ValueError, match="'reverb'.*pitch_shift"):
        aug.augment(waveforms, ["fade", "reverb"])
    with pytest.raises(ValueError, match="'fade_length'.*fade_max"):
        aug.augment(waveforms, ["fade"], fade_length=0.3)
    with pytest.raises(ValueError):
        aug.augment(waveforms, ["time_mask"], time_mask_fill="blue")


def test_same_seed_same_output_and_empty_names():
    waveforms = 0.1 * torch.randn(4, 8000, generator=generator())
    names = ["time_shift", "pitch_shift", "fade", "time_mask", "mixed_noise"]
    first = aug.augment(waveforms, names, SAMPLE_RATE, generator(7))
    assert torch.equal(first, aug.augment(waveforms, names, SAMPLE_RATE, generator(7)))
    assert not torch.equal(first, aug.augment(waveforms, names, SAMPLE_RATE, generator(8)))
    unchanged = aug.augment(waveforms, [], SAMPLE_RATE)
    assert torch.equal(unchanged, waveforms) and unchanged.data_ptr() != waveforms.data_ptr()


@pytest.mark.parametrize("name", ["fade", "time_stretch", "pitch_shift", "white_noise"])
def test_probability(name):
    waveforms = 0.1 * torch.randn(16, 4000, generator=generator())
    never = aug.augment(waveforms, [name], SAMPLE_RATE, generator(3), **{f"{name}_p": 0.0})
    assert torch.equal(never, waveforms)
    always = aug.augment(waveforms, [name], SAMPLE_RATE, generator(3))
    half = aug.augment(waveforms, [name], SAMPLE_RATE, generator(3), **{f"{name}_p": 0.5})
    applied = aug.draw([name], 16, 4000, SAMPLE_RATE, generator(3), **{f"{name}_p": 0.5})[0][1]["applied"]
    assert 0 < applied.sum() < 16
    torch.testing.assert_close(half[applied], always[applied], atol=1e-5, rtol=0)
    assert torch.equal(half[~applied], waveforms[~applied])


# ----------------------------------------------------------------------------- fade

def test_fade_envelope_matches_drawn_lengths_and_shapes():
    batch_size, length = 64, 2000
    params = aug.draw_fade(batch_size, length, SAMPLE_RATE, generator(), fade_max=0.5)
    gain = aug.apply_fade(torch.ones(batch_size, length), params, SAMPLE_RATE)
    assert set(params["shape"].tolist()) == {0, 1, 2}
    assert params["fade_in"].max() <= length // 2 and params["fade_out"].max() <= length // 2
    for clip in range(batch_size):
        fade_in, fade_out = int(params["fade_in"][clip]), int(params["fade_out"][clip])
        shape = int(params["shape"][clip])
        # Exactly fade_in samples attenuated at the start, fade_out at the end.
        attenuated = gain[clip] < 1 - 1e-6
        assert int(attenuated[:length // 2].sum()) == fade_in
        assert int(attenuated[length // 2:].sum()) == fade_out
        for fade, envelope in ((fade_in, gain[clip, :fade_in]), (fade_out, gain[clip].flip(0)[:fade_out])):
            if fade < 4:
                continue
            position = torch.arange(1, fade + 1, dtype=torch.float64) / (fade + 1)
            expected = {0: position,
                        1: torch.log1p(100 * position) / math.log(101),
                        2: (101 ** position - 1) / 100}[shape]
            torch.testing.assert_close(envelope.double(), expected, atol=1e-5, rtol=0)
            assert (envelope.diff() >= 0).all()


# ----------------------------------------------------------------------------- time mask

def test_time_mask_is_one_segment_of_random_length():
    batch_size, length = 64, 4000
    params = aug.draw_time_mask(batch_size, length, SAMPLE_RATE, generator(), time_mask_fill="zero")
    out = aug.apply_time_mask(torch.ones(batch_size, length), params, SAMPLE_RATE)
    masked = out == 0
    assert ((out == 0) | (out == 1)).all()
    assert torch.equal(masked.sum(1), params["length"])
    # One contiguous segment starting at the drawn start.
    edges = masked.int().diff(dim=1, prepend=torch.zeros(batch_size, 1, dtype=torch.int32))
    assert ((edges == 1).sum(1) == 1).all()
    assert torch.equal(masked.int().argmax(1), params["start"])
    assert params["length"].min() >= 1 and params["length"].max() <= length // 8
    assert len(set(params["length"].tolist())) > 10  # random length, not fixed


def test_time_mask_noise_and_constant_fill():
    batch_size, length = 16, 4000
    waveforms = torch.ones(batch_size, length)
    params = aug.draw_time_mask(batch_size, length, SAMPLE_RATE, generator(), time_mask_max=0.25)
    out = aug.apply_time_mask(waveforms, params, SAMPLE_RATE)
    position = torch.arange(length)
    inside = (position >= params["start"][:, None]) & (position < (params["start"] + params["length"])[:, None])
    assert torch.equal(out[~inside], waveforms[~inside])
    level = out[inside & (params["length"][:, None] >= 200)].square().mean().sqrt()
    assert 10 ** (-30 / 20) * 0.8 < level < 10 ** (-30 / 20) * 1.2  # -30 dB re clip RMS 1
    constant = aug.augment(waveforms, ["time_mask"], SAMPLE_RATE, generator(), time_mask_fill="0.25")
    assert set(constant.unique().tolist()) == {0.25, 1.0}


# ----------------------------------------------------------------------------- time shift

def test_time_shift_is_roll_by_drawn_shift():
    waveforms = torch.randn(16, 1000, generator=generator())
    params = aug.draw_time_shift(16, 1000, SAMPLE_RATE, generator(1))
    out = aug.apply_time_shift(waveforms, params, SAMPLE_RATE)
    assert params["shift"].abs().max() <= 500 and (params["shift"] < 0).any() and (params["shift"] > 0).any()
    for clip, shift in enumerate(params["shift"].tolist()):
        assert torch.equal(out[clip], torch.roll(waveforms[clip], shift))


# ----------------------------------------------------------------------------- noise

@pytest.mark.parametrize("name, slope", [("white_noise", 0.0), ("pink_noise", -1.0), ("brown_noise", -2.0)])
def test_noise_snr_and_colour(name, slope):
    batch_size = 32
    waveforms = tone(440, batch_size) * torch.linspace(0.01, 2, batch_size)[:, None]
    params = getattr(aug, f"draw_{name}")(batch_size, LENGTH, SAMPLE_RATE, generator())
    noise = aug.apply_noise(waveforms, params, SAMPLE_RATE) - waveforms
    snr = 10 * torch.log10(waveforms.double().square().mean(1) / noise.double().square().mean(1))
    assert (snr - params["snr_db"]).abs().max() < 0.5
    assert params["snr_db"].min() >= 0 and params["snr_db"].max() <= 20
    assert abs(log_log_slope(noise) - slope) < 0.25


def test_mixed_noise_colours_and_silent_clip():
    batch_size = 96
    waveforms = tone(440, batch_size)
    waveforms[0] = 0
    params = aug.draw_mixed_noise(batch_size, LENGTH, SAMPLE_RATE, generator())
    out = aug.apply_noise(waveforms, params, SAMPLE_RATE)
    assert torch.isfinite(out).all() and torch.equal(out[0], waveforms[0])  # silent: no noise
    for slope in (0.0, -1.0, -2.0):
        chosen = params["slope"] == slope
        assert chosen.sum() > 15
        assert abs(log_log_slope((out - waveforms)[chosen]) - slope) < 0.25


def test_noise_is_not_clipped():
    waveforms = torch.full((8, 4000), 0.9)
    out = aug.augment(waveforms, ["white_noise"], SAMPLE_RATE, generator(), noise_snr_min=0, noise_snr_max=0)
    assert out.max() > 1.0 and out.min() < 0.0


# ----------------------------------------------------------------------------- pitch shift

def test_pitch_shift_moves_a_tone_by_the_drawn_semitones():
    batch_size = 12
    params = aug.draw_pitch_shift(batch_size, LENGTH, SAMPLE_RATE, generator())
    params["semitones"][:2] = torch.tensor([-15.0, 15.0], dtype=torch.float64)
    out = aug.apply_pitch_shift(tone(440, batch_size), params, SAMPLE_RATE)
    assert out.shape == (batch_size, LENGTH)
    ratio = peak_frequency(out[:, 2000:-2000]) / 440 / 2 ** (params["semitones"] / 12)
    assert (ratio - 1).abs().max() < 0.01
    # Energy stays where the clip is: the shift keeps the duration.
    assert out[:, 1000:-1000].square().mean(1).min() > 0.2 * 0.125


def test_pitch_shift_presets_and_range():
    semitones = aug.draw_pitch_shift(1000, LENGTH, SAMPLE_RATE, generator())["semitones"]
    assert semitones.min() >= -15 and semitones.max() <= 15 and semitones.min() < -14 and semitones.max() > 14
    low = aug.draw_pitch_shift_low(1000, LENGTH, SAMPLE_RATE, generator())["semitones"]
    assert low.abs().max() <= 5 and low.min() < -4.5 and low.max() > 4.5
    high = aug.draw_pitch_shift_high(1000, LENGTH, SAMPLE_RATE, generator())["semitones"]
    assert (high.abs() > 5).all() and high.abs().max() <= 15
    assert 400 < (high > 0).sum() < 600


def test_pitch_shift_does_not_alias():
    out = aug.apply_pitch_shift(tone(6000), {"semitones": torch.tensor([7.0], dtype=torch.float64)}, SAMPLE_RATE)
    assert out.square().mean().sqrt() < 0.01  # 8.99 kHz is above Nyquist: removed, not folded


# ----------------------------------------------------------------------------- time stretch

RATES = [0.5, 0.75, 1.25, 1.5]


def test_time_stretch_keeps_the_pitch():
    rate = torch.tensor(RATES, dtype=torch.float64)
    out = aug.apply_time_stretch(tone(440, len(RATES)), {"rate": rate}, SAMPLE_RATE)
    assert out.shape == (len(RATES), LENGTH)
    frequency = peak_frequency(out[:, 1000:9000])
    assert ((frequency / 440) - 1).abs().max() < 0.01


def pulse_spacing(waveforms, expected):
    """Lag of the envelope autocorrelation peak within 0.7..1.4 x expected spacing."""
    envelope = torch.nn.functional.avg_pool1d(waveforms.square()[:, None], 65, 1, 32)[:, 0].double()
    envelope = envelope - envelope.mean(1, keepdim=True)
    spectrum = torch.fft.rfft(envelope, n=2 * envelope.shape[1])
    correlation = torch.fft.irfft(spectrum.abs().square())
    lags = []
    for clip, spacing in enumerate(expected):
        low, high = int(0.7 * spacing), int(1.4 * spacing)
        lags.append(low + int(correlation[clip, low:high].argmax()))
    return torch.tensor(lags, dtype=torch.float64)


def test_time_stretch_changes_pulse_spacing_by_the_rate():
    # Pulses of a 1 kHz tone (40 ms Hann envelope) every 0.1 s, each after silence.
    spacing, pulse = 1600, 640
    envelope = torch.zeros(LENGTH)
    for start in range(400, LENGTH - pulse, spacing):
        envelope[start:start + pulse] = torch.hann_window(pulse, periodic=False)
    pulses = (tone(1000, len(RATES), amplitude=1.0) * envelope)
    rate = torch.tensor(RATES, dtype=torch.float64)
    out = aug.apply_time_stretch(pulses, {"rate": rate}, SAMPLE_RATE)
    expected = spacing / rate  # rate > 1 = faster = closer pulses
    measured = pulse_spacing(out, expected)
    assert ((measured / expected) - 1).abs().max() < 0.05
    # Faster clips end early and are zero-padded; slower ones are cropped.
    assert out[3, int(LENGTH / 1.5) + 600:].abs().max() < 1e-4


def test_stretch_and_shift_keep_a_tone_steady():
    # The phase reset at the first full frame keeps the bins of a tone coherent (a plain
    # phase vocoder, like torchaudio's, loses up to 4 dB on a tone that starts the clip).
    rate = torch.tensor(RATES, dtype=torch.float64)
    stretched = aug.apply_time_stretch(tone(440, len(RATES)), {"rate": rate}, SAMPLE_RATE)
    semitones = torch.tensor([-15.0, -4.2, 4.2, 15.0], dtype=torch.float64)
    shifted = aug.apply_pitch_shift(tone(440, 4), {"semitones": semitones}, SAMPLE_RATE)
    rms = torch.cat([stretched[:, 1000:8000], shifted[:, 1000:8000]]).square().mean(1).sqrt()
    assert ((rms / (0.5 / math.sqrt(2))) - 1).abs().max() < 0.03


def test_time_stretch_rate_one_is_identity_and_presets():
    waveforms = 0.1 * torch.randn(2, 4000, generator=generator())
    same = aug.apply_time_stretch(waveforms, {"rate": torch.ones(2, dtype=torch.float64)}, SAMPLE_RATE)
    torch.testing.assert_close(same, waveforms, atol=1e-5, rtol=0)
    rate = aug.draw_time_stretch(1000, LENGTH, SAMPLE_RATE, generator())["rate"]
    assert rate.min() >= 0.5 and rate.max() <= 1.5
    low = aug.draw_time_stretch_low(1000, LENGTH, SAMPLE_RATE, generator())["rate"]
    high = aug.draw_time_stretch_high(1000, LENGTH, SAMPLE_RATE, generator())["rate"]
    assert low.min() >= 0.5 and low.max() <= 1.0 and high.min() >= 1.0 and high.max() <= 1.5


# ----------------------------------------------------------------------------- devices, bench

@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cpu_and_cuda_agree():
    waveforms = 0.1 * torch.randn(8, 8000, generator=generator())
    for name in aug.NAMES:
        cpu = aug.augment(waveforms, [name], SAMPLE_RATE, generator(5))
        cuda = aug.augment(waveforms.cuda(), [name], SAMPLE_RATE, generator(5))
        assert cuda.device.type == "cuda"
        torch.testing.assert_close(cuda.cpu(), cpu, atol=1e-4, rtol=0, msg=name)
