"""Self-supervised (SimCLR-style) pre-training, then linear evaluation.

NT-Xent between two augmented views of every training clip, labels unused. A linear head
on the detached 512-d features learns from the labelled clips alongside (it cannot change
the encoder) and picks the best epoch on validation; at the end a linear classifier is
fitted on the frozen features of the labelled clips and evaluated.

    python selfsupervised.py --dataset=sc09 --label_fraction=0.1

Edit the hyperparameters below, or override any of them as --name=value; `--help` lists
them and the shared options (config.py: paths, device, logging, augmentation ranges).
"""
# data
dataset = 'synth'             # synth | speechcommands | sc09 | speechcommands12 | nsynth | esc50 | esc10 | fsdd | folder (your own class folders)
data_root = 'data'            # where the dataset lives (or is downloaded to); never written to otherwise
label_fraction = 1.0          # fraction of training clips whose label the evaluation head learns from, in (0, 1]
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
# self-supervised's own
temperature = 0.5             # NT-Xent temperature
probe = 'linear'              # the evaluation on frozen features (this regime's result): linear | mlp (512-512-classes, dropout 0.2, as the released code)

import torch  # noqa: E402  (the hyperparameters come first, to be edited)

from model import global_nt_xent, masked_cross_entropy  # noqa: E402


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
