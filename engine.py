"""The training loop the three scripts share; each script brings only its loss and says
which clips it trains on.

    engine.main(globals(), regime='clar', loss=clar_loss, train_on='all')

run() checks the options, loads the data, makes the run directory and builds the Trainer
(trainer.py); train() is the loop: for each step a batch, its augmented views, the loss,
backward and update, a log line every log_every steps, and at the end of each epoch
validation and checkpoints; finish() evaluates the best-on-validation weights once on the
test split. A run stopped by a signal (or --stop_after_epochs / --stop_after_steps)
checkpoints where it is and continues exactly with --resume=<run dir>.
"""
import os
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch

import checkpoint
import config as config_module
import datacheck
import dataset
import distributed
import evaluation
import options
import rundir
import unlabelled
from checkpoint import Progress
from config import UserError
from trainer import Trainer

SCRIPTS = {'clar': 'train.py', 'selfsupervised': 'selfsupervised.py', 'supervised': 'supervised.py'}


class Stopped(Exception):
    """Training stopped early; the run can be resumed. `requested`: by --stop_after_epochs or
    --stop_after_steps (exit status 0), not by a signal (exit status 3)."""

    def __init__(self, message, requested):
        super().__init__(message)
        self.requested = requested


def main(namespace, regime, loss, train_on, argv=None):
    """Entry point of a training script: its own hyperparameters (its globals) and the
    shared options, overridden by --name=value; then train."""
    def go():
        source = namespace.get('__file__', sys.argv[0])
        arguments = sys.argv[1:] if argv is None else argv
        refuse_options_of_other_scripts(arguments, config_module.defaults_of(namespace), regime)
        cfg = config_module.parse_args(config_module.script_defaults(namespace), arguments,
                                       sources=[source], program=os.path.basename(source),
                                       own=config_module.defaults_of(namespace))
        given = {a[2:].split('=', 1)[0] for a in arguments}
        try:
            return run(cfg, regime, loss, train_on, given)
        except Stopped as stop:
            print(stop, file=sys.stderr)
            sys.exit(0 if stop.requested else 3)
    return config_module.exit_on_user_error(go)


def refuse_options_of_other_scripts(arguments, own, regime):
    """An option that another training script sets at its top and this one lacks (e.g.
    train.py's --pseudo_labels given to supervised.py) gets a message saying whose it is,
    rather than the parser's 'unknown option'."""
    import importlib
    known = set(config_module.SHARED) | set(own)
    for argument in arguments:
        name = argument[2:].split('=', 1)[0] if argument.startswith('--') else ''
        if not name or name in known:
            continue
        for other, script in SCRIPTS.items():
            if other != regime and name in config_module.defaults_of(
                    vars(importlib.import_module(script[:-3]))):
                raise UserError(f'--{name} is an option of {script} ({other}) only; '
                                f'{SCRIPTS[regime]} does not read it: drop it, or run {script}')


