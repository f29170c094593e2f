"""CLAR: contrastive and supervised learning at once (semi-supervised).

Every training clip gives two augmented views; NT-Xent pulls the views of a clip together
and pushes the other clips away, while the clips whose label is known (label_fraction of
them) add the cross-entropy of both views. Unlabelled clips add no cross-entropy.

    python train.py --dataset=sc09 --label_fraction=0.01 --epochs=200
"""
import torch

from config import *  # noqa: F401,F403  the shared defaults; see config.py
from model import global_nt_xent, masked_cross_entropy

ce_weight = 1.0               # weight of the cross-entropy term (1 in the paper)


def loss(model, views, labels, labelled, cfg):
    """NT-Xent between the two views + CE(view 1) + CE(view 2) on the labelled clips."""
    out = model(torch.cat(views))               # both views in one pass
    z1, z2 = out['z'].chunk(2)
    logits1, logits2 = out['logits'].chunk(2)
    contrastive = global_nt_xent(z1, z2, cfg['temperature'])
    supervised = (masked_cross_entropy(logits1, labels, labelled)
                  + masked_cross_entropy(logits2, labels, labelled))
    return contrastive + cfg['ce_weight'] * supervised, {'nt_xent': contrastive, 'ce': supervised}


if __name__ == '__main__':
    import engine
    engine.main(globals(), regime='clar', loss=loss, train_on='all')
