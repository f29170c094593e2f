"""Run a named matrix of experiments, one run after another, resumably.

    python sweep.py quick                                # configs/quick.json
    python sweep.py label_fractions --seeds=0,1,2 --dry_run=True
    python sweep.py configs/my_sweep.json --device=cuda  # extra --name=value: every run
    python sweep.py quick --data_roots=fsdd:/data/fsdd,sc09:/data/speech_commands_v0.02

Sweep options (everything else is passed to every run as it is):
    --seeds=0,1,2        replace the configuration's seeds
    --dry_run=True       print the plan (what each run would do, and its command); change nothing
    --out_dir=DIR        runs go to DIR/<configuration name>/<run name> (default runs/sweeps)
    --max_runs=N         start or continue at most N runs, then stop (0 = all)
    --only=PATTERNS      only the runs whose name matches one of these comma-separated
                         shell patterns, e.g. --only='*-fsdd-*'
    --data_roots=D:PATH  per-dataset --data_root, comma-separated (wins over --data_root)

A configuration (configs/<name>.json) is a matrix:

    {"description": "...",
     "regimes": ["supervised", "selfsupervised", "clar", "finetune"],
     "datasets": ["synth", "fsdd"], "label_fractions": [1.0, 0.1],
     "augmentations": ["fade,time_mask"], "encoders": ["resnet2d"], "seeds": [0],
     "options": {"epochs": 10},                            # every run
     "dataset_options": {"fsdd": {"data_root": "data/fsdd"}},
     "regime_options": {"supervised": {"epochs": 20}},
     "matrices": [{...}, {...}]}                            # optional: a union of matrices,
                                                            # each overriding the keys above
An option whose value is a list (in options, dataset_options or regime_options) is one
more axis, named in the run name (e.g. "test_fold": [1, 2, 3, 4, 5]). "label_seed": "seed"
pairs the labelled subset with the seed (seed 1 draws label_seed 1), so that seeds vary
the labelled clips too. The regime
"finetune" is two runs: selfsupervised.py (the "selfsupervised-..." run of the same
settings), then supervised.py --init_from=<that run> (the "finetune-..." run).

Every run has a deterministic name, regime-dataset-fFRACTION-AUGMENTATIONS-ENCODER-sSEED,
e.g. clar-synth-f0.1-fade+time_mask-resnet2d-s0. For each run, in order:
results.json exists -> skipped; the run directory exists with checkpoint_last.pt ->
continued with --resume; exists with nothing to resume -> moved aside to
<name>.failed-<time> (never deleted) and started again; otherwise started. A finished or
resumable run whose saved config.json disagrees with the planned settings is left alone
and reported as a conflict. Each run's output goes to <out_dir>/<config>/<name>.log.
Ctrl-C (or SIGTERM) is passed to the running run, which checkpoints; run the same
command again to continue.
"""
import fcntl
import fnmatch
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import config as config_module
from config import UserError
from report import read_json, short_source

ROOT = Path(__file__).resolve().parent
CONFIG_DIR = ROOT / 'configs'
SCRIPTS = {'clar': 'train.py', 'supervised': 'supervised.py',
           'selfsupervised': 'selfsupervised.py', 'finetune': 'supervised.py'}
# matrix keys (lists) -> the option each sets
AXES = {'regimes': 'regime', 'datasets': 'dataset', 'label_fractions': 'label_fraction',
        'augmentations': 'augmentations', 'encoders': 'encoder', 'seeds': 'seed'}
MATRIX_KEYS = (*AXES, 'options', 'dataset_options', 'regime_options')
CONFIG_KEYS = (*MATRIX_KEYS, 'description', 'notes', 'matrices')
# options the sweep sets itself: a configuration's options and the command line may not
RESERVED = ('regime', 'dataset', 'label_fraction', 'augmentations', 'encoder', 'seed',
            'run_name', 'out_dir', 'resume', 'init_from')
