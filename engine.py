"""The training loop the three scripts share; each script brings only its loss and says
which clips it trains on.

    engine.main(globals(), regime='clar', loss=clar_loss, train_on='all')

run() resolves the options, loads the data, builds the model, trains with Adam (linear
warm-up, cosine decay), validates every epoch, keeps the best-on-validation weights,
evaluates them once on the test split, and writes everything into a run directory.
A run stopped by a signal (or --stop_after_epochs / --stop_after_steps) checkpoints where
it is and continues exactly with --resume=<run dir>.
"""
import math
import os
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import augmentation
import config as config_module
import dataset
import distributed
import evaluation
import rundir
from config import UserError
from spectograms import FRONTENDS
import model as model_module
import optim

DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}
# options that may change when a run is resumed; everything else comes from its config.json
RESUMABLE_OVERRIDES = ('device', 'stop_after_epochs', 'stop_after_steps', 'log_every', 'wandb',
                       'cache_dir', 'data_root', 'compile')


class Stopped(Exception):
    """Training stopped early on request (signal or stop_after_*); the run can be resumed."""


def main(namespace, regime, loss, train_on, argv=None):
    """Entry point of a training script: parse --name=value options, then train."""
    def go():
        defaults = config_module.defaults_of(namespace)
        source = namespace.get('__file__', sys.argv[0])
        arguments = sys.argv[1:] if argv is None else argv
        cfg = config_module.parse_args(defaults, arguments, sources=[source],
                                       program=os.path.basename(source))
        given = {a[2:].split('=', 1)[0] for a in arguments}
        try:
            return run(cfg, regime, loss, train_on, given)
        except Stopped as stop:
            print(stop, file=sys.stderr)
            sys.exit(0 if 'stop_after' in str(stop) else 3)
    return config_module.exit_on_user_error(go)


# ---------------------------------------------------------------- options

def check(cfg):
    """Reject impossible option values before anything is loaded or written."""
    def one_of(name, valid):
        if cfg[name] not in valid:
            raise UserError(f'unknown --{name}={cfg[name]}; valid: {", ".join(valid)}')
    one_of('dataset', dataset.DATASETS)
    one_of('frontend', FRONTENDS)
    one_of('encoder', model_module.ENCODERS)
    one_of('optimizer', ('adam', 'lars'))
    one_of('probe', evaluation.PROBES)
    one_of('dtype', ('auto', *DTYPES))
    one_of('wandb', ('off', 'online', 'offline'))
    if not 0 < cfg['label_fraction'] <= 1:
        raise UserError(f'--label_fraction must be in (0, 1], got {cfg["label_fraction"]}')
    for name in ('batch_size', 'epochs', 'checkpoint_every'):
        if cfg[name] < 1:
            raise UserError(f'--{name} must be at least 1, got {cfg[name]}')
    for name in ('encoder_width', 'learning_rate', 'temperature'):
        if cfg[name] <= 0:
            raise UserError(f'--{name} must be positive, got {cfg[name]}')
    try:
        augmentation.draw(augmentation_names(cfg), 2, 1000, cfg['sample_rate'],
                          torch.Generator(), **augmentation_options(cfg))
    except ValueError as error:
        raise UserError(f'augmentation options: {error}') from None
    resolve_device(cfg['device'])
    if cfg.get('init_from'):
        init_from_file(cfg['init_from'])


def augmentation_names(cfg):
    names = [n.strip() for n in cfg['augmentations'].split(',') if n.strip()]
    unknown = [n for n in names if n not in augmentation.NAMES]
    if unknown:
        raise UserError(f'unknown augmentation {unknown[0]!r} in --augmentations; valid: '
                        f'{", ".join(augmentation.NAMES)}')
    return names


def augmentation_options(cfg):
    """The options that are augment() keyword arguments (probabilities and ranges)."""
    return {k: cfg[k] for k in augmentation.DEFAULTS if k in cfg}


def resolve_device(name):
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f'unknown --device={name}; valid: auto, cpu, cuda, cuda:N') from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise UserError(f'--device={name} asked for CUDA, but no CUDA device is available; '
                        f'use --device=cpu or --device=auto')
    return device


