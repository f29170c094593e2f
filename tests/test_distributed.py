"""Distributed training with two gloo processes on the CPU: two halves of a batch give the
same NT-Xent loss and gradients as one process on the whole batch (the negatives span the
global batch); shares of equal size when the clips do not divide; steps skipped on every
process or on none; BatchNorm re-estimation that meets on every process; exact resume with
each process's own random states."""
import json
import os
import socket
import subprocess
import sys
import time
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import numpy as np

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


# ------------------------------------------------------------ processes that must not hang

def run_processes(worker, *args, world_size=2, timeout=180):
    """Run worker(rank, world_size, *args) in `world_size` fresh processes that can join one
    gloo group (MASTER_ADDR/PORT, RANK, WORLD_SIZE set, as torchrun does). Fails the test
    when a process fails, or is still running after `timeout` seconds: a hang."""
    context = mp.get_context('spawn')
    port = free_port()
    processes = [context.Process(target=_in_process, args=(worker, rank, world_size, port, args))
                 for rank in range(world_size)]
    for process in processes:
        process.start()
    deadline = time.time() + timeout
    for process in processes:
        process.join(max(0.0, deadline - time.time()))
    hung = [rank for rank, process in enumerate(processes) if process.is_alive()]
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()
    assert not hung, f'processes {hung} still running after {timeout} s: they hang'
    codes = [process.exitcode for process in processes]
    assert codes == [0] * world_size, f'exit codes {codes}'


def _in_process(worker, rank, world_size, port, args):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), OMP_NUM_THREADS='1')
    torch.set_num_threads(1)
    try:
        worker(rank, world_size, *args)
    except BaseException:
        traceback.print_exc()
        sys.exit(1)


def toy_data(train_clips, clip_samples=4000, classes=3):
    """An in-memory dataset of `train_clips` noise clips (and 4 validation, 4 test)."""
    import dataset
    count = train_clips + 8
    waves = np.random.default_rng(0).integers(-3000, 3000, (count, clip_samples), dtype=np.int16)
    splits = {'train': np.arange(train_clips), 'val': np.arange(train_clips, train_clips + 4),
              'test': np.arange(train_clips + 4, count)}
    return dataset.AudioData('toy', [f'c{i}' for i in range(classes)], 16000, clip_samples,
                             waves, np.arange(count) % classes, splits, [], [])


def toy_config(**overrides):
    import config
    import train
    cfg = config.script_defaults(vars(train))
    cfg.update(device='cpu', encoder_width=0.125, batch_size=4, augmentations='fade',
               label_fraction=1.0, epochs=1, warmup_epochs=0, **overrides)
    return cfg


def uneven_worker(rank, world_size, out_dir):
    import train
    from trainer import Trainer
    dist.init_process_group('gloo', rank=rank, world_size=world_size)
    trainer = Trainer(toy_config(), 'clar', train.loss, 'all', toy_data(train_clips=7),
                      torch.device('cpu'), rank, world_size)
    waves, labels, labelled = trainer.load_batch(trainer.epoch_batches(0)[0])
    finite, _ = trainer.optimise(trainer.make_views(waves), labels, labelled)
    before = [p.detach().clone() for p in trainer.model.parameters()]

    def not_finite_on_rank_1(model, views, labels, labelled, cfg):
        loss, parts = train.loss(model, views, labels, labelled, cfg)
        return loss * (float('nan') if rank == 1 else 1.0), parts
    trainer.loss_fn = not_finite_on_rank_1
    skipped, _ = trainer.optimise(trainer.make_views(waves), labels, labelled)
    unchanged = all(torch.equal(a, p) for a, p in zip(before, trainer.model.parameters()))
    torch.save({'global_batch': trainer.global_batch, 'share': len(waves), 'finite': bool(finite),
                'second_step_finite': bool(skipped), 'unchanged': unchanged,
                'weights': [p.detach() for p in trainer.model.parameters()]},
               os.path.join(out_dir, f'rank{rank}.pt'))
    dist.destroy_process_group()


def test_clips_that_do_not_divide_give_equal_shares_and_skips_agree(tmp_path):
    """7 clips, 2 processes: the global batch is 6, 3 each (a share of 4 and one of 3 would
    break the embeddings' all_gather). A loss that is not finite on one process only makes
    every process skip the step, so the weights stay equal."""
    run_processes(uneven_worker, str(tmp_path))
    ranks = [torch.load(tmp_path / f'rank{rank}.pt') for rank in range(2)]
    for got in ranks:
        assert (got['global_batch'], got['share'], got['finite']) == (6, 3, True)
        assert got['second_step_finite'] is False and got['unchanged']
    for a, b in zip(ranks[0]['weights'], ranks[1]['weights']):
        assert torch.equal(a, b)


def test_fewer_clips_than_processes_is_refused():
    from config import UserError
    from trainer import global_batch_size
    assert global_batch_size(4, 7, 2) == 6 and global_batch_size(4, 100, 2) == 8
    assert global_batch_size(256, 1000, 1) == 256 and global_batch_size(256, 10, 3) == 9
    with pytest.raises(UserError, match='3 training clips cannot be shared by 4 processes'):
        global_batch_size(8, 3, 4)
