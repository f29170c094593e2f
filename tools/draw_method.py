"""Draw the method figure of the README: CLAR's two views through one network to its two losses.

    python tools/draw_method.py [--out=img/method.png]

Boxes and arrows only (matplotlib), so the figure can be redrawn when the method changes;
the names in it are those of model.py, spectograms.py and augmentation.py.
"""
import argparse
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

# colours by role: data, the shared network, the heads, the losses
DATA, NETWORK, HEAD, LOSS = "#e8eef7", "#d7ecd9", "#fbe7c6", "#f6d5d5"
WIDTH, HEIGHT = 1.6, 0.8             # box size in axis units
ROWS = {1: 2.55, 2: 0.45}            # y of the view-1 and view-2 rows; the middle is 1.5
COLUMNS = {"clip": 0.8, "view": 2.85, "frontend": 4.9, "encoder": 6.95, "projection": 9.0,
           "class": 11.05, "loss": 13.1}


def box(ax, x, y, text, colour, width=WIDTH, height=HEIGHT, size=9.5):
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                                boxstyle="round,pad=0.02,rounding_size=0.08",
                                facecolor=colour, edgecolor="#444444", linewidth=1.0))
    ax.text(x, y, text, ha="center", va="center", fontsize=size, linespacing=1.3)


def arrow(ax, start, end, text=None, where=(0, 0.06), align="center"):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12,
                                 linewidth=1.1, color="#333333", shrinkA=0, shrinkB=0,
                                 zorder=3))
    if text:
        ax.text((start[0] + end[0]) / 2 + where[0], (start[1] + end[1]) / 2 + where[1],
                text, ha=align, va="bottom", fontsize=9, color="#333333")


def draw(out):
    fig, ax = plt.subplots(figsize=(13.5, 4.6))
    ax.set_xlim(-0.1, 14.05)
    ax.set_ylim(-0.5, 3.1)
    ax.axis("off")
    half, c = WIDTH / 2, COLUMNS

    box(ax, c["clip"], 1.5, "audio clip\n(labelled\nor not)", DATA, width=1.3, height=1.1)
    for view, y in ROWS.items():
        side = 1 if view == 1 else -1
        arrow(ax, (c["clip"] + 0.65, 1.5 + 0.3 * side), (c["view"] - half, y),
              f"augment t{view}", where=(-0.55, 0.0 if view == 1 else -0.25))
        box(ax, c["view"], y, f"view {view}\nfade + time mask", DATA)
        box(ax, c["frontend"], y, "front end\n|STFT|, phase, log mel\n3 x 128 x 126",
            NETWORK, size=8.8)
        box(ax, c["encoder"], y, "ResNet-18\nencoder", NETWORK)
        box(ax, c["projection"], y, "projection\nMLP 512-512-128", HEAD, size=9.2)
        box(ax, c["class"], y, "class layer\n128 -> classes", HEAD, size=9.2)
        box(ax, c["loss"], y, f"cross-entropy\n(view {view}),\nlabelled clips only",
            LOSS, width=1.75, height=0.95, size=8.8)
        arrow(ax, (c["view"] + half, y), (c["frontend"] - half, y))
        arrow(ax, (c["frontend"] + half, y), (c["encoder"] - half, y))
        arrow(ax, (c["encoder"] + half, y), (c["projection"] - half, y), "h")
        arrow(ax, (c["projection"] + half, y), (c["class"] - half, y), "p")
        arrow(ax, (c["class"] + half, y), (c["loss"] - 0.875, y))
        # z = p / |p| of each view goes to NT-Xent in the middle row
        edge = y - HEIGHT / 2 * side
        arrow(ax, (c["projection"] + 0.3, edge), (c["class"] - 0.7, 1.5 + 0.3 * side),
              f"z{view} = p{view} / |p{view}|", where=(-0.66, -0.04 if view == 1 else 0.0))
    for name in ("frontend", "encoder", "projection"):
        ax.text(c[name], 1.5, "same weights\nfor both views", ha="center", va="center",
                fontsize=8.3, style="italic", color="#555555")
    box(ax, c["class"] + 0.2, 1.5, "NT-Xent: z1 against z2,\nthe other clips of the\n"
        "batch as negatives", LOSS, width=2.0, height=0.95, size=8.8)
    ax.text(7.0, -0.45, "CLAR (train.py): loss = NT-Xent + CE(view 1) + CE(view 2)      "
            "selfsupervised.py: NT-Xent only      supervised.py: CE on one view",
            ha="center", va="bottom", fontsize=10)
    fig.tight_layout(pad=0.3)
    fig.savefig(out, dpi=130)
    plt.close(fig)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "img", "method.png"))
    draw(parser.parse_args().out)
