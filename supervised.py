"""The supervised baseline: cross-entropy on one augmented view of each labelled clip.

It trains on the labelled clips only (label_fraction of the training set), with the same
encoder and augmentations as CLAR.

    python supervised.py --dataset=sc09 --label_fraction=0.01
"""
from config import *  # noqa: F401,F403  the shared defaults; see config.py
from model import masked_cross_entropy


def loss(model, views, labels, labelled, cfg):
    """Cross-entropy of the single view."""
    out = model(views[0])
    supervised = masked_cross_entropy(out['logits'], labels, labelled)
    return supervised, {'ce': supervised}


if __name__ == '__main__':
    import engine
    engine.main(globals(), regime='supervised', loss=loss, train_on='labelled')
