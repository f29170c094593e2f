"""What a training run is made of, built once from its configuration, and one step of it.

Trainer holds the clips a regime trains on (all, or the labelled subset), the model (wrapped
for DistributedDataParallel and torch.compile when asked), the optimiser, the learning-rate
schedule and the augmentation generator; `optimise` is one step: loss, backward, update.
"""
import math

import numpy as np
import torch

import augmentation
import checkpoint
import datacheck
import dataset
import distributed
import model as model_module
import optim
import options
import pseudolabels
from config import UserError


class Trainer:
    def __init__(self, cfg, regime, loss_fn, train_on, data, device, rank=0, world_size=1):
        self.cfg, self.regime, self.loss_fn, self.data = cfg, regime, loss_fn, data
        self.device, self.rank, self.world_size = device, rank, world_size
        train_indices = data.splits['train']
        if len(train_indices) == 0 or len(data.splits['val']) == 0:
            raise UserError(f'the {cfg["dataset"]} dataset has no training or no validation clips')
        self.labelled_indices = dataset.labelled_clips(data, cfg['label_fraction'],
                                                       cfg['label_seed'])
        self.is_labelled = np.zeros(len(data.labels), dtype=bool)
        self.is_labelled[self.labelled_indices] = True
        if train_on == 'all':           # the dataset's training clips and any unlabelled pool
            self.step_indices = np.concatenate([train_indices, data.unlabelled])
        else:
            self.step_indices = self.labelled_indices
        self.global_batch = global_batch_size(cfg['batch_size'], len(self.step_indices), world_size)
        # labelled clips in every batch (all processes together). Batches at random when it is
        # 0, and when random batches hold at least as many on average (every clip labelled, or
        # a large batch): the option is there to lift a few labels, never to lower their share
        self.other_indices = np.setdiff1d(self.step_indices, self.labelled_indices)
        self.labelled_per_batch_asked = (cfg['labelled_per_batch'] * world_size
                                         if train_on == 'all' else 0)
        self.labelled_per_batch_on_average = (self.global_batch * len(self.labelled_indices)
                                              / len(self.step_indices))
        self.labelled_per_batch = (self.labelled_per_batch_asked
                                   if self.labelled_per_batch_on_average
                                   < self.labelled_per_batch_asked < self.global_batch else 0)

        self.model = model_module.build(cfg, len(data.classes), regime).to(device)
        if cfg.get('init_from'):
            checkpoint.load_encoder(self.model, cfg['init_from'], device)
        if cfg['channels_last']:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward = self.model       # what the step calls: the model, wrapped as asked
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
        self.steps_per_epoch = len(self.epoch_batches(0))
        # --steps, when given, replaces --epochs (e.g. a baseline at equal optimiser steps)
        self.total_steps = cfg['steps'] or self.steps_per_epoch * cfg['epochs']
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, learning_rate_factor(self.total_steps,
                                                 self.steps_per_epoch * cfg['warmup_epochs'],
                                                 cfg['lr_schedule']))
        self.amp_dtype = options.autocast_dtype(cfg, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.augment_generator = torch.Generator().manual_seed(cfg['seed'] * 7919 + rank)
        self.names = options.augmentation_names(cfg)
        self.augment_options = options.augmentation_options(cfg)
        self.pseudo = None              # train.py --pseudo_labels (older configs lack it: off)
        if regime == 'clar' and cfg.get('pseudo_labels', 'off') != 'off':
            self.pseudo = pseudolabels.PseudoLabeller(
                cfg, self.model, len(data.classes), self.other_indices, len(data.labels),
                device, self.amp_dtype)

    def describe(self):
        """One line on the data the run trains on."""
        cfg, data = self.cfg, self.data
        per_class = np.bincount(data.labels[self.labelled_indices], minlength=len(data.classes))
        line = (f'{cfg["dataset"]}: {len(data.splits["train"])} training, '
                f'{len(data.splits["val"])} validation, {len(data.splits["test"])} test clips of '
                f'{data.clip_samples} samples; {len(self.labelled_indices)} labelled '
                f'({cfg["label_fraction"]:g}), per class: '
                + ', '.join(f'{c} {n}' for c, n in zip(data.classes, per_class)))
        if data.windowed or cfg['dataset'] == 'folder':     # files and the clips cut from them
            line += '\n' + datacheck.table(datacheck.data_counts(data), data.classes)
        if self.labelled_per_batch:
            line += (f'\nbatches: {self.labelled_per_batch} labelled clips in each (random batches '
                     f'would hold {self.labelled_per_batch_on_average:.1f} on average)')
        elif self.labelled_per_batch_asked:
            average, asked = self.labelled_per_batch_on_average, self.labelled_per_batch_asked
            line += (f'\nbatches: at random, holding {average:.1f} labelled clips on average; '
                     f'--labelled_per_batch={cfg["labelled_per_batch"]} is '
                     + ('no more' if average >= asked
                        else f'not below the batch of {self.global_batch}'))
        if self.global_batch < cfg['batch_size'] * self.world_size:
            line += (f'\nnote: batch_size {cfg["batch_size"] * self.world_size} is larger than '
                     f'the {len(self.step_indices)} clips this regime trains on; using '
                     f'{self.global_batch}')
            if self.world_size > 1:
                line += f' ({self.global_batch // self.world_size} per process)'
        return line

    def epoch_batches(self, epoch):
        if self.labelled_per_batch:
            return mixed_batches(self.labelled_indices, self.other_indices, self.global_batch,
                                 self.labelled_per_batch, self.cfg['seed'], epoch)
        return epoch_batches(self.step_indices, self.global_batch, self.cfg['seed'], epoch)

    def load_batch(self, batch_indices):
        """This process's share of a global batch, on the device."""
        waves, labels, order = self.data.batch(self.clips_of(batch_indices), self.device)
        labelled = torch.from_numpy(self.is_labelled[order]).to(self.device, non_blocking=True)
        return waves, labels, labelled

    def clips_of(self, batch_indices):
        """The clip indices of this process's rows of a global batch, in the order
        load_batch returns them (sorted, as AudioData.batch reads them)."""
        return np.sort(batch_indices[self.rank::self.world_size])

    def make_views(self, waves):
        """One augmented view per clip (supervised) or two, drawn independently."""
        return [augmentation.augment(waves, self.names, self.cfg['sample_rate'],
                                     self.augment_generator, **self.augment_options)
                for _ in range(1 if self.regime == 'supervised' else 2)]

    def optimise(self, views, labels, labelled, clean=None, clips=None, epoch=0):
        """Loss, backward and optimiser step. Returns (finite, logs): a step whose loss is
        not finite changes no weight, and nothing here waits for the device. With
        pseudo-labels (from `epoch` on), `clean`: the batch's waveforms before augmentation,
        `clips`: their clip indices (clips_of)."""
        pseudo, pseudo_logs = {}, {}
        if self.pseudo is not None and clean is not None and self.pseudo.active(epoch):
            targets, confident, pseudo_logs = self.pseudo.label(
                self.model, clean, labels, labelled, clips, self.augment_generator)
            pseudo = {'pseudo': (targets, confident)}
        with torch.autocast(self.device.type, dtype=self.amp_dtype,
                            enabled=self.amp_dtype != torch.float32):
            loss, parts = self.loss_fn(self.forward, views, labels, labelled, self.cfg, **pseudo)
        finite = distributed.all_finite(torch.isfinite(loss.detach()))   # skipped everywhere or nowhere
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
        if self.pseudo is not None:
            self.pseudo.after_step(self.model)
        return finite, {'loss': loss.detach(), **{k: v.detach() for k, v in parts.items()},
                        **pseudo_logs}

    def learning_rate(self):
        return self.scheduler.get_last_lr()[0]


def global_batch_size(batch_size, clips, world_size):
    """Clips per step over all processes: batch_size per process, capped at the clips there
    are and then rounded down to a multiple of the process count, so that every process
    gets a share of the same size (gathering the embeddings needs equal shapes)."""
    if clips < world_size:
        raise UserError(f'{clips} training clips cannot be shared by {world_size} processes; '
                        f'use at most {clips} processes')
    capped = min(batch_size * world_size, clips)
    return capped - capped % world_size


def learning_rate_factor(total_steps, warmup_steps, schedule='cosine'):
    """Learning-rate factor per step: linear warm-up, then cosine decay to zero (`cosine`)
    or the peak rate to the end (`constant`)."""
    total = max(1, total_steps)
    warmup = min(warmup_steps, total - 1)

    def factor(step):
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if schedule == 'constant':
            return 1.0
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


def mixed_batches(labelled, others, batch_size, per_batch, seed, epoch):
    """One pass over `others` (shuffled), batch_size - per_batch at a time, each batch
    joined by per_batch labelled clips: the labelled clips are cycled, reshuffled every
    pass, and no clip comes twice in one batch (a duplicate would be a false negative for
    NT-Xent). Drawn from (seed, epoch) alone, like epoch_batches. The labelled clips come
    first in each batch, so that every process's share (batch[rank::processes]) holds the
    same number of them."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = others[torch.randperm(len(others), generator=generator).numpy()]
    rest = batch_size - per_batch
    count = max(1, len(order) // rest)
    stream = np.zeros(0, dtype=np.int64)
    while len(stream) < count * per_batch:
        shuffled = labelled[torch.randperm(len(labelled), generator=generator).numpy()]
        filling = stream[len(stream) - len(stream) % per_batch:]     # the batch being filled
        repeat = np.isin(shuffled, filling)
        stream = np.concatenate([stream, shuffled[~repeat], shuffled[repeat]])
    return [np.concatenate([stream[b * per_batch:(b + 1) * per_batch], order[b * rest:(b + 1) * rest]])
            for b in range(count)]
