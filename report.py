"""Collect finished runs into the paper's table and figures.

    python report.py runs/sweeps/quick                     # table printed, figures in img/
    python report.py runs --out=img --table=results.md     # every results.json under runs/
    python report.py results/a results/b --paired='A*,B*'  # several folders read as one

Reads every results.json under the folders (recursively), with the config.json and
metrics.jsonl beside it, and writes:
  - a markdown table, rows regime x dataset (x the settings that differ between runs of one
    regime and dataset, e.g. augmentations or encoder), columns label fractions; each cell
    is test accuracy / linear-probe test accuracy in %, mean +- standard deviation over
    seeds (and ESC test folds);
  - <out>/label_efficiency.png: test accuracy against label fraction, a line per regime,
    a panel per dataset;
  - <out>/convergence.png: validation accuracy per epoch (metrics.jsonl), CLAR against
    self-supervised;
  - <out>/augmentation_ablation.png: linear-probe test accuracy per augmentation set;
  - with --curves=path.png: every run's validation accuracy per epoch, its head's and the
    linear probes' on h and p (metrics.jsonl's diagnostics);
  - with --paired='A*,B*' (several pairs separated by ;): the runs whose names match B
    against those matching A, paired by seed, and the mean and spread of the differences,
    on the test split or, with --paired_on=val, on validation (where choices are made);
  - for runs with pseudo-labels, a second table: validation accuracy, the share of
    unlabelled clips above the threshold and the pseudo-labels' accuracy;
  - with --lines='NAME=A*,B*;NAME2=C*': test accuracy against label fraction, a line per
    NAME from the runs whose names match its patterns, whatever their settings (a pattern
    with a / matches the end of a run's path: closer_target/clar-*); a line at 100 % only
    is drawn level across (written to --lines_figure, default
    <out>/label_efficiency_lines.png);
  - with --runs='A*,B*': all of the above from the runs whose names match one of these
    shell patterns only (e.g. one seed's curves).
A figure without the runs it needs is skipped with a note.
"""
import fnmatch
import json
import math
import sys
from pathlib import Path

import numpy as np

import config as config_module
from config import UserError

DEFAULTS = {'out': 'img', 'table': '', 'curves': '', 'paired': '', 'paired_on': 'test', 'runs': '',
            'lines': '', 'lines_figure': ''}
REGIME_ORDER = ('supervised', 'selfsupervised', 'finetune', 'clar')
# what runs made before these options existed used (their config.json lacks them)
EARLIER_RUNS = {'encoder': 'resnet2d', 'augmentations': 'fade,time_mask', 'labelled_hop': 0.0,
                'skip_silent': False, 'small_classes': 'refuse'}
# runs differing only in these are the same experiment (replicates, or bookkeeping)
REPLICATES = ('seed', 'test_fold')
BOOKKEEPING = ('regime', 'dataset', 'label_fraction', 'run_name', 'out_dir', 'resume',
               'init_from', 'data_root', 'cache_dir', 'device', 'wandb', 'log_every',
               'stop_after_epochs', 'stop_after_steps', 'compile', 'download',
               'skip_bad_files', 'checkpoint_every', 'max_nonfinite_steps', 'inspect')
DEFAULT_PAIR = 'fade,time_mask'


# ---------------------------------------------------------------- collecting

def read_json(path):
    """The JSON in `path`, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def short_source(text):
    """test_accuracy_from in a few words."""
    text = text or ''
    if 'online' in text:
        return 'online probe'
    if 'head' in text:
        return 'head'
    if 'linear classifier' in text or 'linear probe' in text:
        return 'linear probe'
    if 'mlp' in text.lower():
        return 'MLP probe'
    return text or '?'


def regime_of(results, cfg):
    """The regime as the comparisons name it: a supervised run initialised from another
    run's encoder is 'finetune'."""
    regime = results.get('regime') or cfg.get('regime') or '?'
    if cfg.get('init_from'):
        return 'finetune' if regime == 'supervised' else f'{regime}+init'
    return regime


def labelled_windows(cfg):
    """'on' or 'off': whether the run cut its labelled files into windows (--labelled_windows:
    auto is on for --dataset=folder only; runs made before the option read first clips)."""
    value = str(cfg.get('labelled_windows', 'false'))
    if value.lower() == 'auto':
        return 'on' if cfg.get('dataset') == 'folder' else 'off'
    try:
        return 'on' if config_module.parse_value('labelled_windows', value, bool) else 'off'
    except UserError:
        return value