def autocast_dtype(cfg, device):
    if cfg['dtype'] == 'auto':
        return torch.bfloat16 if device.type == 'cuda' else torch.float32
    return DTYPES[cfg['dtype']]


def resumed_config(cfg, given):
    """The saved configuration of the run in cfg['resume'], with the few options that may
    change (RESUMABLE_OVERRIDES) taken from the command line when given there."""
    run_dir = Path(cfg['resume']).expanduser()
    if not (run_dir / 'config.json').exists():
        raise UserError(f'--resume={cfg["resume"]}: no config.json there; give the run directory '
                        f'printed when the run started')
    if not (run_dir / 'checkpoint_last.pt').exists():
        raise UserError(f'--resume={cfg["resume"]}: the run has no checkpoint_last.pt yet; '
                        f'start it again instead')
    refused = sorted(set(given) - set(RESUMABLE_OVERRIDES) - {'resume'})
    if refused:
        raise UserError(f'--resume continues a run with its saved configuration; drop '
                        f'{", ".join("--" + n for n in refused)} (only '
                        f'{", ".join("--" + n for n in RESUMABLE_OVERRIDES)} may be given)')
    if (rundir.read_json(run_dir / 'status.json') or {}).get('status') == 'finished':
        raise UserError(f'--resume={cfg["resume"]}: that run has already finished')
    saved = rundir.read_json(run_dir / 'config.json')
    saved.pop('regime', None)
    resolved = {**cfg, **saved, 'resume': str(run_dir), 'stop_after_epochs': 0,
                'stop_after_steps': 0}
    resolved.update({name: cfg[name] for name in given if name in RESUMABLE_OVERRIDES})
    return resolved


# ---------------------------------------------------------------- pieces of the loop

