"""The ResNet-18 encoders (2D on spectrograms, 1D on raw audio), CLAR's heads, and the
losses as pure functions.

One model class serves the three regimes so that weights move between them:
    waveforms -> front end (no gradient) -> encoder -> h (512-d)
    clar:           h -> projection MLP -> p (128-d); z = p / |p|; logits = Linear(p)
                    (class_input='h': logits = Linear(h); heads='released': the released
                    code's projection and class head, with BatchNorm)
    selfsupervised: h -> projection MLP -> p; z = p / |p|; logits = Linear(h.detach()),
                    an online probe that watches the encoder without training it
    supervised:     h -> MLP (512-512-classes) -> logits, a class layer where z would be
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from spectograms import Spectrogram

HEADS = ('clar', 'selfsupervised', 'supervised')
CLASS_INPUTS = ('p', 'h')           # what CLAR's class layer reads
HEAD_KINDS = ('mlp', 'released')


ENCODERS = ('resnet2d', 'resnet1d')


class BasicBlock(nn.Module):
    """Two convolutions and a shortcut; `dims` 2 for spectrograms, 1 for waveforms."""

    def __init__(self, channels_in, channels_out, stride, dims=2, kernel=3):
        super().__init__()
        conv, norm = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv1d, nn.BatchNorm1d)
        self.conv1 = conv(channels_in, channels_out, kernel, stride, kernel // 2, bias=False)
        self.bn1 = norm(channels_out)
        self.conv2 = conv(channels_out, channels_out, kernel, 1, kernel // 2, bias=False)
        self.bn2 = norm(channels_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or channels_in != channels_out:
            self.shortcut = nn.Sequential(
                conv(channels_in, channels_out, 1, stride, bias=False), norm(channels_out))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """The standard ResNet-18 (7x7 stride-2 stem, max-pool, [2, 2, 2, 2] basic blocks,
    64-512 channels, global average pooling), for 3-channel spectrograms of any size.
    `width` scales every channel count (0.25 gives a narrow network for CPU runs).
    With dims=1 it is the raw-waveform ResNet-18 of the paper's 1D-vs-2D comparison:
    Conv1d throughout, kernel 9 in the blocks and the stem."""

    def __init__(self, in_channels=3, width=1.0, dims=2):
        super().__init__()
        conv, norm, pool = ((nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d) if dims == 2 else
                            (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d))
        stem_kernel, kernel = (7, 3) if dims == 2 else (9, 9)
        channels = [max(4, round(c * width)) for c in (64, 128, 256, 512)]
        # the input channels (dB, radians, dB) have very different scales: learn them away
        self.input_norm = norm(in_channels, affine=False)
        self.stem = nn.Sequential(
            conv(in_channels, channels[0], stem_kernel, 2, stem_kernel // 2, bias=False),
            norm(channels[0]), nn.ReLU(inplace=True), pool(3, 2, 1))
        layers, previous = [], channels[0]
        for index, count in enumerate(channels):
            stride = 1 if index == 0 else 2
            layers += [BasicBlock(previous, count, stride, dims, kernel),
                       BasicBlock(count, count, 1, dims, kernel)]
            previous = count
        self.layers = nn.Sequential(*layers)
        self.out_dim = channels[-1]

    def forward(self, x):
        x = self.layers(self.stem(self.input_norm(x)))
        return torch.flatten(x.mean(dim=tuple(range(2, x.dim()))), 1)


class Waveform(nn.Module):
    """The 1D encoder's front end: (B, T) -> (B, 1, T)."""

    def forward(self, waveforms):
        return waveforms.float().unsqueeze(1)


def mlp(dim_in, dim_hidden, dim_out):
    return nn.Sequential(nn.Linear(dim_in, dim_hidden), nn.ReLU(inplace=True),
                         nn.Linear(dim_hidden, dim_out))


def released_projection(dim_in, dim_hidden, dim_out):
    """The released CLAR code's projection: Linear, BatchNorm, ReLU, Linear."""
    return nn.Sequential(nn.Linear(dim_in, dim_hidden), nn.BatchNorm1d(dim_hidden),
                         nn.ReLU(inplace=True), nn.Linear(dim_hidden, dim_out))


def released_class_head(dim_in, num_classes):
    """The released CLAR code's class head on p: BatchNorm, ReLU, Linear without bias."""
    return nn.Sequential(nn.BatchNorm1d(dim_in), nn.ReLU(inplace=True),
                         nn.Linear(dim_in, num_classes, bias=False))