def run(cfg, regime, loss_fn, train_on, given=()):
    """Train one regime with the resolved config `cfg`; returns the results dict.
    `given`: the option names set on the command line (what --resume may override)."""
    cfg = options.resumed_config(cfg, given) if cfg.get('resume') else dict(cfg)
    options.check(cfg, regime, given, resumed=bool(cfg.get('resume')))
    if cfg.get('inspect'):          # a dry look at the data: no run directory, no cache
        print(datacheck.inspect(cfg), end='')
        return None
    rank_device, rank, world_size = distributed.init(cfg['device'])
    if cfg.get('resume'):
        checkpoint.check_world_size(Path(cfg['resume']) / 'checkpoint_last.pt', world_size)
    device = rank_device or options.resolve_device(cfg['device'])
    main_process = distributed.is_main()
    if not cfg.get('resume') and main_process:
        rundir.check(cfg)
    started = time.time()
    seed_everything(cfg['seed'] + rank)
    data = dataset.load(cfg['dataset'], cfg['data_root'], cfg['cache_dir'], cfg['sample_rate'],
                        cfg['clip_seconds'], cfg['download'], cfg['skip_bad_files'],
                        cfg['label_seed'], **options.dataset_options(cfg),
                        strict=not cfg.get('resume'))
    data = add_unlabelled_pool(cfg, data, train_on)
    options.check_against_data(cfg, data, train_on)
    if cfg.get('resume'):
        run_dir = Path(cfg['resume'])
    else:   # created only once the options and the data are good
        if cfg.get('init_from'):
            checkpoint.check_init_from(cfg, data.clip_samples)
        run_dir = rundir.create(cfg, regime) if main_process else None
        run_dir = Path(distributed.broadcast_object(str(run_dir) if run_dir else None))
        cfg['run_name'] = run_dir.name
        if main_process and data.report:
            (run_dir / 'data_report.txt').write_text(data.report)
    if main_process:
        config_module.print_config(cfg)
    status = rundir.Status(run_dir, enabled=main_process)
    together = False        # finished or stopped as every process did: they leave the group together
    try:
        with StopSignal(on_second=lambda: status.set('interrupted', reason='second signal')) as stop:
            trainer = Trainer(cfg, regime, loss_fn, train_on, data, device, rank, world_size)
            progress = Progress()
            if cfg.get('resume'):
                checkpoint.restore(run_dir / 'checkpoint_last.pt', trainer, progress)
                if main_process:    # what was logged after that checkpoint is logged again
                    rundir.truncate_metrics(run_dir, progress.epoch, progress.step)
            say(trainer.describe())
            if cfg.get('resume'):
                say(f'resumed {run_dir} at epoch {progress.epoch + 1}, batch {progress.batch}')
            with rundir.Logger(run_dir, cfg, regime, enabled=main_process) as logger:
                train(trainer, progress, logger, run_dir, stop)
                results = finish(trainer, progress, logger, run_dir, started)
        together = True
    except Stopped as stopped:
        together = True
        status.set('interrupted', reason=str(stopped))
        raise Stopped(f'{stopped}. Continue with:\n  python {SCRIPTS[regime]} --resume={run_dir}',
                      stopped.requested) from None
    except BaseException as error:
        status.set('interrupted' if isinstance(error, KeyboardInterrupt) else 'failed',
                   error=f'{type(error).__name__}: {error}')
        raise
    finally:
        distributed.shutdown(meet_first=together)
    status.set('finished')
    say(f'run directory: {run_dir}')
    return results


def add_unlabelled_pool(cfg, data, train_on):
    """The windows of --unlabelled_root join the training clips of the two-view regimes."""
    if not cfg['unlabelled_root']:
        return data
    if train_on != 'all':
        say('note: supervised.py trains on the labelled clips only; --unlabelled_root is ignored')
        return data
    roots = unlabelled.roots_of(cfg['unlabelled_root'])
    unlabelled.check_roots(roots, os.path.commonpath(data.paths))
    pools = unlabelled.load(roots, cfg['cache_dir'], data.sample_rate, data.clip_samples,
                            cfg['unlabelled_hop'], cfg['skip_silent_windows'],
                            cfg['skip_bad_files'])
    say(unlabelled.describe(pools))
    return unlabelled.attach(data, pools)


def train(trainer, progress, logger, run_dir, stop):
    """The loop. Each step: this process's share of a batch, its augmented views, the loss,
    backward and update. Every log_every steps the loss and learning rate are logged; at the
    end of each epoch (or every eval_every_steps) the model is validated and checkpointed.
    A signal or --stop_after_* checkpoints where the run is and raises Stopped."""
    from tqdm import tqdm           # here: the GPU check imports this module without tqdm
    cfg = trainer.cfg
    nonfinite_in_row = 0            # a device tensor; read only where the host looks anyway
    while progress.step < trainer.total_steps:
        trainer.model.train()
        batches = trainer.epoch_batches(progress.epoch)
        bar = tqdm(total=len(batches), initial=progress.batch, unit='batch', leave=False,
                   desc=f'epoch {progress.epoch + 1}', mininterval=1.0,
                   disable=not distributed.is_main())
        last = time.time()
        for batch_indices in batches[progress.batch:]:
            waves, labels, labelled = trainer.load_batch(batch_indices)
            finite, logs = trainer.optimise(trainer.make_views(waves), labels, labelled,
                                            clean=waves, clips=trainer.clips_of(batch_indices),
                                            epoch=progress.epoch)
            now = time.time()
            progress.count(finite, logs, len(batch_indices), now - last)
            bar.update()
            epoch_ended = progress.batch == len(batches)
            if epoch_ended:
                progress.end_epoch()
            nonfinite_in_row = (nonfinite_in_row + 1) * ~finite
            if (progress.step % cfg['log_every'] == 0 or epoch_ended
                    or trainer.device.type == 'cpu'):
                stop_if_not_finite(int(nonfinite_in_row), progress, cfg, run_dir)
            if progress.step % cfg['log_every'] == 0:
                log_step(trainer, progress, logs, logger, bar)
            if validation_due(trainer, progress, epoch_ended):
                validate(trainer, progress, logger, run_dir)
            if progress.step == trainer.total_steps:
                break
            reason = stop_reason(progress, cfg, stop, trainer.device, epoch_ended,
                                 agree_on_signals=epoch_ended or progress.step % cfg['log_every'] == 0)
            if reason:
                save(trainer, progress, run_dir / 'checkpoint_last.pt')
                where = (f'after epoch {progress.epoch}' if epoch_ended else
                         f'in epoch {progress.epoch + 1} after batch {progress.batch}')
                raise Stopped(f'stopped by {reason} {where}', requested=reason in REQUESTED)
            last = time.time()
        bar.close()


