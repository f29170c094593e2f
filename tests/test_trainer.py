"""trainer.py: the learning-rate schedule and the epoch order."""
import math

import numpy as np

from trainer import epoch_batches, learning_rate_factor


def test_warm_up_then_cosine_or_constant():
    cosine = learning_rate_factor(100, 10, 'cosine')
    constant = learning_rate_factor(100, 10, 'constant')
    assert [round(cosine(s), 3) for s in (0, 9)] == [round(1 / 11, 3), round(10 / 11, 3)]
    assert cosine(10) == 1.0 and math.isclose(cosine(55), 0.5) and cosine(99) < 0.01
    assert [constant(s) for s in (10, 55, 99)] == [1.0, 1.0, 1.0]
    assert constant(0) == cosine(0)
    assert learning_rate_factor(5, 10)(3) == 4 / 5           # the warm-up is cut to the run's length


def test_epoch_batches_are_a_seeded_shuffle_without_a_short_last_batch():
    indices = np.arange(100, 150)
    batches = epoch_batches(indices, 16, seed=1, epoch=3)
    assert [len(b) for b in batches] == [16, 16, 16]
    assert len(set(np.concatenate(batches).tolist())) == 48
    assert all(np.array_equal(a, b) for a, b in zip(batches, epoch_batches(indices, 16, 1, 3)))
    assert not all(np.array_equal(a, b) for a, b in zip(batches, epoch_batches(indices, 16, 1, 4)))
    assert [len(b) for b in epoch_batches(indices[:5], 16, 0, 0)] == [5]
