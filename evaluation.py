"""Evaluation: accuracy of a model's own head, and a linear classifier on frozen features.

Test clips are never augmented and never used to choose anything: the linear probe's
weight decay is chosen on the validation split.
"""
import contextlib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

PROBES = ('linear', 'mlp')
PROBE_WEIGHT_DECAYS = (1e-5, 1e-4, 1e-3, 1e-2)
PROBE_KINDS = {'linear': 'linear classifier', 'mlp': 'MLP probe (hidden 512, dropout 0.2)'}
PROBE_NAMES = {kind: f'{name} on frozen features, trained on the labelled clips'
               for kind, name in PROBE_KINDS.items()}


def head_name(regime):
    """What the model's own classification head is, for a run of `regime`."""
    return ('online linear probe (stop-gradient, trained with the encoder)'
            if regime == 'selfsupervised' else 'model classification head')


@torch.no_grad()
def representations(model, data, indices, device, amp_dtype, batch_size=256, augment=None):
    """The model's outputs for the given (sorted) clips in eval mode, on the CPU in float32:
    {'logits', 'h' (the encoder's features), and 'p' (the projection) where the model has
    one}. Unaugmented, unless `augment` (waves -> waves) is given."""
    was_training = model.training
    model.eval()
    parts = {}
    for start in range(0, len(indices), batch_size):
        waves, _, _ = data.batch(np.sort(indices[start:start + batch_size]), device)
        if augment is not None:
            waves = augment(waves)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype != torch.float32):
            out = model(waves)
        for key in ('logits', 'h', 'p'):
            if key in out:
                parts.setdefault(key, []).append(out[key].float().cpu())
    model.train(was_training)
    return {key: torch.cat(values) for key, values in parts.items()}


def outputs(model, data, indices, device, amp_dtype, batch_size=256):
    """The model's logits and 512-d features h for the given clips (unaugmented, eval
    mode), in their order."""
    out = representations(model, data, indices, device, amp_dtype, batch_size)
    return out['logits'], out['h']


@torch.no_grad()
def recalibrate_batchnorm(model, data, indices, device, amp_dtype, batches, batch_size):
    """Re-estimate every BatchNorm's running statistics as a plain average over up to
    `batches` batches of (unaugmented) training clips, with the current weights.

    The running averages kept during training trail the weights; with few steps per epoch
    (small labelled sets) the evaluation-mode network then predicts one class. The
    re-estimate changes nothing in training, which uses batch statistics.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if batches <= 0 or not norms:
        return
    was_training = model.training
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None                    # cumulative average
    model.train()
    order = np.random.default_rng(0).permutation(indices)[:batches * batch_size]
    for start in range(0, len(order), batch_size):
        waves, _, _ = data.batch(order[start:start + batch_size], device)
        if len(waves) < 2:
            break
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype != torch.float32):
            model(waves)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.train(was_training)


def _summary(predictions, labels, classes):
    correct = (predictions == labels).float()
    per_class = {name: float(correct[labels == i].mean()) if (labels == i).any() else None
                 for i, name in enumerate(classes)}
    return {'accuracy': float(correct.mean()) if len(correct) else 0.0, 'per_class': per_class}


def accuracy(model, data, indices, device, amp_dtype):
    """Accuracy of the model's own classification head on the clips `indices`."""
    indices = np.sort(indices)
    logits, _ = outputs(model, data, indices, device, amp_dtype)
    predictions = logits.argmax(1)
    return {**_summary(predictions, torch.from_numpy(data.labels[indices]), data.classes),
            'predictions': predictions, 'probabilities': torch.softmax(logits, dim=1)}


def per_file(probabilities, indices, data):
    """Accuracy over the files of the clips `indices` (windows of them, under
    --labelled_windows), each file predicted by the mean of its windows' class
    probabilities, as predict.py pools a file's windows: {'accuracy', 'files'}."""
    paths = np.array([data.paths[i] for i in indices])
    if not len(paths):
        return {'accuracy': 0.0, 'files': 0}
    files, first, inverse = np.unique(paths, return_index=True, return_inverse=True)
    pooled = torch.zeros(len(files), probabilities.shape[1]).index_add_(
        0, torch.from_numpy(inverse.reshape(-1)), probabilities.float())
    truth = torch.from_numpy(data.labels[np.asarray(indices)[first]])
    return {'accuracy': float((pooled.argmax(1) == truth).float().mean()), 'files': len(files)}