# differences from a saved config.json that do not make it another run
NOT_COMPARED = ('run_name', 'out_dir', 'resume', 'init_from')
SWEEP_DEFAULTS = {'seeds': '', 'dry_run': False, 'out_dir': 'runs/sweeps', 'max_runs': 0,
                  'only': '', 'data_roots': ''}
STOPPED = 3             # exit status when a signal stopped the sweep (as the scripts do)


@dataclass
class Run:
    name: str
    regime: str                 # clar | supervised | selfsupervised | finetune
    options: dict               # --name=value for the script (JSON values or strings)
    after: str = ''             # the run whose directory is this run's --init_from
    notes: list = field(default_factory=list)

    @property
    def script(self):
        return SCRIPTS[self.regime]


# ---------------------------------------------------------------- configurations

def find_config(name):
    """A configuration by name (configs/<name>.json) or path."""
    path = Path(name).expanduser()
    candidates = [path] if path.suffix == '.json' or path.exists() else []
    candidates.append(CONFIG_DIR / f'{name}.json')
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in CONFIG_DIR.glob('*.json'))
    raise UserError(f'no sweep configuration {name!r}: give a path to a .json file or one of '
                    f'{", ".join(known) or "(none in configs/)"}')


def read_config(path):
    path = Path(path)
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f'{path}: not valid JSON ({error})') from None
    if not isinstance(cfg, dict):
        raise UserError(f'{path}: a sweep configuration is a JSON object')
    for entry in [cfg, *cfg.get('matrices', [])]:
        unknown = sorted(set(entry) - set(CONFIG_KEYS if entry is cfg else MATRIX_KEYS))
        if unknown:
            raise UserError(f'{path}: unknown key {unknown[0]!r}; valid: '
                            f'{", ".join(CONFIG_KEYS)} (inside "matrices": {", ".join(MATRIX_KEYS)})')
    return cfg


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _merge(base, entry):
    """The matrix `entry` over the configuration's top-level keys; option maps are merged
    one level deep (an entry's dataset_options.fsdd adds to the top level's)."""
    merged = {k: base[k] for k in MATRIX_KEYS if k in base}
    for key, value in entry.items():
        if key == 'options':
            merged[key] = {**merged.get(key, {}), **value}
        elif key in ('dataset_options', 'regime_options'):
            combined = {name: dict(options) for name, options in merged.get(key, {}).items()}
            for name, options in value.items():
                combined[name] = {**combined.get(name, {}), **options}
            merged[key] = combined
        else:
            merged[key] = value
    return merged


