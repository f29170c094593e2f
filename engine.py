"""The training loop the three scripts share; each script brings only its loss and says
which clips it trains on.

    engine.main(globals(), regime='clar', loss=clar_loss, train_on='all')

run() resolves the options, loads the data, builds the model, trains with Adam (linear
warm-up, cosine decay), validates every epoch, keeps the best-on-validation weights,
evaluates them once on the test split, and writes everything into a run directory.
"""
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import augmentation
import config as config_module
import dataset
import evaluation
import rundir
from config import UserError
from model import ClarModel

DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}


def main(namespace, regime, loss, train_on, argv=None):
    """Entry point of a training script: parse --name=value options, then train."""
    def go():
        defaults = config_module.defaults_of(namespace)
        source = namespace.get('__file__', sys.argv[0])
        cfg = config_module.parse_args(defaults, sys.argv[1:] if argv is None else argv,
                                       sources=[source], program=os.path.basename(source))
        return run(cfg, regime, loss, train_on)
    return config_module.exit_on_user_error(go)


def check(cfg):
    """Reject impossible option values before anything is loaded or written."""
    if cfg['dataset'] not in dataset.DATASETS:
        raise UserError(f'unknown --dataset={cfg["dataset"]}; valid: {", ".join(dataset.DATASETS)}')
    if not 0 < cfg['label_fraction'] <= 1:
        raise UserError(f'--label_fraction must be in (0, 1], got {cfg["label_fraction"]}')
    for name in ('batch_size', 'epochs'):
        if cfg[name] < 1:
            raise UserError(f'--{name} must be at least 1, got {cfg[name]}')
    if cfg['frontend'] not in ('paper', 'released'):
        raise UserError(f'unknown --frontend={cfg["frontend"]}; valid: paper, released')
    if cfg['dtype'] != 'auto' and cfg['dtype'] not in DTYPES:
        raise UserError(f'unknown --dtype={cfg["dtype"]}; valid: auto, {", ".join(DTYPES)}')
    if cfg['wandb'] not in ('off', 'online', 'offline'):
        raise UserError(f'unknown --wandb={cfg["wandb"]}; valid: off, online, offline')
    if cfg['encoder_width'] <= 0:
        raise UserError(f'--encoder_width must be positive, got {cfg["encoder_width"]}')
    augmentation_names(cfg)
    resolve_device(cfg['device'])


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
    """The epoch's shuffled batches, drawn from (seed, epoch) alone so a resumed run sees
    the same order. A last partial batch is dropped when a full one exists (NT-Xent needs
    at least two clips, and uneven batches skew BatchNorm)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = indices[torch.randperm(len(indices), generator=generator).numpy()]
    count = len(order) // batch_size if len(order) >= batch_size else 1
    return [order[i * batch_size:(i + 1) * batch_size] for i in range(count)]


def run(cfg, regime, loss_fn, train_on):
    """Train one regime with the resolved config `cfg`; returns the results dict."""
    check(cfg)
    device = resolve_device(cfg['device'])
    rundir.check(cfg)
    started = time.time()
    seed_everything(cfg['seed'])
    data = dataset.load(cfg['dataset'], cfg['data_root'], cfg['cache_dir'], cfg['sample_rate'],
                        cfg['clip_seconds'], cfg['download'], cfg['skip_bad_files'],
                        cfg['label_seed'])
    run_dir = rundir.create(cfg, regime)     # only once the options and the data are good
    config_module.print_config(cfg)
    status = rundir.Status(run_dir)
    try:
        results = _train(cfg, regime, loss_fn, train_on, data, device, run_dir, started)
    except BaseException as error:
        status.set('interrupted' if isinstance(error, KeyboardInterrupt) else 'failed',
                   error=f'{type(error).__name__}: {error}')
        raise
    status.set('finished')
    print(f'run directory: {run_dir}')
    return results


def _train(cfg, regime, loss_fn, train_on, data, device, run_dir, started):
    train_indices = data.splits['train']
    if len(train_indices) == 0 or len(data.splits['val']) == 0:
        raise UserError(f'the {cfg["dataset"]} dataset has no training or no validation clips')
    labelled_indices = dataset.labelled_subset(data.labels, train_indices,
                                               cfg['label_fraction'], cfg['label_seed'])
    per_class = np.bincount(data.labels[labelled_indices], minlength=len(data.classes))
    print(f'{cfg["dataset"]}: {len(train_indices)} training, {len(data.splits["val"])} validation, '
          f'{len(data.splits["test"])} test clips of {data.clip_samples} samples; '
          f'{len(labelled_indices)} labelled ({cfg["label_fraction"]:g}), per class: '
          + ', '.join(f'{c} {n}' for c, n in zip(data.classes, per_class)))
    is_labelled = np.zeros(len(data.labels), dtype=bool)
    is_labelled[labelled_indices] = True
    step_indices = train_indices if train_on == 'all' else labelled_indices
    batch_size = cfg['batch_size']
    if batch_size > len(step_indices):
        print(f'note: batch_size {batch_size} is larger than the {len(step_indices)} clips this '
              f'regime trains on; using {len(step_indices)}')
        batch_size = len(step_indices)

    model = ClarModel(len(data.classes), regime, cfg['sample_rate'], cfg['frontend'],
                      cfg['encoder_width'], cfg['projection_dim']).to(device)
    if device.type == 'cuda':
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg['learning_rate'],
                                 weight_decay=cfg['weight_decay'])
    steps_per_epoch = len(epoch_batches(step_indices, batch_size, 0, 0))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(steps_per_epoch, cfg['epochs'], cfg['warmup_epochs']))
    amp_dtype = autocast_dtype(cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    augment_generator = torch.Generator().manual_seed(cfg['seed'])
    names, augment_options = augmentation_names(cfg), augmentation_options(cfg)
    logger = rundir.Logger(run_dir, cfg)

    def step(batch_indices):
        waves, labels, order = data.batch(batch_indices, device)
        labelled = torch.from_numpy(is_labelled[order]).to(device, non_blocking=True)
        views = [augmentation.augment(waves, names, cfg['sample_rate'], augment_generator,
                                      **augment_options)
                 for _ in range(2 if regime != 'supervised' else 1)]
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype != torch.float32):
            loss, parts = loss_fn(model, views, labels, labelled, cfg)
        if not torch.isfinite(loss):
            return None
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        return {'loss': loss.detach(), **{k: v.detach() for k, v in parts.items()}}

    best_val, clips_seen, train_seconds = -1.0, 0, 0.0
    for epoch in range(cfg['epochs']):
        model.train()
        epoch_start = time.time()
        sums, counted, skipped = {}, 0, 0
        batches = epoch_batches(step_indices, batch_size, cfg['seed'], epoch)
        progress = tqdm(batches, desc=f'epoch {epoch + 1}/{cfg["epochs"]}', unit='batch',
                        leave=False, mininterval=1.0)
        for number, batch_indices in enumerate(progress):
            logs = step(batch_indices)
            if logs is None:
                skipped += 1
                continue
            counted += 1
            for k, v in logs.items():
                sums[k] = sums.get(k, 0) + v
            if (number + 1) % cfg['log_every'] == 0:
                rate = (number + 1) * len(batch_indices) / (time.time() - epoch_start)
                progress.set_postfix(loss=f'{logs["loss"].item():.3f}', clips_s=f'{rate:.0f}')
        seconds = time.time() - epoch_start
        train_seconds += seconds
        clips_seen += sum(len(b) for b in batches)
        evaluation.recalibrate_batchnorm(model, data, step_indices, device, amp_dtype,
                                         cfg['batchnorm_batches'], batch_size)
        val = evaluation.accuracy(model, data, data.splits['val'], device, amp_dtype)
        record = {'epoch': epoch + 1,
                  **{k: (v / max(1, counted)).item() for k, v in sums.items()},
                  'val_accuracy': val['accuracy'], 'learning_rate': scheduler.get_last_lr()[0],
                  'seconds': seconds, 'skipped_steps': skipped}
        improved = val['accuracy'] > best_val
        best_val = max(best_val, val['accuracy'])
        print(f'epoch {epoch + 1}: loss {record.get("loss", float("nan")):.4f}  val accuracy '
              f'{val["accuracy"]:.4f}{"  (best)" if improved else ""}  {seconds:.1f}s')
        logger.epoch(record)
        state = {'model': model.state_dict(), 'optimizer': optimizer.state_dict(),
                 'scheduler': scheduler.state_dict(), 'epoch': epoch + 1, 'config': cfg,
                 'regime': regime, 'classes': data.classes, 'best_val_accuracy': best_val}
        rundir.save_checkpoint(state, run_dir / 'checkpoint_last.pt')
        if improved:
            rundir.save_checkpoint(state, run_dir / 'checkpoint_best.pt')

    best = torch.load(run_dir / 'checkpoint_best.pt', map_location=device, weights_only=False)
    model.load_state_dict(best['model'])
    results = evaluation.final(model, data, labelled_indices, device, amp_dtype, regime,
                               best['epoch'])
    results.update({'regime': regime, 'dataset': cfg['dataset'],
                    'label_fraction': cfg['label_fraction'],
                    'labelled_clips': int(len(labelled_indices)),
                    'training_clips': int(len(step_indices)), 'epochs': cfg['epochs'],
                    'seed': cfg['seed'], 'label_seed': cfg['label_seed'],
                    'seconds': time.time() - started,
                    'clips_per_second': clips_seen / max(train_seconds, 1e-9),
                    'device': str(device), 'run_dir': str(run_dir)})
    rundir.write_json(run_dir / 'results.json', results)
    logger.close(results)
    print(f'test accuracy {results["test_accuracy"]:.4f} ({results["test_accuracy_from"]}); '
          f'best validation accuracy {results["val_accuracy"]:.4f} at epoch {best["epoch"]}')
    return results
