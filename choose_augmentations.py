"""Choose CLAR's augmentations on your own data: short CLAR runs with each augmentation
alone, then with pairs of the best ones, ranked by validation accuracy (never test).

    python choose_augmentations.py --dataset=folder --data_root=labelled/ --unlabelled_root=pool/
    python choose_augmentations.py --dataset=fsdd --data_root=data/fsdd --label_fraction=0.1

It prints the ranking, writes it to <out_dir>/<name>/choice.md and choice.json, and ends
with the train.py command that uses the winner. Stopped (Ctrl-C) or cut short with
--max_runs, the same command continues: finished runs are kept, a stopped one resumes.

Options of the search:
    --candidates=A,B,...   the augmentations tried alone (default: every augmentation but
                           the _low/_high variants, which are fixed ranges of pitch_shift
                           and time_stretch)
    --pairs_from=3         then every pair of the best N (N(N-1)/2 runs); the paper's pair,
                           fade,time_mask, is always run beside them as the reference
    --out_dir=runs/choose  the runs go to <out_dir>/<name>/<run name>
    --name=NAME            the search's folder (default: <dataset>-f<label_fraction>)
    --max_runs=N           start or continue at most N runs, then stop (0 = all)
    --dry_run=True         print the runs of the first stage; change nothing

Every other --name=value is a train.py option given to every run. The runs are short
unless you say otherwise: --epochs=6 --encoder_width=0.25 --batch_size=64
--learning_rate=0.001 --warmup_epochs=1 --batchnorm_batches=8 are the defaults here (a
ranking from short runs is a guide: confirm the winner on a full run).
"""
import itertools
import json
import shlex
import sys
import time
from pathlib import Path

import augmentation
import config as config_module
import sweep
from config import UserError
from report import read_json

REFERENCE = 'fade,time_mask'          # the paper's best pair, train.py's default
CANDIDATES = ','.join(n for n in augmentation.NAMES if not n.endswith(('_low', '_high')))
SEARCH_DEFAULTS = {'candidates': CANDIDATES, 'pairs_from': 3, 'out_dir': 'runs/choose',
                   'name': '', 'max_runs': 0, 'dry_run': False}
SHORT_RUN = {'epochs': 6, 'encoder_width': 0.25, 'batch_size': 64, 'learning_rate': 0.001,
             'warmup_epochs': 1, 'batchnorm_batches': 8}
RESERVED = ('augmentations', 'run_name', 'out_dir', 'resume', 'init_from', 'stop_after_epochs',
            'stop_after_steps')


def parse(argv):
    _, search, given = config_module.parse_command(
        argv, SEARCH_DEFAULTS, 0, 'python choose_augmentations.py --dataset=... [--name=value ...]',
        __doc__, extras=True)
    for name in given:
        if name in RESERVED:
            raise UserError(f'--{name} is set by the search for each run; leave it out')
    names = [n.strip() for n in search['candidates'].split(',') if n.strip()]
    unknown = [n for n in names if n not in augmentation.NAMES]
    if unknown or len(names) < 2:
        raise UserError(f'--candidates: {"unknown " + repr(unknown[0]) if unknown else "give at least two"}; '
                        f'valid: {", ".join(augmentation.NAMES)}')
    if search['pairs_from'] < 2 or search['pairs_from'] > len(names):
        raise UserError(f'--pairs_from must be between 2 and the {len(names)} candidates, '
                        f'got {search["pairs_from"]}')
    return search, names, given


def options_for(augmentations, given):
    """A run's train.py options: the short-run defaults, the user's options, and this
    run's augmentations; an augmentation option (a range, a probability) goes only to the
    runs whose augmentations read it (train.py refuses one nobody reads)."""
    names = augmentations.split(',')
    read = {f'{n}_p' for n in names} | {k for n in names
                                         for k in augmentation.AUGMENTATIONS[n].keywords}
    options = {**SHORT_RUN, **given}
    options = {k: v for k, v in options.items() if k not in augmentation.DEFAULTS or k in read}
    options['augmentations'] = augmentations
    return options


def make_run(augmentations, given, defaults):
    """The sweep.Run of one set of augmentations, its options checked as train.py would
    before it starts (so that a bad option stops the search before the first run)."""
    import options as checks
    options = options_for(augmentations, given)
    sweep.check_options([sweep.Run('check', 'clar', options)])
    cfg = {**defaults, **{k: config_module.parse_value(k, str(v), config_module.option_type(k, defaults))
                          for k, v in options.items()}}
    checks.check(cfg, 'clar', set(options))
    name = sweep.run_name('clar', cfg['dataset'], cfg['label_fraction'], augmentations,
                          cfg['encoder'], cfg['seed'])
    return sweep.Run(name, 'clar', options)


