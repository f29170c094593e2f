"""Checkpoints are read with weights_only=True: what this project writes loads, older
checkpoints of this project still load, and a file whose pickle would run code is refused
without running it."""
import os
import random

import numpy as np
import pytest
import torch

import checkpoint
import evaluate
from config import UserError


class RunsACommand:
    """Pickles as a call of os.system, as a crafted checkpoint would."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / 'marker'
    crafted = tmp_path / 'crafted.pt'
    torch.save({'model': {}, 'config': RunsACommand(f'touch {marker}')}, crafted)
    with pytest.raises(UserError) as refused:
        checkpoint.load(crafted)
    message = str(refused.value)
    assert '\n' not in message and str(crafted) in message and 'system' in message
    assert not marker.exists()
    with pytest.raises(UserError):                  # evaluate.py's loader, and a run directory
        (tmp_path / 'run').mkdir()
        os.replace(crafted, tmp_path / 'run' / 'checkpoint_best.pt')
        evaluate.load(tmp_path / 'run')
    assert not marker.exists()


def test_a_file_that_is_no_checkpoint_is_refused_in_one_line(tmp_path):
    (tmp_path / 'notes.pt').write_text('not a checkpoint')
    with pytest.raises(UserError, match='cannot load it as a checkpoint of this project') as refused:
        checkpoint.load(tmp_path / 'notes.pt')
    assert '\n' not in str(refused.value)


def test_rng_states_round_trip_through_a_plain_weights_only_load(tmp_path):
    generator = torch.Generator().manual_seed(3)
    random.seed(1)
    np.random.seed(2)
    np.random.standard_normal()                     # leaves a cached gaussian in the state
    checkpoint.save({'rng': checkpoint.rng_states(generator, torch.device('cpu'))}, tmp_path / 'new.pt')
    expected = (random.random(), np.random.standard_normal(), np.random.rand(3),
                torch.rand(2, generator=generator))
    random.seed(9)
    np.random.seed(9)
    generator.manual_seed(9)
    saved = torch.load(tmp_path / 'new.pt', weights_only=True)   # no allow-list needed
    checkpoint.set_rng_states(saved['rng'], generator, torch.device('cpu'))
    got = (random.random(), np.random.standard_normal(), np.random.rand(3),
           torch.rand(2, generator=generator))
    assert got[:2] == expected[:2] and np.array_equal(got[2], expected[2])
    assert torch.equal(got[3], expected[3])


def test_an_older_checkpoint_of_this_project_still_loads_and_restores(tmp_path):
    """Written as the code before weights_only did: numpy's state as its own tuple (with an
    ndarray), python's as random.getstate(), a numpy scalar among the values."""
    generator = torch.Generator().manual_seed(5)
    np.random.seed(4)
    random.seed(4)
    old = {'model': {'w': torch.ones(2)}, 'epoch': 3, 'best_val_accuracy': np.float64(0.75),
           'clip_samples': np.int64(16000),
           'rng': {'python': random.getstate(), 'numpy': np.random.get_state(),
                   'torch': torch.get_rng_state(), 'augment': generator.get_state()}}
    torch.save(old, tmp_path / 'old.pt')
    expected = (random.random(), np.random.rand(4))
    np.random.seed(0)
    random.seed(0)
    loaded = checkpoint.load(tmp_path / 'old.pt')
    assert loaded['epoch'] == 3 and loaded['best_val_accuracy'] == 0.75
    assert torch.equal(loaded['model']['w'], torch.ones(2))
    checkpoint.set_rng_states(loaded['rng'], generator, torch.device('cpu'))
    assert random.random() == expected[0] and np.array_equal(np.random.rand(4), expected[1])