def collect(runs_dirs):
    """One record per results.json under `runs_dirs` (a folder, or a list of them)."""
    runs_dirs = [Path(d) for d in (runs_dirs if isinstance(runs_dirs, (list, tuple)) else [runs_dirs])]
    for runs_dir in runs_dirs:
        if not runs_dir.is_dir():
            raise UserError(f'{runs_dir}: no such folder')
    records = []
    for path in [p for d in runs_dirs for p in sorted(d.rglob('results.json'))]:
        results = read_json(path)
        if not isinstance(results, dict) or 'test_accuracy' not in results:
            print(f'note: {path} is not a results.json of a finished run; ignored')
            continue
        cfg = read_json(path.parent / 'config.json') or {}
        settings = {k: v for k, v in cfg.items() if k not in BOOKKEEPING and k not in REPLICATES}
        if 'label_seed' in settings and settings['label_seed'] == cfg.get('seed'):
            # label_seed drawn with the seed (a sweep's "label_seed": "seed"): a replicate too
            settings['label_seed'] = 'seed'
        for name, value in EARLIER_RUNS.items():
            settings.setdefault(name, value)
        settings['labelled_windows'] = labelled_windows(cfg)
        records.append({
            'run_dir': path.parent, 'results': results, 'config': cfg,
            'regime': regime_of(results, cfg),
            'dataset': results.get('dataset') or cfg.get('dataset', '?'),
            'fraction': float(results.get('label_fraction', cfg.get('label_fraction', 1.0))),
            'seed': results.get('seed', cfg.get('seed')),
            'test': float(results['test_accuracy']),
            'probe': (float(results['probe_test_accuracy'])
                      if results.get('probe_test_accuracy') is not None else None),
            'val': float(results.get('val_accuracy', float('nan'))),
            'probe_val': (float(results['probe_val_accuracy'])
                          if results.get('probe_val_accuracy') is not None else None),
            'source': short_source(results.get('test_accuracy_from')),
            'settings': settings, 'metrics': _metrics(path.parent)})
    _set_variants(records)
    return records


def _set_variants(records):
    """record['variant']: the settings that differ between runs of one regime and dataset
    (the union over all such groups), as ((name, value), ...)."""
    groups = {}
    for record in records:
        groups.setdefault((record['regime'], record['dataset']), []).append(record)
    varying = set()
    for members in groups.values():
        names = set().union(*(m['settings'] for m in members))
        for name in names:
            values = {json.dumps(m['settings'].get(name), sort_keys=True) for m in members}
            if len(values) > 1:
                varying.add(name)
    order = sorted(varying, key=lambda n: (n not in ('augmentations', 'encoder'), n))
    for record in records:
        record['variant'] = tuple((name, record['settings'].get(name)) for name in order)
    return order


def _format_value(name, value):
    if value is None:
        return '-'
    if name == 'augmentations':
        return '+'.join(n.strip() for n in str(value).split(',') if n.strip()) or 'none'
    if isinstance(value, float):
        return f'{value:g}'
    return str(value)


def variant_text(variant, with_names=True):
    return ', '.join((f'{n}={_format_value(n, v)}' if with_names and n not in
                      ('augmentations', 'encoder') else _format_value(n, v)) for n, v in variant)


def _row_key(record):
    regime = record['regime']
    rank = REGIME_ORDER.index(regime) if regime in REGIME_ORDER else len(REGIME_ORDER)
    return (record['dataset'], rank, regime, json.dumps(record['variant'], default=str))


def mean_std(values):
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return None, None, 0
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else None, len(array)


def _percent(mean, std):
    if mean is None:
        return '-'
    return f'{100 * mean:.1f}' + (f' ± {100 * std:.1f}' if std is not None else '')


# ---------------------------------------------------------------- the table

def rows(records):
    """{(dataset, regime, variant): {fraction: [records]}} in the table's order."""
    table = {}
    for record in sorted(records, key=_row_key):
        key = (record['dataset'], record['regime'], record['variant'])
        table.setdefault(key, {}).setdefault(record['fraction'], []).append(record)
    return table