def validation_due(trainer, progress, epoch_ended):
    """At the end of every epoch, or every eval_every_steps steps; and at the last step."""
    every = trainer.cfg['eval_every_steps']
    return (progress.step == trainer.total_steps
            or (progress.step % every == 0 if every else epoch_ended))


REQUESTED = ('stop_after_epochs', 'stop_after_steps')   # stops asked for by options, not signals


def stop_reason(progress, cfg, stop, device, epoch_ended, agree_on_signals=True):
    """Why the run should stop now, or None: --stop_after_epochs (at an epoch's end),
    --stop_after_steps, or the name of a signal received. Under torchrun a signal reaches
    the processes at different steps, and a process that stops alone leaves the others
    waiting for it: they look together, at logged steps and epoch ends
    (`agree_on_signals`), and all stop when any of them received one."""
    if epoch_ended and progress.epoch == cfg['stop_after_epochs']:
        return 'stop_after_epochs'
    if progress.step == cfg['stop_after_steps']:
        return 'stop_after_steps'
    if not distributed.active():
        return stop.received
    if agree_on_signals and distributed.any_process(stop.received, device):
        return stop.received or 'a signal to another process'
    return None


def stop_if_not_finite(in_row, progress, cfg, run_dir):
    if in_row >= cfg['max_nonfinite_steps']:
        raise UserError(
            f'the loss was not finite for {in_row} steps in a row (epoch {progress.epoch + 1}, '
            f'step {progress.step}); stopped. The last good checkpoint is '
            f'{run_dir / "checkpoint_last.pt"}. Try a lower --learning_rate, or --dtype=float32.')


def log_step(trainer, progress, logs, logger, bar):
    """The step's losses and learning rate: to the progress bar and to wandb."""
    record = {name: value.item() for name, value in logs.items()}
    if trainer.pseudo is not None:      # since the last validation
        record.update(trainer.pseudo.window_summary())
    rate = progress.clips_seen / max(progress.train_seconds, 1e-9)
    bar.set_postfix(loss=f'{record["loss"]:.3f}', clips_s=f'{rate:.0f}')
    logger.step(progress.step, {**{f'train/{k}': v for k, v in record.items()},
                                'learning_rate': trainer.learning_rate(),
                                'epoch': progress.step / trainer.steps_per_epoch})