def confusion(predictions, labels, num_classes):
    """matrix[true][predicted] = number of clips."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    return matrix


def summarise(matrix, classes):
    total = matrix.sum()
    per_class = {name: (float(matrix[i, i] / matrix[i].sum()) if matrix[i].sum() else None)
                 for i, name in enumerate(classes)}
    return {'accuracy': float(np.trace(matrix) / total) if total else 0.0,
            'clips': int(total), 'per_class_accuracy': per_class}


def plot_confusion(matrix, classes, title, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    size = max(4.0, 0.45 * len(classes) + 2)
    figure, axis = plt.subplots(figsize=(size + 1, size))
    rows = matrix.sum(1, keepdims=True)
    shares = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=float), where=rows > 0)
    image = axis.imshow(shares, cmap='Blues', vmin=0, vmax=1)
    figure.colorbar(image, ax=axis, fraction=0.046, label='share of the true class')
    axis.set_xticks(range(len(classes)), classes, rotation=90 if len(classes) > 6 else 0, fontsize=8)
    axis.set_yticks(range(len(classes)), classes, fontsize=8)
    axis.set_xlabel('predicted')
    axis.set_ylabel('true')
    if len(classes) <= 20:
        for i in range(len(classes)):
            for j in range(len(classes)):
                if matrix[i, j]:
                    axis.text(j, i, str(matrix[i, j]), ha='center', va='center', fontsize=7,
                              color='white' if shares[i, j] > 0.5 else 'black')
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_confusion(predictions, labels, classes, base, title):
    """confusion matrix of `predictions` against `labels` as base.json and base.png; returns
    the image's path."""
    matrix = confusion(np.asarray(predictions), np.asarray(labels), len(classes))
    accuracy = summarise(matrix, classes)['accuracy']
    Path(f'{base}.json').write_text(json.dumps(
        {'classes': list(classes), 'rows': 'true class', 'columns': 'predicted class',
         'matrix': matrix.tolist(), 'accuracy': accuracy}, indent=1) + '\n')
    plot_confusion(matrix, list(classes), f'{title}\naccuracy {accuracy:.3f}', f'{base}.png')
    return Path(f'{base}.png')


def validate(model, data, labelled_indices, device, amp_dtype, diagnostics=True,
             probe_clips=2000):
    """The validation accuracy of the model's head and, with `diagnostics`, of linear probes
    fitted quickly (weight decay 1e-3, no search) on the frozen h and p of (up to
    `probe_clips` of) the labelled training clips. Side by side they tell a projection
    bottleneck (probe on p well below probe on h) and an under-optimised head (probe on p
    well above the head)."""
    val_indices = np.sort(data.splits['val'])
    val = representations(model, data, val_indices, device, amp_dtype)
    val_labels = torch.from_numpy(data.labels[val_indices])
    record = {'val_accuracy': float((val['logits'].argmax(1) == val_labels).float().mean())}
    if not diagnostics:
        return record
    chosen = np.sort(np.random.default_rng(0).permutation(labelled_indices)[:probe_clips])
    train = representations(model, data, chosen, device, amp_dtype)
    train_labels = torch.from_numpy(data.labels[chosen])
    for key in ('h', 'p'):
        if key in train:
            mean, std = train[key].mean(0), train[key].std(0, unbiased=False) + 1e-6
            probe = fit_linear((train[key] - mean) / std, train_labels, len(data.classes), 1e-3)
            with torch.no_grad():
                predicted = probe((val[key] - mean) / std).argmax(1)
            record[f'probe_{key}_val_accuracy'] = float((predicted == val_labels).float().mean())
    return record


def head_accuracy(model, data, indices, device, amp_dtype, augment=None):
    """The head's accuracy on the clips `indices`, clean or through `augment`."""
    indices = np.sort(indices)
    logits = representations(model, data, indices, device, amp_dtype, augment=augment)['logits']
    return float((logits.argmax(1) == torch.from_numpy(data.labels[indices])).float().mean())