def markdown_table(records):
    """The paper's layout: rows regime x dataset (x varying settings), columns label fractions."""
    if not records:
        return 'no finished runs (results.json) found\n'
    table = rows(records)
    fractions = sorted({r['fraction'] for r in records}, reverse=True)
    variant_names = [name for name, _ in records[0]['variant']]
    header = ['dataset', 'regime', *variant_names, 'test accuracy from', 'runs',
              *(f'{100 * f:g} % labels' for f in fractions)]
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for (dataset, regime, variant), cells in table.items():
        members = [r for group in cells.values() for r in group]
        sources = sorted({r['source'] for r in members})
        counts = sorted({len(group) for group in cells.values()})
        entries = []
        for fraction in fractions:
            group = cells.get(fraction, [])
            test = mean_std([r['test'] for r in group])
            probe = mean_std([r['probe'] for r in group])
            entries.append('' if not group else f'{_percent(*test[:2])} / {_percent(*probe[:2])}')
        lines.append('| ' + ' | '.join([
            dataset, regime, *(_format_value(n, v) for n, v in variant), ', '.join(sources),
            '-'.join(map(str, (counts[0], counts[-1]) if len(counts) > 1 else counts)),
            *entries]) + ' |')
    explanation = (
        'Test accuracy in %, each cell **test_accuracy / probe_test_accuracy**, mean ± sample '
        'standard deviation over seeds (and ESC test folds; "runs" = how many per cell). '
        'test_accuracy is the run\'s own result, from the source in "test accuracy from": '
        '"head" = the model\'s classification head (supervised, fine-tuned, CLAR), "linear '
        'probe" = a linear classifier on the frozen 512-d features fitted on the labelled '
        'clips (self-supervised). probe_test_accuracy is that probe (linear; the MLP probe '
        'for runs with --probe=mlp) for every regime. Weights chosen on the validation split; the test split is used once. '
        '"finetune" = supervised training initialised from a self-supervised run.')
    return explanation + '\n\n' + '\n'.join(lines) + '\n'


def pseudo_label_table(records):
    """For runs with pseudo-labels (train.py --pseudo_labels): per row of the main table
    and label fraction, the best validation accuracy, the share of unlabelled clips above
    the threshold and the pseudo-labels' accuracy on the hidden labels (mean ± std over
    seeds); '' when no run has them."""
    pseudo = [r for r in records if 'pseudo_share_confident' in r['results']]
    if not pseudo:
        return ''
    lines = ['| dataset | variant | labels | runs | best validation | share above the threshold '
             '| pseudo-label accuracy |', '|---|---|---|---|---|---|---|']
    for (dataset, _, variant), cells in rows(pseudo).items():
        for fraction, group in sorted(cells.items(), reverse=True):
            values = [mean_std([r['results'].get(k) for r in group]) for k in
                      ('val_accuracy', 'pseudo_share_confident', 'pseudo_accuracy')]
            lines.append(f'| {dataset} | {variant_text(variant)} | {100 * fraction:g} % | '
                         f'{len(group)} | ' + ' | '.join(_percent(*v[:2]) for v in values) + ' |')
    return ('\nPseudo-labels (train.py --pseudo_labels), over the steps with the term: the share '
            'of unlabelled clips whose weak view reached the threshold, and how many of those '
            'pseudo-labels were right, on the hidden labels.\n\n' + '\n'.join(lines) + '\n')


# ---------------------------------------------------------------- figures

def _figure(panels, width=5.0, height=3.6):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    columns = min(3, panels)
    rows_ = math.ceil(panels / columns)
    figure, axes = plt.subplots(rows_, columns, figsize=(width * columns, height * rows_),
                                squeeze=False)
    for axis in axes.flat[panels:]:
        axis.set_visible(False)
    return plt, figure, list(axes.flat[:panels])


