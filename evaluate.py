"""Evaluate a trained run on its dataset's validation and test splits, without augmentation.

    python evaluate.py runs/clar-sc09-0.1-20250101-120000
    python evaluate.py runs/x/checkpoint_last.pt --split=test --device=cpu
    python evaluate.py runs/x --data_root=/data/speech_commands_v0.02 --out=eval/x

Loads the checkpoint (a run directory means its checkpoint_best.pt), reloads the dataset
from the run's saved configuration (--data_root and --cache_dir override where it lives),
and prints each split's accuracy and per-class accuracy (for a run trained on windows of
longer files, --labelled_windows, per window and per file: a file's windows' class
probabilities averaged, as predict.py does). It writes into the run directory
(or --out):
  evaluation.json              accuracies, per-class accuracies, which classifier, clips
  confusion_<split>.json       {classes, matrix}: matrix[true][predicted] = clips
  confusion_<split>.png
(prefixed with the checkpoint's name, e.g. checkpoint_last-evaluation.json, for a
checkpoint other than checkpoint_best.pt).

--classifier: head (the model's own classification head; for a self-supervised run that
is its online linear probe), probe (the run's probe, linear or --probe=mlp, fitted on the
frozen features of its labelled training clips, weight decay chosen on validation: the
number results.json has as probe_test_accuracy), or auto (probe for self-supervised runs, head
otherwise: the number results.json reports as test_accuracy). A run without its probe
(probe.pt, saved by every run since predict.py; <checkpoint name>-probe.pt for another
checkpoint) gets the probe fitted here, for predict.py.
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

import config as config_module
import dataset
import evaluation
import options
from checkpoint import load_model
from config import UserError
from rundir import checkpoint_path

DEFAULTS = {'split': 'val,test', 'device': 'auto', 'data_root': '', 'cache_dir': '',
            'out': '', 'classifier': 'auto', 'batch_size': 256}
SPLITS = ('train', 'val', 'test')


def load(path, device='cpu'):
    """(model in eval mode, checkpoint dict, checkpoint file) for a run dir or .pt file."""
    file = checkpoint_path(path)
    try:
        model, checkpoint = load_model(file, device)
    except UserError:                   # checkpoint.load refused the file
        raise
    except Exception as error:          # a dict of another shape: many types
        raise UserError(f'{file}: cannot load it as a checkpoint of this project '
                        f'({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ""})') from None
    return model, checkpoint, file


def load_data(cfg, data_root='', cache_dir=''):
    """The run's dataset, as its configuration loaded it (download never; the checks were
    made when the run started)."""
    return dataset.load(cfg['dataset'], data_root or cfg['data_root'], cache_dir or cfg['cache_dir'],
                        cfg['sample_rate'], cfg['clip_seconds'], False,
                        cfg.get('skip_bad_files', False), cfg.get('label_seed', 0),
                        **options.dataset_options(cfg), strict=False)


def evaluate(path, splits=('val', 'test'), device='auto', data_root='', cache_dir='',
             out='', classifier='auto', batch_size=256, verbose=True):
    """Evaluate a run directory or checkpoint; write evaluation.json and the confusion
    matrices; return the evaluation dict."""
    say = print if verbose else (lambda *a, **k: None)
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or not splits:
        raise UserError(f'--split: unknown split {unknown[0] if unknown else "(none)"}; '
                        f'valid: {", ".join(SPLITS)}, comma-separated')
    if classifier not in ('auto', 'head', 'probe'):
        raise UserError(f'--classifier={classifier}; valid: auto, head, probe')
    device = options.resolve_device(device)
    model, checkpoint, file = load(path, device)
    cfg, regime = checkpoint['config'], checkpoint['regime']
    if classifier == 'auto':
        classifier = 'probe' if regime == 'selfsupervised' else 'head'
    data = load_data(cfg, data_root, cache_dir)
    if list(data.classes) != list(checkpoint['classes']):
        raise UserError(f'the dataset\'s classes ({", ".join(data.classes[:5])}...) are not the '
                        f'ones this model was trained on ({", ".join(checkpoint["classes"][:5])}...): '
                        f'is --data_root the same dataset?')
    amp_dtype = options.autocast_dtype(cfg, device)
    wanted = {s: np.sort(data.splits[s]) for s in splits}
    empty = [s for s, i in wanted.items() if len(i) == 0]
    if empty:
        raise UserError(f'the {cfg["dataset"]} dataset has no {empty[0]} clips')
    needed = dict(wanted)
    weight_decay = None
    if classifier == 'probe':
        labelled = dataset.labelled_clips(data, cfg['label_fraction'], cfg.get('label_seed', 0))
        needed = {**wanted, 'train': labelled, 'val': np.sort(data.splits['val'])}
    results = {s: evaluation.outputs(model, data, i, device, amp_dtype, batch_size) for s, i in needed.items()}
    labels = {s: torch.from_numpy(data.labels[i]) for s, i in needed.items()}
    if classifier == 'probe':
        kind = cfg.get('probe', 'linear')
        probe = evaluation.fit_probe({s: r[1] for s, r in results.items()}, labels,
                                     len(data.classes), kind)
        probe.classes, weight_decay = list(data.classes), probe.weight_decay
        with torch.no_grad():
            logits = {s: probe(r[1]) for s, r in results.items()}
        save_missing_probe(probe, file, checkpoint.get('epoch'), say)
        source = (f'{evaluation.PROBE_KINDS[kind]} on frozen {results["val"][1].shape[1]}-d features, trained on '
                  f'the {len(needed["train"])} labelled clips (weight decay {weight_decay:g}, '
                  f'chosen on validation)')
    else:
        logits = {s: r[0] for s, r in results.items()}
        source = evaluation.head_name(regime)
    predictions = {s: v.argmax(1) for s, v in logits.items()}
    out_dir = Path(out).expanduser() if out else file.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = '' if file.name == 'checkpoint_best.pt' else f'{file.stem}-'
    report = {'checkpoint': str(file), 'regime': regime, 'dataset': cfg['dataset'],
              'epoch': checkpoint.get('epoch'), 'classifier': classifier,
              'accuracy_from': source, 'classes': list(data.classes), 'splits': {}}
    say(f'{file}: {regime} on {cfg["dataset"]}, epoch {checkpoint.get("epoch")}; '
        f'accuracy from the {source}')
    for split in splits:
        matrix = evaluation.confusion(predictions[split].numpy(), labels[split].numpy(), len(data.classes))
        summary = evaluation.summarise(matrix, data.classes)
        report['splits'][split] = summary
        report[f'{split}_accuracy'] = summary['accuracy']
        line = f'{split} accuracy {summary["accuracy"]:.4f} ({summary["clips"]} clips)'
        if data.windowed:       # windows of longer files: pooled per file, as predict.py does
            pooled = evaluation.per_file(torch.softmax(logits[split], dim=1), wanted[split], data)
            summary.update(per_file_accuracy=pooled['accuracy'], files=pooled['files'])
            report[f'{split}_accuracy_per_file'] = pooled['accuracy']
            line = (f'{split} accuracy {summary["accuracy"]:.4f} per window ({summary["clips"]} '
                    f'windows), {pooled["accuracy"]:.4f} per file ({pooled["files"]} files, '
                    f'their windows\' probabilities averaged)')
        say(line)
        say('  per class: ' + ', '.join(f'{c} {a:.3f}' if a is not None else f'{c} -'
                                         for c, a in summary['per_class_accuracy'].items()))
        base = out_dir / f'{prefix}confusion_{split}'
        Path(f'{base}.json').write_text(json.dumps(
            {'split': split, 'classes': list(data.classes), 'rows': 'true class',
             'columns': 'predicted class', 'matrix': matrix.tolist(), 'accuracy_from': source,
             'accuracy': summary['accuracy']}, indent=1) + '\n')
        evaluation.plot_confusion(matrix, list(data.classes),
                       f'{cfg["dataset"]} {split}: accuracy {summary["accuracy"]:.3f}\n{regime}, '
                       f'{classifier}', f'{base}.png')
    saved = None
    results_file = file.parent / 'results.json'
    if file.name == 'checkpoint_best.pt' and results_file.exists() and 'test' in splits:
        saved = json.loads(results_file.read_text())
        key = ('test_accuracy' if (classifier == 'probe') == (regime == 'selfsupervised')
               else 'probe_test_accuracy' if classifier == 'probe' else 'head_test_accuracy')
        if key in saved:
            report['results_json'] = {key: saved[key]}
            say(f'results.json {key}: {saved[key]:.4f}')
    path_json = out_dir / f'{prefix}evaluation.json'
    path_json.write_text(json.dumps(report, indent=1) + '\n')
    say(f'wrote {path_json} and {prefix}confusion_{{{",".join(splits)}}}.json/.png in {out_dir}')
    return report


def save_missing_probe(probe, file, epoch, say=print):
    """Save the probe beside its checkpoint when the run has none for the checkpoint's
    epoch (runs from before every run saved its probe, or another checkpoint), so that
    predict.py can use it; one fitted on the same weights is kept."""
    path = evaluation.probe_path(file)
    if path.exists() and saved_epoch(path) == epoch:
        return
    try:
        evaluation.save_probe(probe, path, file.name, epoch)
        say(f'saved the probe to {path}')
    except OSError as error:
        say(f'could not save the probe to {path} ({error})')


def saved_epoch(probe_file):
    """The epoch of the weights a saved probe was fitted on (None when unreadable)."""
    try:
        return evaluation.load_probe(probe_file).epoch
    except Exception:                   # a foreign or broken file: fit again
        return None


def parse_command_line(argv):
    plain, options = config_module.parse_command(
        argv, DEFAULTS, 1, 'python evaluate.py <checkpoint or run directory> [--split=val,test] '
        '[--device=auto] [--data_root=..] [--cache_dir=..] [--out=dir] '
        '[--classifier=auto|head|probe]', __doc__)
    return plain[0], options


def main(argv=None):
    path, options = parse_command_line(sys.argv[1:] if argv is None else argv)
    splits = tuple(s.strip() for s in options.pop('split').split(',') if s.strip())
    evaluate(path, splits, **options)
    return 0


if __name__ == '__main__':
    sys.exit(config_module.exit_on_user_error(main))
