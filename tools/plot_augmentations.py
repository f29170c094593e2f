"""Plot one clip unaugmented and under each augmentation, as the three front-end channels.

    python tools/plot_augmentations.py [--wav=path] [--out=img/augmentations.png] [--seed=0]

Without --wav it plots a test-speaker clip of the word "yes" from the synth demo (generated
into ~/.cache/clar if needed); --wav=synthetic uses a gliding harmonic tone instead. The
channels are the training front end's (spectograms.Spectrogram, the paper setting).
"""

import argparse
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import augmentation as aug  # noqa: E402
from spectograms import Spectrogram  # noqa: E402

SAMPLE_RATE = 16000


def synthetic_clip(seconds=1.0):
    """Harmonic tone gliding from 140 to 260 Hz (10 harmonics, 1/k amplitudes) inside a
    raised-cosine envelope from 0.15 s to 0.85 s, with silence around it."""
    time = torch.arange(int(seconds * SAMPLE_RATE), dtype=torch.float64) / SAMPLE_RATE
    fundamental = 140 + 120 * time / seconds
    phase = 2 * math.pi * torch.cumsum(fundamental, 0) / SAMPLE_RATE
    clip = sum(torch.sin(k * phase) / k for k in range(1, 11))
    inside = ((time - 0.15 * seconds) / (0.7 * seconds)).clamp(0, 1)
    envelope = torch.sin(math.pi * inside) ** 2
    return (0.3 * clip * envelope).float()


def demo_clip():
    """A clip of "yes" by a test speaker of the synth demo."""
    import synth_speech
    root = synth_speech.ensure(os.path.expanduser("~/.cache/clar"))
    testing = (root / "testing_list.txt").read_text().split()
    return str(root / next(p for p in testing if p.startswith("yes/")))


def load_clip(path):
    import audio
    return torch.from_numpy(audio.read_clip(path, SAMPLE_RATE, SAMPLE_RATE))


FRONT_END = Spectrogram(SAMPLE_RATE, "paper")


def channels(clip):
    """(log magnitude dB, phase, log mel dB), each (128, frames), as the model sees them."""
    return FRONT_END(clip[None])[0]


def describe(name, params):
    """A short label of the drawn parameters of one clip."""
    if name.startswith("pitch_shift"):
        return f"{float(params['semitones'][0]):+.1f} semitones"
    if name.startswith("time_stretch"):
        return f"rate {float(params['rate'][0]):.2f}"
    if name == "fade":
        shape = aug.FADE_SHAPES[int(params["shape"][0])]
        return (f"{shape}, in {int(params['fade_in'][0]) / SAMPLE_RATE:.2f} s, "
                f"out {int(params['fade_out'][0]) / SAMPLE_RATE:.2f} s")
    if name == "time_mask":
        start, length = int(params["start"][0]), int(params["length"][0])
        return f"{start / SAMPLE_RATE:.2f} s + {length / SAMPLE_RATE:.3f} s"
    if name == "time_shift":
        return f"{int(params['shift'][0]) / SAMPLE_RATE:+.2f} s"
    slope = float(params["slope"][0])
    return f"slope {slope:g}, SNR {float(params['snr_db'][0]):.1f} dB"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wav", help="clip to plot (default: a synth demo clip; 'synthetic': a tone)")
    parser.add_argument("--out", default="img/augmentations.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    clip = synthetic_clip() if args.wav == "synthetic" else load_clip(args.wav or demo_clip())
    generator = torch.Generator().manual_seed(args.seed)
    rows = [("unaugmented", "", clip)]
    for name in aug.NAMES:
        drawn = aug.draw([name], 1, clip.numel(), SAMPLE_RATE, generator)
        rows.append((name, describe(name, drawn[0][1]), aug.apply(clip[None], drawn, SAMPLE_RATE)[0]))

    seconds = clip.numel() / SAMPLE_RATE
    figure, axes = plt.subplots(len(rows), 3, figsize=(10, 1.2 * len(rows)), squeeze=False)
    titles = ("log magnitude (dB)", "phase (rad)", "log mel (dB)")
    for row, (name, label, waveform) in enumerate(rows):
        for column, (channel, colormap) in enumerate(zip(channels(waveform), ("magma", "twilight", "magma"))):
            axis = axes[row, column]
            vmin, vmax = ((-math.pi, math.pi) if column == 1 else
                          (float(channel.max()) - 80, float(channel.max())))
            axis.imshow(channel, origin="lower", aspect="auto", cmap=colormap, vmin=vmin, vmax=vmax,
                        extent=(0, seconds, 0, channel.shape[0]), interpolation="nearest")
            axis.set_yticks([])
            if row == 0:
                axis.set_title(titles[column], fontsize=10)
            if row < len(rows) - 1:
                axis.set_xticks([])
        axes[row, 0].set_ylabel(f"{name}\n{label}", rotation=0, ha="right", va="center", fontsize=8)
    axes[-1, 1].set_xlabel("time (s)")
    figure.tight_layout()
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    figure.savefig(args.out, dpi=72)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