def _save(plt, figure, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _line_label(regime, variant):
    text = variant_text(variant)
    return f'{regime} ({text})' if text else regime


def plot_label_efficiency(records, path):
    """Test accuracy against label fraction; a line per regime (and variant) with at
    least two fractions, a panel per dataset. Returns a note when there is nothing to draw."""
    lines = {}
    for (dataset, regime, variant), cells in rows(records).items():
        if len(cells) >= 2:
            lines.setdefault(dataset, []).append((_line_label(regime, variant), cells))
    if not lines:
        return 'label_efficiency.png skipped: no regime has runs at two or more label fractions'
    _draw_label_efficiency(lines, path, 'Label efficiency (test_accuracy; mean ± std over seeds)')


def named_lines(records, spec):
    """--lines='NAME=PATTERN,PATTERN;NAME=...': {dataset: [(NAME, {fraction: [records]})]},
    each line the runs whose names match one of its shell patterns, whatever their settings
    (e.g. CLAR at 10 % without and at 1 % with --labelled_per_batch, as one line)."""
    lines = {}                                   # {dataset: {name: {fraction: [records]}}}
    for part in filter(None, (p.strip() for p in spec.split(';'))):
        name, equals, patterns = (text.strip() for text in part.partition('='))
        patterns = [p.strip() for p in patterns.split(',') if p.strip()]
        if not equals or not name or not patterns:
            raise UserError(f'--lines: {part!r} is not NAME=PATTERN[,PATTERN...] '
                            "(lines separated by ';')")
        matched = [r for r in records if any(_matches(r['run_dir'], p) for p in patterns)]
        if not matched:
            raise UserError(f'--lines: no finished run matches {name!r} ({",".join(patterns)})')
        replicates = {}
        for record in matched:
            key = (record['dataset'], record['fraction'], record['seed'],
                   record['config'].get('test_fold'))
            if key in replicates:
                raise UserError(f'--lines: {name!r} matches two runs of {key[0]} at '
                                f'{100 * key[1]:g} % labels with seed {key[2]}: '
                                f'{replicates[key].name} and {record["run_dir"].name}')
            replicates[key] = record['run_dir']
            (lines.setdefault(record['dataset'], {}).setdefault(name, {})
             .setdefault(record['fraction'], []).append(record))
    if not lines:
        raise UserError("--lines: no lines given (NAME=PATTERN[,PATTERN...], separated by ';')")
    return {dataset: list(named.items()) for dataset, named in lines.items()}


def _matches(run_dir, pattern):
    """A run name's shell pattern; one with a / matches the end of the run's path (e.g.
    closer_target/clar-*, where two kept folders hold runs of the same name)."""
    if '/' in pattern:
        return fnmatch.fnmatch(Path(run_dir).as_posix(), '*/' + pattern.strip('/'))
    return fnmatch.fnmatch(Path(run_dir).name, pattern)


def plot_named_lines(records, spec, path):
    lines = named_lines(records, spec)
    _draw_label_efficiency(lines, path, 'Test accuracy (head; mean ± std over seeds)')


def _draw_label_efficiency(lines, path, title):
    """lines: {dataset: [(label, {fraction: [records]})]}: a panel per dataset."""
    plt, figure, axes = _figure(len(lines), width=6.0, height=4.2)
    for axis, (dataset, entries) in zip(axes, lines.items()):
        for label, cells in entries:
            fractions = sorted(cells)
            stats = [mean_std([r['test'] for r in cells[f]]) for f in fractions]
            counts = sorted({len(cells[f]) for f in fractions})
            drawn = axis.errorbar([100 * f for f in fractions], [100 * s[0] for s in stats],
                                  yerr=[100 * (s[1] or 0) for s in stats], marker='o',
                                  capsize=3, label=f'{label} (n={"/".join(map(str, counts))})')
            if fractions == [1.0]:     # every label: a level to read the others against
                axis.axhline(100 * stats[0][0], linestyle='--', linewidth=1,
                             color=drawn[0].get_color())
        axis.set_xscale('log')
        ticks = sorted({100 * f for _, cells in entries for f in cells})
        axis.set_xticks(ticks, [f'{t:g}' for t in ticks])
        axis.minorticks_off()
        axis.set_xlabel('labelled training clips (%)')
        axis.set_ylabel('test accuracy (%)')
        axis.set_title(dataset)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    _save(plt, figure, path)


def _metrics(run_dir):
    path = Path(run_dir) / 'metrics.jsonl'
    if not path.exists():
        return []
    epochs = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if 'val_accuracy' in record and 'epoch' in record:
            epochs.append(record)
    return epochs


def plot_convergence(records, path):
    """Validation accuracy per epoch (see `convergence_metric`), CLAR against self-supervised:
    per dataset, the settings both regimes share with the most runs; a line per regime and
    label fraction."""
    panels = {}
    for dataset in sorted({r['dataset'] for r in records}):
        mine = [r for r in records if r['dataset'] == dataset
                and r['regime'] in ('clar', 'selfsupervised') and r['metrics']]
        shared = ({r['variant'] for r in mine if r['regime'] == 'clar'}
                  & {r['variant'] for r in mine if r['regime'] == 'selfsupervised'})
        if not shared:
            continue
        variant = max(shared, key=lambda v: (sum(r['variant'] == v for r in mine), str(v)))
        panels[dataset] = (variant, [r for r in mine if r['variant'] == variant])
    if not panels:
        return ('convergence.png skipped: no dataset has both CLAR and self-supervised runs '
                'with metrics.jsonl')
    metric = convergence_metric([r for _, members in panels.values() for r in members])
    plt, figure, axes = _figure(len(panels))
    colours = {'clar': 'tab:red', 'selfsupervised': 'tab:blue'}
    styles = ['-', '--', ':', '-.']
    for axis, (dataset, (variant, members)) in zip(axes, panels.items()):
        fractions = sorted({r['fraction'] for r in members}, reverse=True)
        for regime in ('selfsupervised', 'clar'):
            for number, fraction in enumerate(fractions):
                group = [r for r in members if r['regime'] == regime and r['fraction'] == fraction]
                if not group:
                    continue
                curves = {}
                for record in group:
                    for epoch in record['metrics']:
                        curves.setdefault(epoch['epoch'], []).append(epoch[metric])
                epochs = sorted(curves)
                axis.plot(epochs, [100 * np.mean(curves[e]) for e in epochs],
                          styles[number % len(styles)], color=colours[regime],
                          label=f'{regime}, {100 * fraction:g} % labels (n={len(group)})')
        axis.set_xlabel('epoch')
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.set_ylabel('validation accuracy (%)')
        title = variant_text(variant)
        axis.set_title(dataset + (f'\n{title}' if title else ''), fontsize=9)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle(f'Convergence: {metric} per epoch, mean over seeds\n' + (
        '(a linear probe fitted on the frozen 512-d h of each regime, the labelled clips)'
        if metric == 'probe_h_val_accuracy' else
        '(CLAR: its head; self-supervised: its online linear probe)'), fontsize=9)
    _save(plt, figure, path)


def convergence_metric(records):
    """What the convergence figure compares: the linear probe fitted on h each epoch where
    every run has it (the same measure for both regimes), else val_accuracy (CLAR's head
    against the self-supervised run's online probe, for runs made before the probes)."""
    epochs = [epoch for record in records for epoch in record['metrics']]
    if epochs and all(epoch.get('probe_h_val_accuracy') is not None for epoch in epochs):
        return 'probe_h_val_accuracy'
    return 'val_accuracy'


def curve_lines(records):
    """The lines of plot_curves: (run number, label, epochs, accuracies in %, line style)
    for every run with metrics.jsonl: its head (solid) and, where metrics.jsonl has the
    diagnostics, the linear probes on h (dashed) and on p (dotted); for runs with
    pseudo-labels, how many of them were right (dash-dot) and the share of unlabelled clips
    above the threshold (sparse dots), both in %."""
    lines = []
    runs = sorted((r for r in records if r['metrics']), key=lambda r: (r['regime'], -r['fraction']))
    for number, record in enumerate(runs):
        epochs = [m['epoch'] for m in record['metrics']]
        variant = variant_text(record['variant'])
        name = (f'{record["regime"]} {record["dataset"]}, {100 * record["fraction"]:g} % labels'
                + (f' ({variant})' if variant else '') + f', seed {record["seed"]}')
        for key, what, style in (('val_accuracy', 'head', '-'),
                                 ('probe_h_val_accuracy', 'linear probe on h', '--'),
                                 ('probe_p_val_accuracy', 'linear probe on p', ':')):
            if all(key in m for m in record['metrics']):
                lines.append((number, f'{name}: {what}', epochs,
                              [100 * m[key] for m in record['metrics']], style))
        # pseudo-labels (train.py --pseudo_labels): from the epochs that had them
        for key, what, style in (('pseudo_accuracy', 'pseudo-labels right', '-.'),
                                 ('pseudo_share_confident', 'share above the threshold', (0, (1, 3)))):
            had = [m for m in record['metrics'] if key in m]
            if had:
                lines.append((number, f'{name}: {what}', [m['epoch'] for m in had],
                              [100 * m[key] for m in had], style))
    return lines


def plot_curves(records, path):
    """Every run's validation accuracy per epoch (curve_lines): where each curve stops
    rising, and how far the head trails its own features."""
    lines = curve_lines(records)
    if not lines:
        return 'curves skipped: no run has metrics.jsonl'
    one_run = len({number for number, *_ in lines}) == 1
    if one_run:     # the run's name once, in the title; a colour per line
        run_name = lines[0][1].rsplit(': ', 1)[0]
        lines = [(index, label.rsplit(': ', 1)[1], *rest)
                 for index, (_, label, *rest) in enumerate(lines)]
    many = len(lines) > 6        # a long legend goes beside the axes, not over the curves
    plt, figure, axes = _figure(1, width=11.5 if many else 7.5, height=4.5)
    colours = plt.rcParams['axes.prop_cycle'].by_key()['color']
    for number, label, epochs, values, style in lines:
        axes[0].plot(epochs, values, linestyle=style, color=colours[number % len(colours)],
                     label=label)
    axes[0].set_xlabel('epoch')
    axes[0].set_ylabel('validation accuracy (%)' + (', pseudo-labels (%)' if any(
        'pseudo' in label for _, label, _, _, _ in lines) else ''))
    axes[0].grid(alpha=0.3)
    if many:
        axes[0].legend(fontsize=6.5, loc='upper left', bbox_to_anchor=(1.01, 1.0))
    else:
        axes[0].legend(fontsize=7, loc='lower right')
    figure.suptitle('Validation accuracy per epoch: the head, and linear probes on the frozen '
                    'h and p' + (f'\n{run_name}' if one_run else ''), fontsize=9)
    _save(plt, figure, path)


def paired_differences(records, baseline, other, split='test'):
    """Runs whose names match the shell pattern `baseline` against those matching `other`,
    paired by seed: a markdown table of each pair's accuracy on `split` (test or val; head
    and probe) and the difference, and the mean and sample standard deviation of the
    differences."""
    head, probe = ('test', 'probe') if split == 'test' else ('val', 'probe_val')

    def by_seed(pattern):
        found = {}
        for record in records:
            if fnmatch.fnmatch(record['run_dir'].name, pattern):
                if record['seed'] in found:
                    raise UserError(f'--paired: two runs match {pattern!r} with seed {record["seed"]}')
                found[record['seed']] = record
        return found
    first, second = by_seed(baseline), by_seed(other)
    seeds = sorted(set(first) & set(second))
    if not seeds:
        raise UserError(f'--paired: no seed has a run matching {baseline!r} and one matching {other!r}')
    what = 'test' if split == 'test' else 'validation'
    lines = [f'| seed | {baseline}: {what} / probe | {other}: {what} / probe | '
             f'difference: {what} / probe |', '|---|---|---|---|']
    differences = []
    for seed in seeds:
        a, b = first[seed], second[seed]
        change = (b[head] - a[head], (b[probe] or 0) - (a[probe] or 0))
        differences.append(change)
        lines.append(f'| {seed} | {100 * a[head]:.1f} / {100 * (a[probe] or 0):.1f} | '
                     f'{100 * b[head]:.1f} / {100 * (b[probe] or 0):.1f} | '
                     f'{100 * change[0]:+.1f} / {100 * change[1]:+.1f} |')
    summary = []
    for k in (0, 1):
        mean, std, _ = mean_std([100 * d[k] for d in differences])
        summary.append(f'{mean:+.1f}' + (f' ± {std:.1f}' if std is not None else ''))
    lines.append(f'| mean ± std ({len(seeds)} pairs) | | | {summary[0]} / {summary[1]} |')
    return '\n'.join(lines)


def plot_augmentation_ablation(records, path):
    """Linear-probe test accuracy (test accuracy where a run has no probe) per augmentation
    set, a panel per (regime, dataset, label fraction, other settings) with two or more sets."""
    groups = {}
    for record in records:
        rest = tuple((n, v) for n, v in record['variant'] if n != 'augmentations')
        key = (record['regime'], record['dataset'], record['fraction'], rest)
        augmentations = record['settings'].get('augmentations')
        groups.setdefault(key, {}).setdefault(augmentations, []).append(record)
    panels = {k: v for k, v in groups.items() if len(v) >= 2}
    if not panels:
        return ('augmentation_ablation.png skipped: no runs that differ only in their '
                'augmentations')
    plt, figure, axes = _figure(len(panels), width=6.0)
    for axis, ((regime, dataset, fraction, rest), sets) in zip(axes, sorted(panels.items(), key=str)):
        stats = []
        for augmentations, group in sets.items():
            probe = [r['probe'] if r['probe'] is not None else r['test'] for r in group]
            mean, std, n = mean_std(probe)
            stats.append((mean, std or 0.0, _format_value('augmentations', augmentations),
                          augmentations == DEFAULT_PAIR))
        stats.sort(key=lambda s: -s[0])
        positions = np.arange(len(stats))
        bars = axis.bar(positions, [100 * s[0] for s in stats], yerr=[100 * s[1] for s in stats],
                        capsize=3, color=['tab:red' if s[3] else 'tab:gray' for s in stats])
        axis.bar_label(bars, fmt='%.1f', fontsize=8, padding=2)
        axis.set_xticks(positions, [s[2] for s in stats], rotation=45, ha='right', fontsize=8)
        axis.set_ylabel('linear-probe test accuracy (%)')
        axis.set_ylim(0, min(100, max(100 * (s[0] + s[1]) for s in stats)) + 8)  # bars from zero
        extra = variant_text(rest)
        axis.set_title(f'{regime}, {dataset}, {100 * fraction:g} % labels'
                       + (f'\n{extra}' if extra else ''), fontsize=9)
        axis.grid(axis='y', alpha=0.3)
    figure.suptitle('Augmentation ablation: probe_test_accuracy, mean ± std over seeds\n'
                    '(red: fade + time mask)', fontsize=9)
    _save(plt, figure, path)


# ---------------------------------------------------------------- command line

def only_runs(records, patterns):
    """The records whose run name matches one of the comma-separated shell patterns."""
    patterns = [p.strip() for p in patterns.split(',') if p.strip()]
    kept = [r for r in records if any(fnmatch.fnmatch(r['run_dir'].name, p) for p in patterns)]
    if not kept:
        raise UserError(f'--runs={",".join(patterns)}: no finished run has a name that matches; '
                        f'the names are the run folders (e.g. {records[0]["run_dir"].name})'
                        if records else '--runs: there are no finished runs to choose from')
    return kept


def parse_command_line(argv):
    plain, options = config_module.parse_command(
        argv, DEFAULTS, None, 'python report.py <runs folder> [<runs folder> ...] [--out=img] '
        '[--table=path.md] [--curves=path.png] [--runs=PATTERNS] [--lines=NAME=PATTERNS;...]', __doc__)
    return plain, options


def main(argv=None):
    runs_dirs, options = parse_command_line(sys.argv[1:] if argv is None else argv)
    records = collect(runs_dirs)
    runs_dir = ' '.join(runs_dirs)
    if options['runs']:
        records = only_runs(records, options['runs'])
        runs_dir += f' matching {options["runs"]}'
    if options['paired_on'] not in ('test', 'val'):
        raise UserError(f'--paired_on must be test or val, got {options["paired_on"]}')
    table = markdown_table(records) + pseudo_label_table(records)
    print(f'{len(records)} finished runs under {runs_dir}\n')
    print(table)
    if options['table']:
        path = Path(options['table'])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'# Results: {runs_dir}\n\n{table}')
        print(f'table written to {path}')
    if not records:
        return 0
    out = Path(options['out'])
    for name, plot in (('label_efficiency.png', plot_label_efficiency),
                       ('convergence.png', plot_convergence),
                       ('augmentation_ablation.png', plot_augmentation_ablation)):
        note = plot(records, out / name)
        print(f'note: {note}' if note else f'figure written to {out / name}')
    for pair in filter(None, options['paired'].split(';')):
        baseline, _, other = pair.partition(',')
        print(f'\npaired by seed: {other} against {baseline}\n')
        print(paired_differences(records, baseline.strip(), other.strip(), options['paired_on']))
    if options['lines']:
        path = Path(options['lines_figure'] or out / 'label_efficiency_lines.png')
        plot_named_lines(records, options['lines'], path)
        print(f'figure written to {path}')
    if options['curves']:
        note = plot_curves(records, Path(options['curves']))
        print(f'note: {note}' if note else f'figure written to {options["curves"]}')
    return 0


if __name__ == '__main__':
    sys.exit(config_module.exit_on_user_error(main))
