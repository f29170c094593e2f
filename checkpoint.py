"""What a checkpoint holds and how it goes back: the one place that saves a run's state,
restores it for --resume, and loads a trained model or encoder from a file.

A checkpoint is a dict: the state of the model, optimiser, schedule and gradient scaler;
the progress (Progress: epoch, batch, step, running sums, timing, best validation accuracy);
every random number generator's state, for each process of a torchrun run; the number of
processes; and the run's config, regime, classes and clip length.

Everything in it is a tensor or a plain Python value, so it is read with
torch.load(weights_only=True): a file from elsewhere cannot run code when it is loaded.
"""
import os
import pickle
import random
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

import distributed
from config import UserError
from rundir import checkpoint_path, init_from_file


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


def _numpy_globals():
    """What numpy arrays and scalars pickle as: the older checkpoints of this project hold
    numpy's random state (an ndarray) and may hold numpy scalars. Their reconstruct
    functions are listed under both module names (numpy 1 wrote numpy.core, numpy 2
    writes numpy._core); dtypes are allowed only as the plain numeric ones."""
    try:
        from numpy._core import multiarray
    except ImportError:                 # numpy 1
        from numpy.core import multiarray
    named = [(function, f'{module}.multiarray.{function.__name__}')
             for function in (multiarray._reconstruct, multiarray.scalar)
             for module in ('numpy.core', 'numpy._core')]
    dtypes = [getattr(np.dtypes, f'{kind}DType') for kind in (
        'Bool', 'Int8', 'Int16', 'Int32', 'Int64', 'UInt8', 'UInt16', 'UInt32', 'UInt64',
        'Float16', 'Float32', 'Float64')]
    return [np.ndarray, np.dtype, *named, *dtypes]


def load(path, device='cpu'):
    """The checkpoint dict in `path` (a file; see rundir.checkpoint_path for run directories),
    read with weights_only=True: tensors, plain values and numpy's numeric arrays and
    scalars only. Anything else (a file whose pickle would call a function, or no
    checkpoint at all) is refused with a UserError; nothing in it runs."""
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location=device, weights_only=True)
    except Exception as error:          # refused, not a torch file, truncated: many types
        raise UserError(f'{path}: cannot load it as a checkpoint of this project '
                        f'({_reason(error)})') from None


def _reason(error):
    """Why torch.load failed, in one line."""
    text = str(error)
    called = re.search(r'GLOBAL ([\w.]+)', text)
    built = re.search(r'but got (<class [^>]*>)', text)
    if called or built:
        what = f'call {called.group(1)}' if called else f'build {built.group(1)}'
        return (f'refused: loading it would {what}, and this project\'s checkpoints hold only '
                f'tensors and plain values')
    if isinstance(error, pickle.UnpicklingError):
        return 'not a PyTorch file, or one holding more than tensors and plain values'
    first = text.strip().splitlines()[0] if text.strip() else ''
    return f'{type(error).__name__}: {first[:200]}'