def validate(trainer, progress, logger, run_dir):
    """Re-estimate the BatchNorm statistics (every process, on the same clips: under
    --sync_batchnorm each forward in train mode is a collective, so all must take part, and
    all end with the same statistics); validate and log a line of metrics.jsonl on the main
    process; checkpoint."""
    cfg, every = trainer.cfg, trainer.cfg['eval_every_steps']
    record = {'epoch': (round(progress.step / trainer.steps_per_epoch, 3) if every
                        else progress.epoch),
              'step': progress.step, **progress.means(),
              'learning_rate': trainer.learning_rate(), 'seconds': progress.epoch_seconds,
              'skipped_steps': int(progress.skipped)}
    progress.new_record()
    if trainer.pseudo is not None:
        record.update(trainer.pseudo.window_summary(reset=True))
    evaluation.recalibrate_batchnorm(trainer.model, trainer.data, trainer.step_indices,
                                     trainer.device, trainer.amp_dtype,
                                     cfg['batchnorm_batches'], cfg['batch_size'])
    paths = []
    if distributed.is_main():
        record.update(evaluation.validate(trainer.model, trainer.data, trainer.labelled_indices,
                                          trainer.device, trainer.amp_dtype, cfg['diagnostics']))
        improved = record['val_accuracy'] > progress.best_val_accuracy
        progress.best_val_accuracy = max(progress.best_val_accuracy, record['val_accuracy'])
        probes = ''.join(f'  probe on {k} {record[f"probe_{k}_val_accuracy"]:.4f}'
                         for k in ('h', 'p') if f'probe_{k}_val_accuracy' in record)
        print(f'epoch {record["epoch"]} (step {progress.step}): loss '
              f'{record.get("loss", float("nan")):.4f}  val accuracy {record["val_accuracy"]:.4f}'
              f'{"  (best)" if improved else ""}{probes}  {record["seconds"]:.1f}s')
        logger.epoch(progress.step, record)
        if improved:
            paths.append(run_dir / 'checkpoint_best.pt')
        validations = progress.step // every if every else progress.epoch
        if validations % cfg['checkpoint_every'] == 0 or progress.step == trainer.total_steps:
            paths.append(run_dir / 'checkpoint_last.pt')
    save(trainer, progress, *paths)
    distributed.barrier()


def finish(trainer, progress, logger, run_dir, started):
    """Evaluate the best-on-validation weights once, on the main process: results.json,
    the probe it reports (probe.pt, for predict.py) and the test confusion matrix
    (confusion_test.json / .png)."""
    cfg, data = trainer.cfg, trainer.data
    if not distributed.is_main():
        return None
    best = checkpoint.load(run_dir / 'checkpoint_best.pt', trainer.device)
    trainer.model.load_state_dict(best['model'])
    results, test_predictions, probe = evaluation.final(
        trainer.model, data, trainer.labelled_indices, trainer.device, trainer.amp_dtype,
        trainer.regime, best['epoch'], cfg['probe'])
    if cfg['diagnostics']:      # the head on its own training clips: clean, and as trained
        for name, augment in (('clean', None), ('augmented', lambda w: trainer.make_views(w)[0])):
            results[f'head_train_{name}_accuracy'] = evaluation.head_accuracy(
                trainer.model, data, trainer.labelled_indices, trainer.device,
                trainer.amp_dtype, augment)
    if trainer.pseudo is not None:
        results.update(trainer.pseudo.summary())
    results.update({'regime': trainer.regime, 'dataset': cfg['dataset'],
                    'label_fraction': cfg['label_fraction'],
                    'labelled_clips': int(len(trainer.labelled_indices)),
                    'unlabelled_clips': int(len(data.unlabelled)),
                    'training_clips': int(len(trainer.step_indices)), 'epochs': cfg['epochs'],
                    'labelled_windows': data.windowed, **datacheck.data_counts(data),
                    'steps': progress.step, 'best_step': best['step'],
                    'seed': cfg['seed'], 'label_seed': cfg['label_seed'],
                    'seconds': time.time() - started,
                    'clips_per_second': progress.clips_seen / max(progress.train_seconds, 1e-9),
                    'device': str(trainer.device), 'processes': trainer.world_size,
                    'run_dir': str(run_dir)})
    rundir.write_json(run_dir / 'results.json', results)
    evaluation.save_probe(probe, run_dir / 'probe.pt', 'checkpoint_best.pt', best['epoch'])
    image = evaluation.write_confusion(test_predictions, data.labels[data.splits['test']],
                                       data.classes, run_dir / 'confusion_test',
                                       f'{cfg["dataset"]} test, {trainer.regime}: '
                                       f'{results["test_accuracy_from"]}')
    logger.results(progress.step, results, image)
    print(f'test accuracy {results["test_accuracy"]:.4f} ({results["test_accuracy_from"]}); '
          f'best validation accuracy {results["val_accuracy"]:.4f} at epoch {best["epoch"]}')
    return results


def save(trainer, progress, *paths):
    """Write the training state to each of `paths` on the main process. Every process calls
    it (with or without paths): it gathers each process's random states."""
    rng = checkpoint.every_rank_rng_states(trainer)
    if distributed.is_main() and paths:
        state = checkpoint.training_state(trainer, progress, rng)
        for path in paths:
            checkpoint.save(state, path)


def say(message):
    if distributed.is_main():
        print(message)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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