@contextlib.contextmanager
def seeded(seed):
    """The global generator seeded for the block; the caller's random state (the training's,
    when probes are fitted at a validation) is restored after it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def fit_linear(features, labels, num_classes, weight_decay, steps=100):
    """Multinomial logistic regression on standardised features, full batch, L-BFGS."""
    with seeded(0):
        layer = torch.nn.Linear(features.shape[1], num_classes)
    optimizer = torch.optim.LBFGS(layer.parameters(), lr=1, max_iter=steps,
                                  line_search_fn='strong_wolfe')

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(layer(features), labels) + weight_decay * layer.weight.square().sum()
        loss.backward()
        return loss
    optimizer.step(closure)
    return layer


def probe_network(kind, in_features, num_classes):
    """The layers of a probe: one linear layer, or the released code's MLP."""
    if kind == 'linear':
        return torch.nn.Linear(in_features, num_classes)
    return torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(in_features, 512),
                               torch.nn.ReLU(), torch.nn.Dropout(0.2),
                               torch.nn.Linear(512, num_classes))


def fit_mlp(features, labels, num_classes, weight_decay, epochs=100, batch_size=256):
    """The released code's probe, 512-512-classes with dropout 0.2, here trained with Adam
    on the precomputed features."""
    with seeded(0):
        probe = probe_network('mlp', features.shape[1], num_classes)
        optimizer = torch.optim.Adam(probe.parameters(), lr=1e-3, weight_decay=weight_decay)
        for _ in range(epochs):
            for batch in torch.randperm(len(features)).split(batch_size):
                optimizer.zero_grad()
                F.cross_entropy(probe(features[batch]), labels[batch]).backward()
                optimizer.step()
    return probe.eval()


class Probe(torch.nn.Module):
    """A fitted probe: features standardised with the mean and standard deviation of the
    labelled training features it was fitted on, then its layer(s); returns logits."""

    def __init__(self, kind, network, mean, std, weight_decay, classes=()):
        super().__init__()
        self.kind, self.network, self.weight_decay = kind, network, weight_decay
        self.classes = list(classes)
        self.register_buffer('mean', mean)
        self.register_buffer('std', std)

    def forward(self, features):
        return self.network((features - self.mean) / self.std)

    def state(self, checkpoint_file='', epoch=None):
        """Plain tensors, strings and numbers (loads with torch.load(weights_only=True)),
        with the checkpoint whose features it was fitted on."""
        return {'kind': self.kind, 'network': self.network.state_dict(),
                'mean': self.mean.cpu(), 'std': self.std.cpu(),
                'weight_decay': self.weight_decay, 'classes': self.classes,
                'checkpoint': str(checkpoint_file), 'epoch': epoch}

    @classmethod
    def from_state(cls, state):
        network = probe_network(state['kind'], len(state['mean']), len(state['classes']))
        network.load_state_dict(state['network'])
        probe = cls(state['kind'], network, state['mean'], state['std'], state['weight_decay'],
                    state['classes']).eval()
        probe.epoch = state.get('epoch')        # of the checkpoint it was fitted on
        return probe


def probe_path(checkpoint_file):
    """Where the probe fitted on a checkpoint's features is saved: probe.pt beside
    checkpoint_best.pt (the one every run saves), <name>-probe.pt for another checkpoint."""
    checkpoint_file = Path(checkpoint_file)
    name = 'probe.pt' if checkpoint_file.name == 'checkpoint_best.pt' else f'{checkpoint_file.stem}-probe.pt'
    return checkpoint_file.parent / name


def save_probe(probe, path, checkpoint_file, epoch):
    torch.save(probe.state(Path(checkpoint_file).name, epoch), path)


def load_probe(path, device='cpu'):
    return Probe.from_state(torch.load(path, map_location=device, weights_only=True)).to(device)


def fit_probe(features, labels, num_classes, kind='linear'):
    """Fit a probe (linear, or the MLP) on features['train'] standardised with their own
    statistics, its weight decay chosen on features['val']: the Probe, in eval mode."""
    fit = fit_linear if kind == 'linear' else fit_mlp
    mean, std = features['train'].mean(0), features['train'].std(0, unbiased=False) + 1e-6
    scaled = {s: (features[s] - mean) / std for s in ('train', 'val')}
    best = None
    for weight_decay in PROBE_WEIGHT_DECAYS:
        network = fit(scaled['train'], labels['train'], num_classes, weight_decay)
        with torch.no_grad():
            accuracy = (network(scaled['val']).argmax(1) == labels['val']).float().mean().item()
        if best is None or accuracy > best[0]:
            best = (accuracy, weight_decay, network)
    _, weight_decay, network = best
    return Probe(kind, network.eval(), mean, std, weight_decay).eval()