def training_state(trainer, progress, rng):
    """Everything --resume needs to continue exactly, and what evaluation needs to rebuild
    the model. `rng`: every process's random states, in rank order (every_rank_rng_states)."""
    return {'model': trainer.model.state_dict(), 'optimizer': trainer.optimizer.state_dict(),
            'scheduler': trainer.scheduler.state_dict(), 'scaler': trainer.scaler.state_dict(),
            **{f.name: getattr(progress, f.name) for f in fields(progress)},
            'rng': rng, 'world_size': trainer.world_size,
            'pseudo_labels': trainer.pseudo.state_dict() if trainer.pseudo is not None else {},
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
    if trainer.pseudo is not None:
        trainer.pseudo.load_state_dict(state['pseudo_labels'])
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
    states = {'python': random.getstate(), 'numpy': numpy_state(),
              'torch': torch.get_rng_state(), 'augment': augment_generator.get_state()}
    if device.type == 'cuda':
        states['cuda'] = torch.cuda.get_rng_state(device)
    return states


def set_rng_states(states, augment_generator, device):
    random.setstate(states['python'])
    np.random.set_state(numpy_state_from(states['numpy']))
    torch.set_rng_state(states['torch'])
    augment_generator.set_state(states['augment'])
    cuda = states.get('cuda') if device.type == 'cuda' else None
    if isinstance(cuda, (list, tuple)):     # older checkpoints: every visible device's state
        index = device.index if device.index is not None else torch.cuda.current_device()
        cuda = cuda[index] if index < len(cuda) else None
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


def numpy_state():
    """numpy's global random state with its key array as a tensor, which weights_only loads."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return (name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian)


def numpy_state_from(saved):
    """np.random.set_state's argument from numpy_state(), or from the tuple with an ndarray
    that older checkpoints hold."""
    name, keys, position, has_gauss, cached_gaussian = saved
    return (name, np.asarray(keys).astype(np.uint32), position, has_gauss, cached_gaussian)


def load_model(path, device='cpu'):
    """A trained model from a checkpoint file or a run directory (its checkpoint_best.pt),
    in eval mode, with the checkpoint dict (config, classes, regime, epoch...)."""
    import model as model_module
    checkpoint = load(checkpoint_path(path), device)
    model = model_module.build(checkpoint['config'], len(checkpoint['classes']), checkpoint['regime'])
    model.load_state_dict(checkpoint['model'])
    return model.to(device).eval(), checkpoint


def check_init_from(cfg, clip_samples=None):
    """Refuse an --init_from checkpoint whose encoder was trained on another input than this
    run's: another encoder, width, front end or sample rate, or (given this run's
    clip_samples, once its data is loaded) another clip length. The heads are new, so
    nothing else has to match."""
    path = init_from_file(cfg['init_from'])
    saved = load(path)
    if not isinstance(saved, dict) or not isinstance(saved.get('model'), dict):
        raise UserError(f'--init_from={path}: not a checkpoint of this project (it holds no '
                        f'model weights); give a run directory or one of its checkpoint_*.pt')
    # configurations from before the 1D encoder do not name the encoder
    theirs, ours = {'encoder': 'resnet2d', **saved.get('config', {})}, {'encoder': 'resnet2d', **cfg}
    names = ['encoder', 'encoder_width', 'sample_rate']
    if ours['encoder'] == 'resnet2d':
        names.append('frontend')        # the 1D encoder reads the waveform itself
    for name in names:
        if name in theirs and theirs[name] != ours[name]:
            raise UserError(f'--init_from={path}: its encoder was trained with '
                            f'--{name}={theirs[name]}, this run has --{name}={ours[name]}; give '
                            f'--{name}={theirs[name]} or another checkpoint')
    if clip_samples and saved.get('clip_samples') and int(saved['clip_samples']) != clip_samples:
        rate = ours['sample_rate']
        raise UserError(f'--init_from={path}: its encoder was trained on clips of '
                        f'{int(saved["clip_samples"])} samples ({int(saved["clip_samples"]) / rate:g} s), '
                        f'this run\'s are {clip_samples} ({clip_samples / rate:g} s); give '
                        f'--clip_seconds={int(saved["clip_samples"]) / rate:g} or another checkpoint')


def load_encoder(model, path, device):
    """Initialise the encoder from another run's checkpoint (e.g. self-supervised
    pre-training), leaving the heads new. check_init_from has compared the settings."""
    path = checkpoint_path(path)
    state = load(path, device)['model']
    encoder = {k[len('encoder.'):]: v for k, v in state.items() if k.startswith('encoder.')}
    try:
        model.encoder.load_state_dict(encoder)
    except RuntimeError as error:
        raise UserError(f'--init_from={path}: its encoder\'s weights do not fit this model: '
                        f'{str(error).splitlines()[0]}') from None