def _text(value):
    """An option value as the scripts read it on the command line."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    return str(value)


def _slug(value):
    text = _text(value)
    if isinstance(value, float):
        text = f'{value:g}'
    return re.sub(r'[^A-Za-z0-9._=+-]', '_', text.replace(',', '+')) or 'none'


def run_name(regime, dataset, fraction, augmentations, encoder, seed, extra=()):
    """The deterministic name of a run, e.g. clar-synth-f0.1-fade+time_mask-resnet2d-s0;
    `extra` (name, value) axes go before the seed, e.g. ...-resnet2d-test_fold3-s0."""
    names = '+'.join(n.strip() for n in str(augmentations).split(',') if n.strip()) or 'none'
    parts = [regime, dataset, f'f{float(fraction):g}', _slug(names), encoder,
             *(f'{key}{_slug(value)}' for key, value in extra), f's{seed}']
    return '-'.join(str(p) for p in parts)


def _check_options(options, where):
    for name in options:
        if name in RESERVED:
            raise UserError(f'{where}: --{name} is set by the sweep itself (it is an axis of '
                            f'the matrix or the run\'s location); change the configuration\'s '
                            f'{", ".join(AXES)} instead, or pick runs with --seeds and --only')


def plan(cfg, seeds=None, extras=None, data_roots=None, sweep_dir=Path('.')):
    """The runs of a configuration, in order, each with its options.

    `seeds` replaces the configuration's seeds; `extras` (name -> text) go to every run
    and win over the configuration; `data_roots` (dataset -> path) win over both.
    Runs come out seed by seed (all of seed 0 first), and a fine-tuning run comes after
    its pre-training run."""
    extras, data_roots = dict(extras or {}), dict(data_roots or {})
    _check_options(extras, 'command line')
    runs = {}
    for entry in cfg.get('matrices') or [{}]:
        matrix = _merge(cfg, entry)
        for key in ('regimes', 'datasets'):
            if not matrix.get(key):
                raise UserError(f'sweep configuration: "{key}" is missing or empty')
        regimes = _as_list(matrix['regimes'])
        unknown = [r for r in regimes if r not in SCRIPTS]
        if unknown:
            raise UserError(f'sweep configuration: unknown regime {unknown[0]!r}; valid: '
                            f'{", ".join(SCRIPTS)}')
        options = matrix.get('options', {})
        _check_options(options, 'sweep configuration "options"')
        for name, group in [*matrix.get('dataset_options', {}).items(),
                            *matrix.get('regime_options', {}).items()]:
            _check_options(group, f'sweep configuration options of {name}')
        axes = [_as_list(matrix[k]) if k in matrix else None for k in
                ('seeds', 'datasets', 'encoders', 'augmentations', 'label_fractions')]
        # an axis left out takes the value each regime's script sets (None until then)
        seed_list = seeds if seeds is not None else axes[0] or [config_module.seed]
        encoders, augmentation_sets, fractions = (axis or [None] for axis in axes[2:])
        for seed, dataset, encoder, augmentations, fraction in itertools.product(
                seed_list, axes[1], encoders, augmentation_sets, fractions):
            settings = dict(dataset=dataset, label_fraction=fraction,
                            augmentations=augmentations, encoder=encoder, seed=seed)
            for regime in regimes:
                if regime != 'finetune':
                    for run, _ in _expand(regime, matrix, settings, extras, data_roots):
                        _add(runs, run)
                    continue
                pretraining = list(_expand('selfsupervised', matrix, settings, extras, data_roots))
                for run, values in _expand('finetune', matrix, settings, extras, data_roots):
                    matches = [p for p, p_values in pretraining
                               if all(values.get(k, v) == v for k, v in p_values.items())]
                    if len(matches) != 1:
                        raise UserError(f'sweep configuration: cannot tell which self-supervised '
                                        f'run {run.name} fine-tunes ({len(matches)} match); give '
                                        f'the fine-tuning runs the same list-valued options')
                    _add(runs, matches[0])
                    run.after = matches[0].name
                    run.options['init_from'] = str(Path(sweep_dir) / run.after)
                    _add(runs, run)
    return list(runs.values())


def _expand(regime, matrix, settings, extras, data_roots):
    """The runs of one cell of the matrix, each with the values of its list-valued options:
    one run, or several when an option is a list."""
    dataset = settings['dataset']
    settings = {name: script_default(regime, name) if value is None else value
                for name, value in settings.items()}
    options = {**matrix.get('options', {}),
               **matrix.get('dataset_options', {}).get(dataset, {}),
               **matrix.get('regime_options', {}).get(regime, {})}
    lists = sorted(name for name, value in options.items() if isinstance(value, list))
    for values in itertools.product(*(options[name] for name in lists)):
        chosen = {**options, **dict(zip(lists, values)), **settings, **extras}
        if chosen.get('label_seed') == 'seed':
            chosen['label_seed'] = settings['seed']
        if dataset in data_roots:
            chosen['data_root'] = data_roots[dataset]
        name = run_name(regime, dataset, settings['label_fraction'], settings['augmentations'],
                        settings['encoder'], settings['seed'], list(zip(lists, values)))
        yield Run(name, regime, chosen), dict(zip(lists, values))


def script_default(regime, name):
    """The default of option `name` at the top of the regime's script."""
    import importlib
    module = importlib.import_module(Path(SCRIPTS[regime]).stem)
    return config_module.script_defaults(vars(module))[name]


def _add(runs, run):
    existing = runs.get(run.name)
    if existing is None:
        runs[run.name] = run
    elif existing.options != run.options or existing.regime != run.regime:
        differ = sorted(k for k in set(existing.options) | set(run.options)
                        if existing.options.get(k) != run.options.get(k))
        raise UserError(f'sweep configuration: run {run.name} appears twice with different '
                        f'options ({", ".join(differ) or "regime"}); give one of them another '
                        f'value of an axis, or the same options')


