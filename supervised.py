"""The supervised baseline: cross-entropy on one augmented view of each labelled clip.

It trains on the labelled clips only (label_fraction of the training set), with the same
encoder and augmentations as CLAR.

    python supervised.py --dataset=sc09 --label_fraction=0.01

Edit the hyperparameters below, or override any of them as --name=value; `--help` lists
them and the shared options (config.py: paths, device, logging, augmentation ranges).
"""
# data
dataset = 'synth'             # synth | speechcommands | sc09 | speechcommands12 | nsynth | esc50 | esc10 | fsdd | folder (your own class folders)
data_root = 'data'            # where the dataset lives (or is downloaded to); never written to otherwise
label_fraction = 1.0          # fraction of training clips whose label is used (the only clips this regime sees), in (0, 1]
# model
encoder = 'resnet2d'          # resnet2d: ResNet-18 on spectrograms | resnet1d: ResNet-18 (Conv1d, kernel 9) on raw audio
encoder_width = 1.0           # scales the ResNet-18's channels; 1 = the standard ResNet-18
# optimisation
batch_size = 256              # clips per step and per process (one view each)
epochs = 100                  # passes over the labelled clips
optimizer = 'adam'            # adam | lars: Adam wrapped in LARS, the released code's recipe (no decay or adaptation of biases and BatchNorm)
learning_rate = 3e-4          # peak learning rate
weight_decay = 1e-6           # weight decay (with lars: on weights only)
warmup_epochs = 10            # linear warm-up, then cosine decay to zero
# augmentations
augmentations = 'fade,time_mask'  # comma-separated names (augmentation.NAMES), one view per clip
# supervised's own
probe = 'linear'              # the extra evaluation on frozen features beside the head: linear | mlp (512-512-classes, dropout 0.2)

from model import masked_cross_entropy  # noqa: E402  (the hyperparameters come first, to be edited)


def loss(model, views, labels, labelled, cfg):
    """Cross-entropy of the single view."""
    out = model(views[0])
    supervised = masked_cross_entropy(out['logits'], labels, labelled)
    return supervised, {'ce': supervised}


if __name__ == '__main__':
    import engine
    engine.main(globals(), regime='supervised', loss=loss, train_on='labelled')
