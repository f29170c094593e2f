"""Self-supervised (SimCLR-style) pre-training, then linear evaluation.

NT-Xent between two augmented views of every training clip, labels unused. A linear head
on the detached 512-d features learns from the labelled clips alongside (it cannot change
the encoder) and picks the best epoch on validation; at the end a linear classifier is
fitted on the frozen features of the labelled clips and evaluated.

    python selfsupervised.py --dataset=sc09 --label_fraction=0.1
"""
import torch

from config import *  # noqa: F401,F403  the shared defaults; see config.py
from model import global_nt_xent, masked_cross_entropy


def loss(model, views, labels, labelled, cfg):
    """NT-Xent; plus the online probe's cross-entropy, which reaches only the probe."""
    out = model(torch.cat(views))
    z1, z2 = out['z'].chunk(2)
    contrastive = global_nt_xent(z1, z2, cfg['temperature'])
    probe = masked_cross_entropy(out['logits'], labels.repeat(2), labelled.repeat(2))
    return contrastive + probe, {'nt_xent': contrastive, 'probe_ce': probe}


if __name__ == '__main__':
    import engine
    engine.main(globals(), regime='selfsupervised', loss=loss, train_on='all')
