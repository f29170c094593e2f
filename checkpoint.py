"""What a checkpoint holds and how it goes back: the one place that saves a run's state,
restores it for --resume, and loads a trained model or encoder from a file.

A checkpoint is a dict: the state of the model, optimiser, schedule and gradient scaler;
the progress (Progress: epoch, batch, step, running sums, timing, best validation accuracy);
every random number generator's state, for each process of a torchrun run; the number of
processes; and the run's config, regime, classes and clip length.
"""
import os
import random
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

import distributed
from config import UserError
from rundir import checkpoint_path


@dataclass
class Progress:
    """Where a run is: completed epochs, batches done in the current one, optimiser steps,
    the current epoch's running sums of the logged losses (on the device, so that no step
    waits for it), and what the results report."""
    epoch: int = 0
    batch: int = 0
    step: int = 0
    sums: dict = field(default_factory=dict)
    counted: object = 0                 # finite steps this epoch (a device tensor while training)
    skipped: object = 0                 # non-finite steps this epoch
    best_val_accuracy: float = -1.0
    clips_seen: int = 0
    train_seconds: float = 0.0
    epoch_seconds: float = 0.0

    def count(self, finite, logs, clips, seconds):
        """One step done: its losses join the epoch's sums unless it was not finite."""
        self.batch, self.step = self.batch + 1, self.step + 1
        self.counted, self.skipped = self.counted + finite, self.skipped + ~finite
        for name, value in logs.items():
            self.sums[name] = self.sums.get(name, 0) + torch.where(finite, value, 0.0)
        self.clips_seen += clips
        self.train_seconds += seconds
        self.epoch_seconds += seconds

    def epoch_means(self):
        """The epoch's mean of every logged loss over its finite steps."""
        return {name: (total / max(1, int(self.counted))).item() for name, total in self.sums.items()}

    def new_epoch(self):
        self.epoch, self.batch = self.epoch + 1, 0
        self.sums, self.counted, self.skipped, self.epoch_seconds = {}, 0, 0, 0.0


def save(state, path):
    """Write a checkpoint atomically: a stop mid-write leaves the previous one intact."""
    temporary = Path(f'{path}.tmp')
    torch.save(state, temporary)
    os.replace(temporary, path)


def load(path, device='cpu'):
    """The checkpoint dict in `path` (a file; see rundir.checkpoint_path for run directories)."""
    return torch.load(path, map_location=device, weights_only=False)


def training_state(trainer, progress, rng):
    """Everything --resume needs to continue exactly, and what evaluation needs to rebuild
    the model. `rng`: every process's random states, in rank order (every_rank_rng_states)."""
    return {'model': trainer.model.state_dict(), 'optimizer': trainer.optimizer.state_dict(),
            'scheduler': trainer.scheduler.state_dict(), 'scaler': trainer.scaler.state_dict(),
            **{f.name: getattr(progress, f.name) for f in fields(progress)},
            'rng': rng, 'world_size': trainer.world_size,
            'config': trainer.cfg, 'regime': trainer.regime, 'classes': trainer.data.classes,
            'clip_samples': trainer.data.clip_samples}


def every_rank_rng_states(trainer):
    """The random states of every process, in rank order (each draws its own augmentations).
    A collective: every process calls it at the same point."""
    return distributed.all_gather_objects(rng_states(trainer.augment_generator, trainer.device))


def check_world_size(path, world_size):
    """Refuse to resume the checkpoint in `path` with another number of processes: the
    steps per epoch, the position in the epoch and the learning-rate schedule depend on it.
    Reads the checkpoint without loading its tensors (memory-mapped)."""
    saved = torch.load(path, map_location='cpu', weights_only=False, mmap=True).get('world_size')
    if saved is not None and saved != world_size:   # None: written before it was recorded
        raise UserError(f'--resume: this run was trained with {saved} '
                        f'process{"es" if saved > 1 else ""}; resume it with {saved} '
                        f'(got {world_size})')


def restore(path, trainer, progress):
    """Put a training_state back into `trainer` and `progress`; each process takes its own
    random states."""
    state = load(path, trainer.device)
    trainer.model.load_state_dict(state['model'])
    trainer.optimizer.load_state_dict(state['optimizer'])
    trainer.scheduler.load_state_dict(state['scheduler'])
    trainer.scaler.load_state_dict(state['scaler'])
    for f in fields(progress):
        setattr(progress, f.name, state[f.name])
    progress.sums = {k: v.to(trainer.device) for k, v in progress.sums.items()}
    progress.counted, progress.skipped = (torch.as_tensor(v).to(trainer.device)
                                          for v in (progress.counted, progress.skipped))
    saved = state['rng']        # one dict for all processes in checkpoints before the list
    own = saved if isinstance(saved, dict) else saved[trainer.rank]
    set_rng_states(own, trainer.augment_generator, trainer.device)


def rng_states(augment_generator, device):
    """This process's random states; on CUDA, those of its own device only."""
    states = {'python': random.getstate(), 'numpy': np.random.get_state(),
              'torch': torch.get_rng_state(), 'augment': augment_generator.get_state()}
    if device.type == 'cuda':
        states['cuda'] = torch.cuda.get_rng_state(device)
    return states


def set_rng_states(states, augment_generator, device):
    random.setstate(states['python'])
    np.random.set_state(states['numpy'])
    torch.set_rng_state(states['torch'])
    augment_generator.set_state(states['augment'])
    cuda = states.get('cuda') if device.type == 'cuda' else None
    if isinstance(cuda, (list, tuple)):     # older checkpoints: every visible device's state
        index = device.index if device.index is not None else torch.cuda.current_device()
        cuda = cuda[index] if index < len(cuda) else None
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


def load_model(path, device='cpu'):
    """A trained model from a checkpoint file or a run directory (its checkpoint_best.pt),
    in eval mode, with the checkpoint dict (config, classes, regime, epoch...)."""
    import model as model_module
    checkpoint = load(checkpoint_path(path), device)
    model = model_module.build(checkpoint['config'], len(checkpoint['classes']), checkpoint['regime'])
    model.load_state_dict(checkpoint['model'])
    return model.to(device).eval(), checkpoint


def load_encoder(model, path, device):
    """Initialise the encoder from another run's checkpoint (e.g. self-supervised
    pre-training), leaving the heads new."""
    path = checkpoint_path(path)
    try:
        state = load(path, device)['model']
    except Exception as error:          # torch.load of a foreign file: many types
        raise UserError(f'--init_from={path}: cannot load it as a checkpoint of this project '
                        f'({type(error).__name__})') from None
    encoder = {k[len('encoder.'):]: v for k, v in state.items() if k.startswith('encoder.')}
    try:
        model.encoder.load_state_dict(encoder)
    except RuntimeError as error:
        raise UserError(f'--init_from={path}: its encoder does not match this one (same '
                        f'--encoder_width?): {str(error).splitlines()[0]}') from None
