"""What a checkpoint holds and how it goes back: the one place that saves a run's state,
restores it for --resume, and loads a trained model or encoder from a file.

A checkpoint is a dict: the state of the model, optimiser, schedule and gradient scaler;
the progress (Progress: epoch, batch, step, running sums, timing, best validation accuracy);
every random number generator's state; and the run's config, regime, classes and clip length.
"""
import os
import random
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from config import UserError
from rundir import checkpoint_path


@dataclass
class Progress:
    """Where a run is: completed epochs, batches done in the current one, optimiser steps,
    the running sums of the logged losses since the last validation (on the device, so
    that no step waits for them), and what the results report."""
    epoch: int = 0
    batch: int = 0
    step: int = 0
    sums: dict = field(default_factory=dict)
    counted: object = 0                 # finite steps since the last validation (a device tensor)
    skipped: object = 0                 # non-finite steps since the last validation
    best_val_accuracy: float = -1.0
    clips_seen: int = 0
    train_seconds: float = 0.0
    epoch_seconds: float = 0.0          # training time since the last validation

    def count(self, finite, logs, clips, seconds):
        """One step done: its losses join the epoch's sums unless it was not finite."""
        self.batch, self.step = self.batch + 1, self.step + 1
        self.counted, self.skipped = self.counted + finite, self.skipped + ~finite
        for name, value in logs.items():
            self.sums[name] = self.sums.get(name, 0) + torch.where(finite, value, 0.0)
        self.clips_seen += clips
        self.train_seconds += seconds
        self.epoch_seconds += seconds

    def means(self):
        """The mean of every logged loss over the finite steps since the last validation."""
        return {name: (total / max(1, int(self.counted))).item() for name, total in self.sums.items()}

    def end_epoch(self):
        self.epoch, self.batch = self.epoch + 1, 0

    def new_record(self):
        self.sums, self.counted, self.skipped, self.epoch_seconds = {}, 0, 0, 0.0


def save(state, path):
    """Write a checkpoint atomically: a stop mid-write leaves the previous one intact."""
    temporary = Path(f'{path}.tmp')
    torch.save(state, temporary)
    os.replace(temporary, path)


def load(path, device='cpu'):
    """The checkpoint dict in `path` (a file; see rundir.checkpoint_path for run directories)."""
    return torch.load(path, map_location=device, weights_only=False)


def training_state(trainer, progress):
    """Everything --resume needs to continue exactly, and what evaluation needs to rebuild
    the model."""
    return {'model': trainer.model.state_dict(), 'optimizer': trainer.optimizer.state_dict(),
            'scheduler': trainer.scheduler.state_dict(), 'scaler': trainer.scaler.state_dict(),
            **{f.name: getattr(progress, f.name) for f in fields(progress)},
            'rng': rng_states(trainer.augment_generator),
            'config': trainer.cfg, 'regime': trainer.regime, 'classes': trainer.data.classes,
            'clip_samples': trainer.data.clip_samples}


def restore(path, trainer, progress):
    """Put a training_state back into `trainer` and `progress`."""
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
    set_rng_states(state['rng'], trainer.augment_generator)


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