def check_options(runs):
    """Refuse, before anything runs, an option its script does not know or a value of the
    wrong type (the scripts' own defaults decide, so new options need no change here)."""
    import difflib
    import importlib
    defaults = {}
    for run in runs:
        if run.script not in defaults:
            module = importlib.import_module(Path(run.script).stem)
            defaults[run.script] = config_module.script_defaults(vars(module))
        known = defaults[run.script]
        for name, value in run.options.items():
            if name not in known:
                close = difflib.get_close_matches(name, known, n=3)
                raise UserError(f'run {run.name}: {run.script} has no option --{name}'
                                + (f' (did you mean {", ".join("--" + c for c in close)}?)'
                                   if close else ''))
            config_module.parse_value(name, _text(value), config_module.option_type(name, known))


def command(run, sweep_dir, action):
    """The command line that starts (or, for action 'resume', continues) a run."""
    script = str(ROOT / run.script)
    if action == 'resume':
        from options import RESUMABLE_OVERRIDES
        kept = {k: v for k, v in run.options.items() if k in RESUMABLE_OVERRIDES}
        return [sys.executable, script, f'--resume={Path(sweep_dir) / run.name}',
                *(f'--{k}={_text(v)}' for k, v in kept.items())]
    return [sys.executable, script, *(f'--{k}={_text(v)}' for k, v in run.options.items()),
            f'--out_dir={sweep_dir}', f'--run_name={run.name}']


# ---------------------------------------------------------------- what each run needs

def conflicts(run, run_dir):
    """Planned options that disagree with the run's saved config.json: 'name saved!=planned'."""
    saved = read_json(run_dir / 'config.json')
    if saved is None:
        return []
    from options import RESUMABLE_OVERRIDES
    found = []
    for name, planned in run.options.items():
        if name in NOT_COMPARED or name in RESUMABLE_OVERRIDES or name not in saved:
            continue
        value = saved[name]
        try:
            same = config_module.parse_value(name, _text(planned), type(value)) == value
        except UserError:
            same = False
        if not same:
            found.append(f'{name} {_text(value)}!={_text(planned)}')
    return found


def action_for(run_dir):
    """skip (finished), resume, restart (moved aside first) or start."""
    run_dir = Path(run_dir)
    if (run_dir / 'results.json').exists():
        return 'skip'
    if run_dir.is_dir() and (run_dir / 'checkpoint_last.pt').exists() \
            and (run_dir / 'config.json').exists():
        return 'resume'
    if run_dir.exists() or run_dir.is_symlink():
        return 'restart'
    return 'start'


def move_aside(run_dir):
    """Rename an unusable run directory to <name>.failed-<time> (never delete it)."""
    stamp = time.strftime('%Y%m%d-%H%M%S')
    for attempt in range(1000):
        target = run_dir.with_name(f'{run_dir.name}.failed-{stamp}' + (f'-{attempt}' if attempt else ''))
        if not target.exists():
            os.rename(run_dir, target)
            return target
    raise UserError(f'cannot find a free name to move {run_dir} aside')


def summary(run_dir, with_time=True):
    """One line about a run's outcome, from results.json (or status.json)."""
    results = read_json(run_dir / 'results.json')
    if results:
        short = short_source(results.get('test_accuracy_from'))
        probe = results.get('probe_test_accuracy')
        return (f'test {results.get("test_accuracy", float("nan")):.4f} ({short})'
                + (f', probe {probe:.4f}' if probe is not None else '')
                + (f', {results["seconds"] / 60:.1f} min' if with_time and 'seconds' in results else ''))
    status = read_json(run_dir / 'status.json') or {}
    detail = status.get('error') or status.get('reason') or ''
    return f'{status.get("status", "no status")}{": " + detail if detail else ""}'


# ---------------------------------------------------------------- running

