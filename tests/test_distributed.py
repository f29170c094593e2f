"""Two processes (gloo, CPU) on two halves of a batch give the same NT-Xent loss and the
same gradients as one process on the whole batch: the negatives span the global batch."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from model import global_nt_xent, nt_xent
from tests.conftest import ROOT, write_speechcommands


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def make_encoder():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))


def half_batch_worker(rank, world_size, port, views, out_dir):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world_size)
    model = torch.nn.parallel.DistributedDataParallel(make_encoder())
    share = len(views[0]) // world_size
    mine = [v[rank * share:(rank + 1) * share] for v in views]
    z1, z2 = model(torch.cat(mine)).chunk(2)      # both views in one pass, as the scripts do
    loss = global_nt_xent(z1, z2, 0.5)
    loss.backward()
    torch.save({'loss': loss.detach(), 'grads': [p.grad for p in model.parameters()]},
               os.path.join(out_dir, f'rank{rank}.pt'))
    dist.destroy_process_group()


def test_two_processes_match_one_process(tmp_path):
    torch.manual_seed(1)
    views = [torch.randn(6, 8), torch.randn(6, 8)]
    model = make_encoder()
    z1, z2 = model(torch.cat(views)).chunk(2)
    expected = nt_xent(z1, z2, 0.5)
    expected.backward()
    mp.spawn(half_batch_worker, args=(2, free_port(), views, str(tmp_path)), nprocs=2)
    for rank in range(2):
        got = torch.load(tmp_path / f'rank{rank}.pt')
        assert got['loss'].item() == pytest.approx(expected.item(), rel=1e-5)
        for grad, parameter in zip(got['grads'], model.parameters()):
            assert torch.allclose(grad, parameter.grad, rtol=1e-4, atol=1e-6)


def test_per_process_negatives_would_differ(tmp_path):
    """The check above has teeth: NT-Xent on each half alone is a different loss."""
    torch.manual_seed(1)
    z1, z2 = torch.randn(6, 4), torch.randn(6, 4)
    halves = (nt_xent(z1[:3], z2[:3]) + nt_xent(z1[3:], z2[3:])) / 2
    assert abs(halves.item() - nt_xent(z1, z2).item()) > 1e-3


def test_train_py_runs_under_torchrun(tmp_path):
    write_speechcommands(tmp_path / 'sc', speakers=6, takes=2)
    command = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
               '--master_port', str(free_port()), 'train.py', '--device=cpu',
               '--dataset=speechcommands', f'--data_root={tmp_path}/sc',
               f'--cache_dir={tmp_path}/cache', f'--out_dir={tmp_path}/runs', '--run_name=ddp',
               '--encoder_width=0.125', '--batch_size=4', '--epochs=2', '--warmup_epochs=1',
               ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / 'runs' / 'ddp' / 'results.json').read_text())
    assert results['processes'] == 2
    lines = (tmp_path / 'runs' / 'ddp' / 'metrics.jsonl').read_text().splitlines()
    assert len(lines) == 2                      # one writer: rank 0
