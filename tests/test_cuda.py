"""CUDA against the CPU, with the tolerances stated in tools/gpu_check.py: both front ends,
every augmentation and one CLAR step agree; bf16 autocast gives finite losses close to
float32; int16 batches through pinned memory arrive bit-exact; random states round-trip.
Skipped without a CUDA device. tools/gpu_check.sh runs the same checks on a GPU machine,
with pytest or without it (python tools/gpu_check.py checks)."""
import importlib

import pytest
import torch

gpu_check = importlib.import_module('tools.gpu_check')

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')


@pytest.mark.parametrize('name', list(gpu_check.CHECKS))
def test_cuda_agrees_with_the_cpu(name):
    result = gpu_check.CHECKS[name](torch.device('cuda'))
    assert result.pop('ok'), result