class ClarModel(nn.Module):
    """Front end, encoder and the heads of one regime (see the module docstring)."""

    def __init__(self, num_classes, head='clar', sample_rate=16000, frontend='paper',
                 encoder_width=1.0, projection_dim=128, encoder='resnet2d', class_input='p',
                 heads='mlp'):
        super().__init__()
        for name, value, valid in (('head', head, HEADS), ('encoder', encoder, ENCODERS),
                                   ('class_input', class_input, CLASS_INPUTS),
                                   ('heads', heads, HEAD_KINDS)):
            if value not in valid:
                raise ValueError(f'{name} must be one of {valid}, got {value!r}')
        self.head = head
        self.class_input = class_input if head == 'clar' else 'h'
        self.class_input_detached = head == 'selfsupervised'   # the online probe
        if encoder == 'resnet2d':
            self.frontend = Spectrogram(sample_rate, frontend)
            self.encoder = ResNet18(3, encoder_width, dims=2)
        else:
            self.frontend = Waveform()
            self.encoder = ResNet18(1, encoder_width, dims=1)
        features = self.encoder.out_dim
        self.projection = None
        if head == 'supervised':
            self.classifier = mlp(features, features, num_classes)
        else:
            released = head == 'clar' and heads == 'released'
            self.projection = (released_projection if released else mlp)(
                features, features, projection_dim)
            width = projection_dim if self.class_input == 'p' else features
            self.classifier = (released_class_head(width, num_classes) if released
                               else nn.Linear(width, num_classes))

    def features(self, spectrograms):
        """Encoder and heads on the front end's output: {'h', 'p', 'z', 'logits'}
        (supervised: {'h', 'logits'})."""
        h = self.encoder(spectrograms)
        if self.projection is None:
            return {'h': h, 'logits': self.classifier(h)}
        p = self.projection(h)
        read = p if self.class_input == 'p' else h
        logits = self.classifier(read.detach() if self.class_input_detached else read)
        return {'h': h, 'p': p, 'z': F.normalize(p.float(), dim=1), 'logits': logits}

    def forward(self, waveforms):
        return self.features(self.frontend(waveforms))

    @torch.no_grad()
    def embed(self, waveforms):
        """The 512-d representation h of a batch of waveforms."""
        return self.encoder(self.frontend(waveforms))


def build(cfg, num_classes, regime):
    """The model a run's configuration describes."""
    # .get: runs made before an option existed had what its default gives now
    return ClarModel(num_classes, regime, cfg['sample_rate'], cfg['frontend'],
                     cfg['encoder_width'], cfg['projection_dim'], cfg.get('encoder', 'resnet2d'),
                     cfg.get('class_input', 'p'), cfg.get('heads', 'mlp'))


def nt_xent(z1, z2, temperature=0.5):
    """SimCLR's normalised temperature-scaled cross-entropy over 2N embeddings.

    z1[i] and z2[i] are two views of clip i. Each of the 2N vectors has the other view as
    its positive and the other 2N - 2 vectors as negatives; the loss is the mean over the
    2N anchors. Cosine similarity; computed in float32, also inside an autocast region.
    """
    with without_autocast(z1):
        z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
        n = z1.shape[0]
        similarity = z @ z.t() / temperature
        similarity.fill_diagonal_(float('-inf'))   # an anchor is not its own negative
        # made on the device: a copy from the host would make it wait for the forward pass
        positives = torch.arange(2 * n, device=z.device).roll(n)
        return F.cross_entropy(similarity, positives)


def without_autocast(tensor):
    """A region where autocast is off for `tensor`'s device: a loss computed in it stays in
    float32 (autocast would run z @ z.t() in bfloat16 even on float32 inputs)."""
    return torch.autocast(tensor.device.type, enabled=False)


def masked_cross_entropy(logits, labels, labelled):
    """Mean cross-entropy over the labelled rows, in float32; exactly zero when there are none."""
    with without_autocast(logits):
        losses = F.cross_entropy(logits.float(), labels.clamp(min=0), reduction='none')
        weights = labelled.float()
        return (losses * weights).sum() / weights.sum().clamp(min=1)


def pseudo_cross_entropy(logits, targets, confident, unlabelled):
    """Cross-entropy of `logits` against the pseudo-label `targets` on the confident
    unlabelled rows, divided by the number of unlabelled rows (so the term shrinks with
    the share above the threshold, as in FixMatch), in float32; zero without any."""
    with without_autocast(logits):
        losses = F.cross_entropy(logits.float(), targets.clamp(min=0), reduction='none')
        used = (confident & unlabelled).float()
        return (losses * used).sum() / unlabelled.float().sum().clamp(min=1)


def global_nt_xent(z1, z2, temperature=0.5):
    """nt_xent over the embeddings of every process, so that under torchrun the negatives
    span the global batch (the released code used each GPU's own batch only)."""
    from distributed import gather_with_grad
    return nt_xent(gather_with_grad(z1), gather_with_grad(z2), temperature)