def probe_predictions(features, labels, num_classes, kind='linear'):
    """Fit a probe (fit_probe) and predict every split given.
    Returns ({split: predicted labels}, chosen weight decay)."""
    probe = fit_probe(features, labels, num_classes, kind)
    with torch.no_grad():
        return {s: probe(f).argmax(1) for s, f in features.items()}, probe.weight_decay


def linear_probe(model, data, train_indices, device, amp_dtype, kind='linear'):
    """Fit a probe (linear, or the MLP) on frozen features of `train_indices` (the labelled
    clips), choose its weight decay on validation, report validation and test accuracy."""
    split = {'train': np.sort(train_indices), 'val': data.splits['val'], 'test': data.splits['test']}
    split = {s: i for s, i in split.items() if len(i)}
    features = {s: outputs(model, data, i, device, amp_dtype)[1] for s, i in split.items()}
    labels = {s: torch.from_numpy(data.labels[i]) for s, i in split.items()}
    probe = fit_probe(features, labels, len(data.classes), kind)
    probe.classes = list(data.classes)
    with torch.no_grad():
        logits = {s: probe(f) for s, f in features.items()}
    predictions = {s: v.argmax(1) for s, v in logits.items()}
    probabilities = {s: torch.softmax(v, dim=1) for s, v in logits.items()}
    val = _summary(predictions['val'], labels['val'], data.classes)
    test = (_summary(predictions['test'], labels['test'], data.classes) if 'test' in predictions
            else {'accuracy': 0.0, 'per_class': {}})
    return {'val_accuracy': val['accuracy'], 'test_accuracy': test['accuracy'],
            'per_class_test_accuracy': test['per_class'], 'weight_decay': probe.weight_decay,
            'test_predictions': predictions.get('test', torch.zeros(0, dtype=torch.long)),
            'probabilities': probabilities, 'probe': probe}


def final(model, data, labelled_indices, device, amp_dtype, regime, best_epoch, probe_kind='linear'):
    """The numbers of results.json for the chosen (best-on-validation) weights, the test
    predictions (in the order of data.splits['test']) of the classifier they report, and
    the fitted probe (a Probe, saved with the run for predict.py)."""
    head = {s: accuracy(model, data, data.splits[s], device, amp_dtype) for s in ('val', 'test')}
    probe = linear_probe(model, data, labelled_indices, device, amp_dtype, probe_kind)
    own_head = head_name(regime)
    probe_name = PROBE_NAMES[probe_kind]
    results = {'best_epoch': best_epoch,
               'head_val_accuracy': head['val']['accuracy'],
               'head_test_accuracy': head['test']['accuracy'],
               'head': own_head,
               'probe_val_accuracy': probe['val_accuracy'],
               'probe_test_accuracy': probe['test_accuracy'],
               'probe': probe_name, 'probe_weight_decay': probe['weight_decay']}
    if data.windowed:       # windows of longer files: each file's windows pooled, too
        for split in ('val', 'test'):
            for name, scores in (('head', head[split]['probabilities']),
                                 ('probe', probe['probabilities'].get(split))):
                if scores is not None:
                    pooled = per_file(scores, np.sort(data.splits[split]), data)
                    results[f'{name}_{split}_accuracy_per_file'] = pooled['accuracy']
                    results[f'{split}_files'] = pooled['files']
    reported = 'probe' if regime == 'selfsupervised' else 'head'
    for split in ('val', 'test'):
        if f'{reported}_{split}_accuracy_per_file' in results:
            results[f'{split}_accuracy_per_file'] = results[f'{reported}_{split}_accuracy_per_file']
    if regime == 'selfsupervised':      # the linear evaluation is this regime's result
        results.update(val_accuracy=probe['val_accuracy'], test_accuracy=probe['test_accuracy'],
                       per_class_test_accuracy=probe['per_class_test_accuracy'],
                       test_accuracy_from=probe_name)
        return results, probe['test_predictions'], probe['probe']
    results.update(val_accuracy=head['val']['accuracy'], test_accuracy=head['test']['accuracy'],
                   per_class_test_accuracy=head['test']['per_class'], test_accuracy_from=own_head)
    return results, head['test']['predictions'], probe['probe']