class Launcher:
    """Runs one command at a time with its output appended to a log file. The child runs
    in its own session; SIGINT and SIGTERM sent to the sweep are passed on to it (once:
    it checkpoints and stops; twice: it stops at once) and stop the sweep after it."""

    def __init__(self, keep_fds=()):
        self.process = None
        self.stop = None
        self.keep_fds = tuple(keep_fds)

    def forward(self, number, frame):
        self.stop = signal.Signals(number).name
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(number)

    def __call__(self, command, log_path):
        with open(log_path, 'a') as log:
            log.write(f'\n==== {time.strftime("%Y-%m-%d %H:%M:%S")} {shlex.join(command)}\n')
            log.flush()
            env = {**os.environ, 'PYTHONUNBUFFERED': '1'}
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=env,
                                            start_new_session=True, pass_fds=self.keep_fds)
            try:
                return self.process.wait()
            finally:
                self.process = None


def execute(runs, sweep_dir, launch=None, max_runs=0, dry_run=False, out=print):
    """Do what each run needs, in order. Returns {name: outcome}: skipped, finished, failed,
    conflict, blocked (its pre-training did not finish), not run (--max_runs), stopped
    (exited without results, resumable), not started (the sweep was stopped), or with
    dry_run 'would <action>'. `launch(command, log_path) -> exit status`; a `stop`
    attribute that becomes true stops the sweep after the current run."""
    sweep_dir = Path(sweep_dir)
    outcomes, launched = {}, 0
    width = len(str(len(runs)))
    for number, run in enumerate(runs, 1):
        run_dir = sweep_dir / run.name
        head = f'[{number:>{width}}/{len(runs)}] {run.name}'
        if getattr(launch, 'stop', None):
            outcomes[run.name] = 'not started'
            continue
        action = action_for(run_dir)
        if action in ('skip', 'resume'):
            differ = conflicts(run, run_dir)
            if differ:
                outcomes[run.name] = 'conflict'
                out(f'{head}: CONFLICT, {run_dir} exists with other settings '
                    f'({"; ".join(differ)}); left alone: move it, or use another --out_dir')
                continue
        if action == 'skip':
            outcomes[run.name] = 'skipped'
            out(f'{head}: done already, {summary(run_dir)}')
            continue
        if run.after and outcomes.get(run.after) not in ('skipped', 'finished') and not dry_run:
            outcomes[run.name] = 'blocked'
            out(f'{head}: not run, its pre-training run {run.after} did not finish')
            continue
        if max_runs and launched >= max_runs:
            outcomes[run.name] = 'not run'
            continue
        launched += 1
        log_path = sweep_dir / f'{run.name}.log'
        line = command(run, sweep_dir, 'resume' if action == 'resume' else 'start')
        if dry_run:
            outcomes[run.name] = f'would {action}'
            what = {'start': 'start', 'resume': 'continue (--resume)',
                    'restart': f'move {run_dir.name} aside to {run_dir.name}.failed-<time>, then start'}
            out(f'{head}: would {what[action]}\n    {shlex.join(line)}')
            continue
        if action == 'restart':
            moved = move_aside(run_dir)
            out(f'{head}: moved the unfinished run without a checkpoint to {moved.name}')
        started = time.time()
        out(f'{head}: {"continuing" if action == "resume" else "starting"} ... (log: {log_path})')
        code = launch(line, log_path)
        minutes = (time.time() - started) / 60
        if (run_dir / 'results.json').exists():
            outcomes[run.name] = 'finished'
            out(f'{head}: finished in {minutes:.1f} min, {summary(run_dir, with_time=False)}')
        elif getattr(launch, 'stop', None) or code in (0, STOPPED):
            outcomes[run.name] = 'stopped'
            out(f'{head}: stopped after {minutes:.1f} min without results (exit {code}); run the '
                f'sweep again to continue it')
        else:
            outcomes[run.name] = 'failed'
            out(f'{head}: FAILED (exit {code}) after {minutes:.1f} min, {summary(run_dir)}; '
                f'see {log_path}')
    return outcomes


# ---------------------------------------------------------------- command line