def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def warmup_cosine(steps_per_epoch, epochs, warmup_epochs):
    """Learning-rate factor per step: linear warm-up, then cosine decay to zero."""
    total = max(1, steps_per_epoch * epochs)
    warmup = min(steps_per_epoch * warmup_epochs, total - 1)

    def factor(step):
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def epoch_batches(indices, batch_size, seed, epoch):
    """The epoch's shuffled batches, drawn from (seed, epoch) alone so a resumed run (and
    every process of a distributed one) sees the same order. A last partial batch is
    dropped when a full one exists (NT-Xent needs at least two clips, and uneven batches
    skew BatchNorm)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = indices[torch.randperm(len(indices), generator=generator).numpy()]
    count = len(order) // batch_size if len(order) >= batch_size else 1
    return [order[i * batch_size:(i + 1) * batch_size] for i in range(count)]


def rng_states(augment_generator):
    states = {'python': random.getstate(), 'numpy': np.random.get_state(),
              'torch': torch.get_rng_state(), 'augment': augment_generator.get_state()}
    if torch.cuda.is_available():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states, augment_generator):
    random.setstate(states['python'])
    np.random.set_state(states['numpy'])
    torch.set_rng_state(states['torch'])
    augment_generator.set_state(states['augment'])
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'])


class StopSignal:
    """SIGINT / SIGTERM: the first asks the loop to checkpoint after the current step and
    stop; a second one exits at once."""

    def __init__(self, on_second):
        self.received = None
        self.on_second = on_second
        self.previous = {}

    def __enter__(self):
        for number in (signal.SIGINT, signal.SIGTERM):
            self.previous[number] = signal.signal(number, self.handle)
        return self

    def handle(self, number, frame):
        if self.received is not None:
            self.on_second()
            os._exit(128 + number)
        self.received = signal.Signals(number).name
        print(f'\n{self.received}: finishing this step, then writing a checkpoint '
              f'(send it again to stop at once)', file=sys.stderr)

    def __exit__(self, *exc):
        for number, handler in self.previous.items():
            signal.signal(number, handler)


# ---------------------------------------------------------------- the run

def run(cfg, regime, loss_fn, train_on, given=()):
    """Train one regime with the resolved config `cfg`; returns the results dict.
    `given`: the option names set on the command line (what --resume may override)."""
    cfg = resumed_config(cfg, given) if cfg.get('resume') else dict(cfg)
    check(cfg)
    rank_device, rank, world_size = distributed.init(cfg['device'])
    device = rank_device or resolve_device(cfg['device'])
    if not cfg.get('resume') and distributed.is_main():
        rundir.check(cfg)
    started = time.time()
    seed_everything(cfg['seed'] + rank)
    data = dataset.load(cfg['dataset'], cfg['data_root'], cfg['cache_dir'], cfg['sample_rate'],
                        cfg['clip_seconds'], cfg['download'], cfg['skip_bad_files'],
                        cfg['label_seed'], **dataset_options(cfg))
    if cfg.get('resume'):
        run_dir = Path(cfg['resume'])
    else:   # created only once the options and the data are good
        run_dir = rundir.create(cfg, regime) if distributed.is_main() else None
        run_dir = Path(distributed.broadcast_object(str(run_dir) if run_dir else None))
        cfg['run_name'] = run_dir.name
    main_process = distributed.is_main()
    if main_process:
        config_module.print_config(cfg)
    status = rundir.Status(run_dir, enabled=main_process)
    try:
        with StopSignal(on_second=lambda: status.set('interrupted', reason='second signal')) as stop:
            results = Trainer(cfg, regime, loss_fn, train_on, data, device, run_dir,
                              rank, world_size).fit(stop, started)
    except Stopped as stopped:
        status.set('interrupted', reason=str(stopped))
        raise Stopped(f'{stopped}. Continue with:\n  python {_script(regime)} --resume={run_dir}') from None
    except BaseException as error:
        status.set('interrupted' if isinstance(error, KeyboardInterrupt) else 'failed',
                   error=f'{type(error).__name__}: {error}')
        raise
    finally:
        distributed.shutdown()
    status.set('finished')
    if main_process:
        print(f'run directory: {run_dir}')
    return results


def _script(regime):
    return {'clar': 'train.py', 'selfsupervised': 'selfsupervised.py',
            'supervised': 'supervised.py'}[regime]


def dataset_options(cfg):
    """Options that only some datasets read."""
    return {name: cfg[name] for name in dataset.EXTRA_OPTIONS if name in cfg}


class Trainer:
    def __init__(self, cfg, regime, loss_fn, train_on, data, device, run_dir, rank, world_size):
        self.cfg, self.regime, self.loss_fn, self.data = cfg, regime, loss_fn, data
        self.device, self.run_dir, self.rank, self.world_size = device, run_dir, rank, world_size
        self.main = distributed.is_main()
        train_indices = data.splits['train']
        if len(train_indices) == 0 or len(data.splits['val']) == 0:
            raise UserError(f'the {cfg["dataset"]} dataset has no training or no validation clips')
        self.labelled_indices = dataset.labelled_subset(data.labels, train_indices,
                                                        cfg['label_fraction'], cfg['label_seed'])
        per_class = np.bincount(data.labels[self.labelled_indices], minlength=len(data.classes))
        self.log(f'{cfg["dataset"]}: {len(train_indices)} training, {len(data.splits["val"])} '
                 f'validation, {len(data.splits["test"])} test clips of {data.clip_samples} '
                 f'samples; {len(self.labelled_indices)} labelled ({cfg["label_fraction"]:g}), '
                 'per class: ' + ', '.join(f'{c} {n}' for c, n in zip(data.classes, per_class)))
        self.is_labelled = np.zeros(len(data.labels), dtype=bool)
        self.is_labelled[self.labelled_indices] = True
        self.step_indices = train_indices if train_on == 'all' else self.labelled_indices
        self.global_batch = cfg['batch_size'] * world_size
        if self.global_batch > len(self.step_indices):
            self.log(f'note: batch_size {self.global_batch} is larger than the '
                     f'{len(self.step_indices)} clips this regime trains on; using '
                     f'{len(self.step_indices)}')
            self.global_batch = len(self.step_indices)

        self.model = model_module.build(cfg, len(data.classes), regime).to(device)
        if cfg.get('init_from'):
            load_encoder(self.model, cfg['init_from'], device)
        if cfg['channels_last']:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward = self.model
        if world_size > 1:
            if cfg.get('sync_batchnorm'):
                if device.type != 'cuda':
                    raise UserError('--sync_batchnorm=True needs CUDA devices (PyTorch has no '
                                    'CPU SyncBatchNorm); drop it for CPU runs')
                self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            self.forward = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == 'cuda' else None)
        if cfg.get('compile'):
            self.forward = torch.compile(self.forward)
        self.optimizer = optim.build(self.model, cfg['optimizer'], cfg['learning_rate'],
                                     cfg['weight_decay'])
        self.steps_per_epoch = len(epoch_batches(self.step_indices, self.global_batch, 0, 0))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(self.steps_per_epoch, cfg['epochs'], cfg['warmup_epochs']))
        self.amp_dtype = autocast_dtype(cfg, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.augment_generator = torch.Generator().manual_seed(cfg['seed'] * 7919 + rank)
        self.names, self.augment_options = augmentation_names(cfg), augmentation_options(cfg)
        # progress: completed epochs, batches done in the current epoch, and running sums
        self.epoch, self.batch, self.step_count = 0, 0, 0
        self.sums, self.counted, self.skipped, self.nonfinite_in_row = {}, 0, 0, 0
        self.best_val, self.clips_seen, self.train_seconds, self.epoch_seconds = -1.0, 0, 0.0, 0.0
        self.logger = rundir.Logger(run_dir, cfg) if self.main else None

    def log(self, message):
        if distributed.is_main():
            print(message)

    # -------- checkpoints
    def state(self):
        return {'model': self.model.state_dict(), 'optimizer': self.optimizer.state_dict(),
                'scheduler': self.scheduler.state_dict(), 'scaler': self.scaler.state_dict(),
                'epoch': self.epoch, 'batch': self.batch, 'step': self.step_count,
                'sums': self.sums, 'counted': self.counted, 'skipped': self.skipped,
                'best_val_accuracy': self.best_val, 'clips_seen': self.clips_seen,
                'train_seconds': self.train_seconds, 'epoch_seconds': self.epoch_seconds,
                'rng': rng_states(self.augment_generator),
                'config': self.cfg, 'regime': self.regime, 'classes': self.data.classes,
                'clip_samples': self.data.clip_samples}

    def save(self, name):
        if self.main:
            rundir.save_checkpoint(self.state(), self.run_dir / name)

    def restore(self):
        state = torch.load(self.run_dir / 'checkpoint_last.pt', map_location=self.device,
                           weights_only=False)
        self.model.load_state_dict(state['model'])
        self.optimizer.load_state_dict(state['optimizer'])
        self.scheduler.load_state_dict(state['scheduler'])
        self.scaler.load_state_dict(state['scaler'])
        self.epoch, self.batch, self.step_count = state['epoch'], state['batch'], state['step']
        self.sums = {k: v.to(self.device) for k, v in state['sums'].items()}
        self.counted, self.skipped = (torch.as_tensor(state[k]).to(self.device)
                                      for k in ('counted', 'skipped'))
        self.best_val, self.clips_seen = state['best_val_accuracy'], state['clips_seen']
        self.train_seconds, self.epoch_seconds = state['train_seconds'], state['epoch_seconds']
        set_rng_states(state['rng'], self.augment_generator)
        if self.main:       # epochs logged after this checkpoint will be logged again
            rundir.truncate_metrics(self.run_dir, self.epoch)
        self.log(f'resumed {self.run_dir} at epoch {self.epoch + 1}, batch {self.batch}')

    # -------- one step
    def load_batch(self, batch_indices):
        """This process's share of a global batch, on the device."""
        mine = batch_indices[self.rank::self.world_size]
        waves, labels, order = self.data.batch(mine, self.device)
        labelled = torch.from_numpy(self.is_labelled[order]).to(self.device, non_blocking=True)
        return waves, labels, labelled

    def make_views(self, waves):
        """One augmented view per clip (supervised) or two, drawn independently."""
        return [augmentation.augment(waves, self.names, self.cfg['sample_rate'],
                                     self.augment_generator, **self.augment_options)
                for _ in range(1 if self.regime == 'supervised' else 2)]

    def optimise(self, views, labels, labelled):
        """Loss, backward and optimiser step. Returns (finite, logs): a step whose loss is
        not finite changes no weight, and nothing here waits for the device."""
        with torch.autocast(self.device.type, dtype=self.amp_dtype,
                            enabled=self.amp_dtype != torch.float32):
            loss, parts = self.loss_fn(self.forward, views, labels, labelled, self.cfg)
        finite = torch.isfinite(loss.detach())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg['optimizer'] == 'lars':
            self.scaler.unscale_(self.optimizer)
            optim.lars_adapt_(self.optimizer)
        if self.scaler.is_enabled():    # float16: the scaler skips non-finite steps itself
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:                           # fused Adam skips its update where found_inf is set
            self.optimizer.found_inf = (~finite).float()
            self.optimizer.step()
        self.scheduler.step()
        return finite, {'loss': loss.detach(), **{k: v.detach() for k, v in parts.items()}}

    def train_step(self, batch_indices):
        waves, labels, labelled = self.load_batch(batch_indices)
        return self.optimise(self.make_views(waves), labels, labelled)

    # -------- the loop
    def fit(self, stop, started):
        cfg = self.cfg
        if cfg.get('resume'):
            self.restore()
        for epoch in range(self.epoch, cfg['epochs']):
            self.model.train()
            batches = epoch_batches(self.step_indices, self.global_batch, cfg['seed'], epoch)
            progress = tqdm(range(self.batch, len(batches)), desc=f'epoch {epoch + 1}/{cfg["epochs"]}',
                            unit='batch', leave=False, mininterval=1.0, disable=not self.main)
            segment_start, segment_clips = time.time(), 0
            for number in progress:
                finite, logs = self.train_step(batches[number])
                self.batch, self.step_count = number + 1, self.step_count + 1
                segment_clips += len(batches[number])
                # counted on the device; read only where the host looks anyway (the CPU: always)
                self.nonfinite_in_row = (self.nonfinite_in_row + 1) * ~finite
                self.skipped = self.skipped + ~finite
                self.counted = self.counted + finite
                for k, v in logs.items():
                    self.sums[k] = self.sums.get(k, 0) + torch.where(finite, v, 0.0)
                look = (self.device.type == 'cpu' or (number + 1) % cfg['log_every'] == 0
                        or number + 1 == len(batches))
                if look and int(self.nonfinite_in_row) >= cfg['max_nonfinite_steps']:
                    raise UserError(
                        f'the loss was not finite for {int(self.nonfinite_in_row)} steps in a row '
                        f'(epoch {epoch + 1}, batch {number + 1}); stopped. The last good '
                        f'checkpoint is {self.run_dir / "checkpoint_last.pt"}. Try a lower '
                        f'--learning_rate, or --dtype=float32.')
                if (number + 1) % cfg['log_every'] == 0:
                    rate = segment_clips / (time.time() - segment_start)
                    progress.set_postfix(loss=f'{logs["loss"].item():.3f}', clips_s=f'{rate:.0f}')
                reason = ('stop_after_steps' if self.step_count == cfg['stop_after_steps']
                          else stop.received)
                if reason and number + 1 < len(batches):
                    self._account(segment_start, segment_clips)
                    self.save('checkpoint_last.pt')
                    raise Stopped(f'stopped by {reason} in epoch {epoch + 1} after batch {number + 1}')
            self._account(segment_start, segment_clips)
            self.end_epoch(epoch)
            reason = ('stop_after_epochs' if self.epoch == cfg['stop_after_epochs']
                      else 'stop_after_steps' if self.step_count == cfg['stop_after_steps']
                      else stop.received)
            if reason and self.epoch < cfg['epochs']:
                self.save('checkpoint_last.pt')
                raise Stopped(f'stopped by {reason} after epoch {self.epoch}')
        return self.finish(started)

    def _account(self, segment_start, segment_clips):
        seconds = time.time() - segment_start
        self.train_seconds += seconds
        self.epoch_seconds += seconds
        self.clips_seen += segment_clips

    def end_epoch(self, epoch):
        """Validate (on the main process), log, and checkpoint."""
        cfg = self.cfg
        record = {'epoch': epoch + 1,
                  **{k: (v / max(1, int(self.counted))).item() for k, v in self.sums.items()},
                  'learning_rate': self.scheduler.get_last_lr()[0],
                  'seconds': self.epoch_seconds, 'skipped_steps': int(self.skipped)}
        self.epoch, self.batch = epoch + 1, 0
        self.sums, self.counted, self.skipped, self.epoch_seconds = {}, 0, 0, 0.0
        if self.main:
            evaluation.recalibrate_batchnorm(self.model, self.data, self.step_indices,
                                             self.device, self.amp_dtype,
                                             cfg['batchnorm_batches'], cfg['batch_size'])
            record['val_accuracy'] = evaluation.accuracy(
                self.model, self.data, self.data.splits['val'], self.device,
                self.amp_dtype)['accuracy']
            improved = record['val_accuracy'] > self.best_val
            self.best_val = max(self.best_val, record['val_accuracy'])
            print(f'epoch {epoch + 1}: loss {record.get("loss", float("nan")):.4f}  val accuracy '
                  f'{record["val_accuracy"]:.4f}{"  (best)" if improved else ""}  '
                  f'{record["seconds"]:.1f}s')
            self.logger.epoch(record)
            if improved:
                self.save('checkpoint_best.pt')
            if self.epoch % cfg['checkpoint_every'] == 0 or self.epoch == cfg['epochs']:
                self.save('checkpoint_last.pt')
        distributed.barrier()

    def finish(self, started):
        """Evaluate the best-on-validation weights once, on the main process."""
        cfg = self.cfg
        if not self.main:
            return None
        best = torch.load(self.run_dir / 'checkpoint_best.pt', map_location=self.device,
                          weights_only=False)
        self.model.load_state_dict(best['model'])
        results = evaluation.final(self.model, self.data, self.labelled_indices, self.device,
                                   self.amp_dtype, self.regime, best['epoch'],
                                   cfg['probe'])
        results.update({'regime': self.regime, 'dataset': cfg['dataset'],
                        'label_fraction': cfg['label_fraction'],
                        'labelled_clips': int(len(self.labelled_indices)),
                        'training_clips': int(len(self.step_indices)), 'epochs': cfg['epochs'],
                        'seed': cfg['seed'], 'label_seed': cfg['label_seed'],
                        'seconds': time.time() - started,
                        'clips_per_second': self.clips_seen / max(self.train_seconds, 1e-9),
                        'device': str(self.device), 'processes': self.world_size,
                        'run_dir': str(self.run_dir)})
        rundir.write_json(self.run_dir / 'results.json', results)
        self.logger.close(results)
        print(f'test accuracy {results["test_accuracy"]:.4f} ({results["test_accuracy_from"]}); '
              f'best validation accuracy {results["val_accuracy"]:.4f} at epoch {best["epoch"]}')
        return results


def init_from_file(path):
    """The checkpoint file --init_from names; UserError when there is none."""
    try:
        return rundir.checkpoint_path(path)
    except UserError as error:
        raise UserError(f'--init_from: no such checkpoint ({error})') from None


def load_encoder(model, path, device):
    """Initialise the encoder from another run's checkpoint (e.g. self-supervised
    pre-training), leaving the heads new."""
    path = init_from_file(path)
    try:
        state = torch.load(path, map_location=device, weights_only=False)['model']
    except Exception as error:          # torch.load of a foreign file: many types
        raise UserError(f'--init_from={path}: cannot load it as a checkpoint of this project '
                        f'({type(error).__name__})') from None
    encoder = {k[len('encoder.'):]: v for k, v in state.items() if k.startswith('encoder.')}
    try:
        model.encoder.load_state_dict(encoder)
    except RuntimeError as error:
        raise UserError(f'--init_from={path}: its encoder does not match this one (same '
                        f'--encoder_width?): {str(error).splitlines()[0]}') from None