def ranking(runs, search_dir):
    """[(augmentations, row)] of the finished runs, best validation accuracy first (the
    head's, as train.py picks its best epoch)."""
    rows = []
    for run in runs:
        results = read_json(search_dir / run.name / 'results.json')
        if results is None:
            continue
        rows.append((run.options['augmentations'], {
            'val_accuracy': results['val_accuracy'],
            'probe_val_accuracy': results.get('probe_val_accuracy'),
            'best_epoch': results.get('best_epoch'), 'minutes': results.get('seconds', 0) / 60,
            'run': run.name}))
    # ties (a small validation split) go to the better linear probe on validation
    return sorted(rows, key=lambda row: (-row[1]['val_accuracy'],
                                         -(row[1]['probe_val_accuracy'] or 0), row[0]))


def table(ranked, stage_of):
    lines = ['| rank | augmentations | stage | best validation accuracy | linear probe (val) | '
             'best epoch | minutes |', '|---|---|---|---|---|---|---|']
    for rank, (names, row) in enumerate(ranked, 1):
        probe = row['probe_val_accuracy']
        lines.append(f'| {rank} | {names} | {stage_of[names]} | {100 * row["val_accuracy"]:.1f} % | '
                     + (f'{100 * probe:.1f} %' if probe is not None else '') +
                     f' | {row["best_epoch"]} | {row["minutes"]:.1f} |')
    return '\n'.join(lines)


def stage(runs, search_dir, search, history):
    """Run (or continue) the runs of one stage; True when all of them finished."""
    if search['dry_run']:
        sweep.execute(runs, search_dir, dry_run=True, max_runs=search['max_runs'])
        return False
    outcomes, stop = sweep.run_locked(runs, search_dir, search['max_runs'], history)
    if stop:
        print(f'stopped by {stop}; run the same command again to continue')
        sys.exit(sweep.STOPPED)
    unfinished = [n for n, o in outcomes.items() if o not in ('skipped', 'finished')]
    if unfinished:
        print(f'{len(unfinished)} runs of this stage are not finished '
              f'({", ".join(sorted(set(outcomes[n] for n in unfinished)))}); run the same '
              f'command again to continue')
    return not unfinished


def main(argv=None):
    started = time.time()
    argv = sys.argv[1:] if argv is None else argv
    search, names, given = parse(argv)
    import train
    defaults = config_module.script_defaults(vars(train))
    singles = [make_run(n, given, defaults) for n in names]
    cfg = {**defaults, **{k: config_module.parse_value(k, str(v), config_module.option_type(k, defaults))
                          for k, v in given.items()}}
    name = search['name'] or f'{cfg["dataset"]}-f{cfg["label_fraction"]:g}'
    search_dir = (Path(search['out_dir']).expanduser() / name).resolve()
    history = {'argv': ['choose_augmentations.py', *argv]}
    print(f'choosing augmentations in {search_dir}: {len(singles)} alone, then pairs of the '
          f'best {search["pairs_from"]} and {REFERENCE} (the paper\'s pair)')
    if not stage(singles, search_dir, search, history):
        return 1 if not search['dry_run'] else 0
    best = [n for n, _ in ranking(singles, search_dir)][:search['pairs_from']]
    pairs = [','.join(p) for p in itertools.combinations(best, 2)]
    if REFERENCE not in pairs and set(REFERENCE.split(',')) <= set(augmentation.NAMES):
        pairs.append(REFERENCE)
    second = [make_run(p, given, defaults) for p in pairs]
    if not stage(second, search_dir, search, history):
        return 1
    every = singles + second
    stage_of = {**{r.options['augmentations']: 'alone' for r in singles},
                **{r.options['augmentations']: 'pair' for r in second}}
    ranked = ranking(every, search_dir)
    run_minutes = sum(row['minutes'] for _, row in ranked)
    winner = ranked[0][0]
    text = table(ranked, stage_of)
    chosen = [a for a in argv if not a.split('=', 1)[0][2:] in SEARCH_DEFAULTS]
    command = shlex.join(['python', 'train.py', *chosen, f'--augmentations={winner}'])
    (search_dir / 'choice.md').write_text(
        f'# Augmentations for {name}\n\nRanked by best validation accuracy (the model head) of '
        f'short CLAR runs; test accuracy is not used.\n\n{text}\n\nWinner: `{winner}`.\n\n'
        f'```bash\n{command}\n```\n\n{len(ranked)} runs, {run_minutes:.1f} run-minutes.\n')
    (search_dir / 'choice.json').write_text(json.dumps(
        {'winner': winner, 'ranking': [{'augmentations': n, 'stage': stage_of[n], **row}
                                       for n, row in ranked],
         'command': command, 'run_minutes': run_minutes}, indent=2))
    print(text)
    print(f'\nwinner on validation: {winner} ({100 * ranked[0][1]["val_accuracy"]:.1f} %, '
          f'{REFERENCE}: ' + next((f'{100 * row["val_accuracy"]:.1f} %' for n, row in ranked
                                   if n == REFERENCE), 'not run') + ')')
    print(f'{len(ranked)} runs took {run_minutes:.1f} run-minutes; this command '
          f'{(time.time() - started) / 60:.1f} min. Table: {search_dir / "choice.md"}')
    print(f'train with it:\n  {command}')
    return 0


if __name__ == '__main__':
    sys.exit(config_module.exit_on_user_error(main))
