"""Run directories: one per run, never overwritten; atomic JSON files, status and logs."""
import json
import netrc
import os
import secrets
import string
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse


from config import UserError


def check(cfg):
    """Refuse an out_dir that cannot be written or a run_name that exists, before any work."""
    out_dir = Path(cfg['out_dir']).expanduser()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f'.write-test-{os.getpid()}'
        probe.write_text('')
        probe.unlink()
    except OSError as error:
        raise UserError(f'--out_dir={cfg["out_dir"]} cannot be written ({error.strerror}); '
                        f'choose a writable folder') from None
    if cfg['run_name'] and (out_dir / cfg['run_name']).exists():
        raise _exists(out_dir / cfg['run_name'])


def _exists(run_dir):
    return UserError(f'run directory {run_dir} already exists (--run_name={run_dir.name}); '
                     f'choose another --run_name, or leave it empty for a new timestamped one')


def create(cfg, regime):
    """Make out_dir/run_name. A given run_name that exists is refused; the default
    (regime-dataset-fraction-timestamp) gets a suffix until it is new."""
    check(cfg)
    out_dir = Path(cfg['out_dir']).expanduser()
    if cfg['run_name']:
        run_dir = out_dir / cfg['run_name']
        try:
            run_dir.mkdir()
        except FileExistsError:
            raise _exists(run_dir) from None
    else:
        stem = f'{regime}-{cfg["dataset"]}-{cfg["label_fraction"]:g}-{time.strftime("%Y%m%d-%H%M%S")}'
        for attempt in range(1000):
            run_dir = out_dir / (stem if attempt == 0 else f'{stem}-{attempt + 1}')
            try:
                run_dir.mkdir()
                break
            except FileExistsError:
                continue
    cfg['run_name'] = run_dir.name
    write_json(run_dir / 'config.json', {'regime': regime, **cfg})
    write_json(run_dir / 'source.json', source_commit())
    return run_dir


def source_commit():
    """The git commit of the code a run starts from, and whether tracked files had changes
    not committed (commit None outside a git checkout): export.py passes it on."""
    folder = Path(__file__).resolve().parent

    def git(*arguments):
        return subprocess.run(['git', *arguments], cwd=folder, capture_output=True, text=True,
                              timeout=30)
    try:
        head = git('rev-parse', 'HEAD')
        changes = git('status', '--porcelain', '--untracked-files=no')
    except (OSError, subprocess.SubprocessError):
        return {'commit': None, 'dirty': None}
    if head.returncode:
        return {'commit': None, 'dirty': None}
    return {'commit': head.stdout.strip(), 'dirty': bool(changes.stdout.strip())}


def checkpoint_path(path):
    """The checkpoint file a path names: the file itself, or a run directory's
    checkpoint_best.pt. UserError when there is none."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f'{path}: no such file or directory (give a run directory or a '
                        f'checkpoint .pt file)')
    if path.is_dir():
        best = path / 'checkpoint_best.pt'
        if not best.exists():
            found = sorted(p.name for p in path.glob('*.pt'))
            raise UserError(f'{path}: no checkpoint_best.pt in this folder'
                            + (f' (it has {", ".join(found)}: give one of them)' if found else
                               ' (is it a run directory? a run writes it after its first epoch)'))
        return best
    return path


def write_json(path, value):
    """Write JSON to a temporary file, then rename it into place."""
    temporary = Path(f'{path}.tmp')
    temporary.write_text(json.dumps(value, indent=2) + '\n')
    os.replace(temporary, path)


def read_json(path):
    """The JSON in `path`, or None when there is no such file."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else None


def truncate_metrics(run_dir, epochs, step):
    """Keep the lines of metrics.jsonl up to `step` (or, in runs that did not log steps,
    `epochs`): a resumed run logs the rest again."""
    path = Path(run_dir) / 'metrics.jsonl'
    if path.exists():
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        lines = [json.dumps(r) for r in records
                 if (r['step'] <= step if 'step' in r else r['epoch'] <= epochs)]
        temporary = Path(f'{path}.tmp')
        temporary.write_text(''.join(line + '\n' for line in lines))
        os.replace(temporary, path)


class Status:
    """status.json: running, finished, failed or interrupted."""

    def __init__(self, run_dir, enabled=True):
        self.path = Path(run_dir) / 'status.json'
        self.enabled = enabled
        self.set('running')

    def set(self, state, **extra):
        if self.enabled:
            write_json(self.path, {'status': state, 'time': time.strftime('%Y-%m-%d %H:%M:%S'), **extra})


def init_from_file(path):
    """The checkpoint file --init_from names; UserError when there is none."""
    try:
        return checkpoint_path(path)
    except UserError as error:
        raise UserError(f'--init_from: no such checkpoint ({error})') from None


def check_wandb(mode):
    """Refuse --wandb before the run directory is made when it cannot work: no wandb
    package, or (online) no credentials."""
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise UserError(f'--wandb={mode} needs the wandb package: pip install wandb '
                        f'(or run with --wandb=off)') from None
    if mode == 'online' and not _wandb_credentials():
        raise UserError('--wandb=online needs Weights & Biases credentials: run `wandb login` '
                        '(or set WANDB_API_KEY); --wandb=offline logs without an account')


def _wandb_credentials():
    """An API key in the environment, or in the netrc file `wandb login` writes."""
    if os.environ.get('WANDB_API_KEY'):
        return True
    host = urlparse(os.environ.get('WANDB_BASE_URL', 'https://api.wandb.ai')).hostname
    try:
        return netrc.netrc(os.environ.get('NETRC')).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class Logger:
    """metrics.jsonl (one line per epoch) and, with --wandb, Weights & Biases: the config,
    the loss and learning rate every log_every steps, validation per epoch, the results and
    the test confusion matrix. A resumed run continues the same wandb run (its id is kept
    in the run directory, wandb_id.txt)."""

    def __init__(self, run_dir, cfg, regime, enabled=True):
        self.path = Path(run_dir) / 'metrics.jsonl'
        self.enabled, self.wandb = enabled, None     # only the main process logs
        if enabled and cfg['wandb'] != 'off':
            import wandb
            id_file = Path(run_dir) / 'wandb_id.txt'
            if id_file.exists():
                run_id = id_file.read_text().strip()
            else:
                run_id = ''.join(secrets.choice(string.ascii_lowercase + string.digits)
                                 for _ in range(8))
                id_file.write_text(run_id + '\n')
            self.wandb = wandb.init(
                project=cfg['wandb_project'], name=cfg['run_name'], id=run_id, resume='allow',
                config={'regime': regime, **cfg}, mode=cfg['wandb'], dir=str(run_dir),
                settings=wandb.Settings(console='off', quiet=True))

    def step(self, step, record):
        if self.wandb:
            self.wandb.log(record, step=step)

    def epoch(self, step, record):
        if not self.enabled:
            return
        with open(self.path, 'a') as log:
            log.write(json.dumps(record) + '\n')
        if self.wandb:
            self.wandb.log(record, step=step)

    def results(self, step, results, confusion_image=None):
        if self.wandb:
            import wandb
            if confusion_image:
                self.wandb.log({'test_confusion_matrix': wandb.Image(str(confusion_image))},
                               step=step)
            self.wandb.summary.update({k: v for k, v in results.items()
                                       if isinstance(v, (int, float, str))})

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        """Close the wandb run however the run ends (a stopped run is resumed into it)."""
        if self.wandb:
            self.wandb.finish(exit_code=0 if kind is None else 1)
            self.wandb = None
