"""CLAR: contrastive and supervised learning at once (semi-supervised).

Every training clip gives two augmented views; NT-Xent pulls the views of a clip together
and pushes the other clips away, while the clips whose label is known (label_fraction of
them) add the cross-entropy of both views. Unlabelled clips add no cross-entropy.

    python train.py --dataset=sc09 --label_fraction=0.01 --epochs=200

Edit the hyperparameters below, or override any of them as --name=value; `--help` lists
them and the shared options (config.py: paths, device, logging, augmentation ranges).
"""
# data
dataset = 'synth'             # synth | speechcommands | sc09 | speechcommands12 | nsynth | esc50 | esc10 | fsdd | folder (your own class folders)
data_root = 'data'            # where the dataset lives (or is downloaded to); never written to otherwise
label_fraction = 1.0          # fraction of training clips whose label is used, in (0, 1]
# model
encoder = 'resnet2d'          # resnet2d: ResNet-18 on spectrograms | resnet1d: ResNet-18 (Conv1d, kernel 9) on raw audio
encoder_width = 1.0           # scales the ResNet-18's channels; 1 = the standard ResNet-18
# optimisation
batch_size = 256              # clips per step and per process (each gives two views)
epochs = 100                  # passes over the training clips
optimizer = 'adam'            # adam | lars: Adam wrapped in LARS, the released code's recipe (no decay or adaptation of biases and BatchNorm)
learning_rate = 3e-4          # peak learning rate
weight_decay = 1e-6           # weight decay (with lars: on weights only)
warmup_epochs = 10            # linear warm-up, then cosine decay to zero
# augmentations
augmentations = 'fade,time_mask'  # comma-separated names (augmentation.NAMES), drawn independently for each view
# CLAR's own
temperature = 0.5             # NT-Xent temperature
ce_weight = 1.0               # weight of the cross-entropy term (1 in the paper)
probe = 'linear'              # evaluation head on frozen features: linear | mlp (512-512-classes, dropout 0.2, as the released code)
class_input = 'p'             # what the class layer reads: p (the 128-d projection, as the paper) | h (the 512-d encoder output)
heads = 'mlp'                 # mlp: projection 512-512-128, linear class layer | released: the released code's (projection with BatchNorm; class head BatchNorm-ReLU-Linear, no bias)
# pseudo-labels on the unlabelled clips (self-training; off by default: the paper's CLAR)
pseudo_labels = 'off'         # off | fixed: one --pseudo_threshold for every class (FixMatch) | per_class: thresholds that rise with each class's confident share (FlexMatch)
pseudo_threshold = 0.95       # an unlabelled clip whose weak view's top class probability reaches this (per_class: this at most) trains both views towards that class, in (0, 1]
pseudo_weight = 1.0           # weight of the pseudo-label cross-entropy, 0 or more
pseudo_start_epoch = 0        # epochs of plain CLAR before pseudo-labels join the loss
pseudo_weak_view = 'none'     # the view that decides the pseudo-label: none (the clip as it is) | time_shift (circularly shifted)
ema_decay = 0.0               # 0: the model labels its own clips | in (0, 1): a moving average of its weights does (Mean Teacher), e.g. 0.99

import torch  # noqa: E402  (the hyperparameters come first, to be edited)

from model import global_nt_xent, masked_cross_entropy, pseudo_cross_entropy  # noqa: E402


def loss(model, views, labels, labelled, cfg, pseudo=None):
    """NT-Xent between the two views + CE(view 1) + CE(view 2) on the labelled clips; with
    `pseudo` = (targets, confident) from the weak view, + the same on the confident
    unlabelled clips against their pseudo-labels."""
    out = model(torch.cat(views))               # both views in one pass
    z1, z2 = out['z'].chunk(2)
    logits1, logits2 = out['logits'].chunk(2)
    contrastive = global_nt_xent(z1, z2, cfg['temperature'])
    supervised = (masked_cross_entropy(logits1, labels, labelled)
                  + masked_cross_entropy(logits2, labels, labelled))
    total = contrastive + cfg['ce_weight'] * supervised
    parts = {'nt_xent': contrastive, 'ce': supervised}
    if pseudo is not None:
        targets, confident = pseudo
        parts['pseudo_ce'] = (pseudo_cross_entropy(logits1, targets, confident, ~labelled)
                              + pseudo_cross_entropy(logits2, targets, confident, ~labelled))
        total = total + cfg['pseudo_weight'] * parts['pseudo_ce']
    return total, parts


if __name__ == '__main__':
    import engine
    engine.main(globals(), regime='clar', loss=loss, train_on='all')