def parse_command_line(argv):
    """(configuration name, sweep options, extra options for every run)."""
    plain, options, extras = config_module.parse_command(
        argv, SWEEP_DEFAULTS, 1, 'python sweep.py <configuration name or path> [--name=value ...]',
        __doc__, extras=True)
    return plain[0], options, extras


def _seeds(text):
    try:
        return [int(s) for s in text.split(',') if s.strip()] if text else None
    except ValueError:
        raise UserError(f'--seeds expects comma-separated integers, got {text!r}') from None


def _data_roots(text):
    roots = {}
    for item in filter(None, (s.strip() for s in text.split(','))):
        dataset, sep, path = item.partition(':')
        if not sep or not dataset or not path:
            raise UserError(f'--data_roots expects dataset:path pairs separated by commas, '
                            f'got {item!r}')
        roots[dataset] = path
    return roots


def main(argv=None):
    name, options, extras = parse_command_line(sys.argv[1:] if argv is None else argv)
    config_path = find_config(name)
    cfg = read_config(config_path)
    sweep_dir = (Path(options['out_dir']).expanduser() / config_path.stem).resolve()
    runs = plan(cfg, _seeds(options['seeds']), extras, _data_roots(options['data_roots']),
                sweep_dir)
    if options['only']:
        patterns = [p.strip() for p in options['only'].split(',') if p.strip()]
        chosen = {r.name for r in runs if any(fnmatch.fnmatchcase(r.name, p) for p in patterns)}
        # a chosen fine-tuning run keeps its pre-training run
        chosen |= {r.after for r in runs if r.name in chosen and r.after}
        runs = [r for r in runs if r.name in chosen]
    check_options(runs)
    print(f'sweep {config_path.stem} ({config_path}): {len(runs)} runs in {sweep_dir}'
          + (f'\n  {cfg["description"]}' if cfg.get('description') else ''))
    if options['dry_run']:
        outcomes = execute(runs, sweep_dir, dry_run=True, max_runs=options['max_runs'])
        counts = _counts(outcomes)
        print(f'dry run: {counts}; nothing was changed')
        return 0
    outcomes, stop = run_locked(runs, sweep_dir, options['max_runs'], {
        'argv': sys.argv if argv is None else argv, 'config_path': str(config_path),
        'config': cfg})
    print(f'sweep {config_path.stem}: {_counts(outcomes)}\n  results: python report.py {sweep_dir}')
    if stop:
        print(f'stopped by {stop}; run the same command again to continue')
        return STOPPED
    return 1 if any(o in ('failed', 'conflict', 'blocked') for o in outcomes.values()) else 0


def run_locked(runs, sweep_dir, max_runs=0, history=None):
    """Run what each run needs (execute), holding sweep_dir's lock, with a line about the
    sweep in sweep_dir/sweeps.jsonl; a signal is passed to the running run. Returns
    (outcomes, the name of the signal that stopped the sweep or None)."""
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f'--out_dir: cannot create {sweep_dir} ({error.strerror})') from None
    lock = open(sweep_dir / '.sweep.lock', 'w')
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UserError(f'another sweep (or a run it started) is still working in {sweep_dir}; '
                        f'wait for it, or stop it first') from None
    with open(sweep_dir / 'sweeps.jsonl', 'a') as log:
        log.write(json.dumps({'time': time.strftime('%Y-%m-%d %H:%M:%S'), **(history or {}),
                              'runs': [r.name for r in runs]}) + '\n')
    # the lock travels with each run (pass_fds), so it outlives a killed sweep until its run ends
    launch = Launcher(keep_fds=[lock.fileno()])
    previous = {number: signal.signal(number, launch.forward)
                for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        outcomes = execute(runs, sweep_dir, launch, max_runs=max_runs)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        lock.close()
    return outcomes, launch.stop


def _counts(outcomes):
    counts = {}
    for outcome in outcomes.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    return ', '.join(f'{n} {o}' for o, n in counts.items()) or 'no runs'


if __name__ == '__main__':
    sys.exit(config_module.exit_on_user_error(main))
