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
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import numpy as np

import distributed
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
    distributed.shutdown(meet_first=True)     # both saved: tear down together (gloo can abort otherwise)


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
    distributed.shutdown(meet_first=True)     # both saved: tear down together (gloo can abort otherwise)


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


# ------------------------------------------------------------ whole runs in two processes

class CollectiveBatchNorm(torch.nn.BatchNorm2d):
    """Stands in for SyncBatchNorm, which needs CUDA: like it, every forward in train mode
    is a collective, so a process that runs one alone waits for the others forever."""

    def forward(self, x):
        if self.training and dist.is_initialized():
            dist.all_reduce(torch.zeros(1))
        return super().forward(x)


def engine_worker(rank, world_size, cfg, given, signal_at_step, out_dir):
    """engine.run in one of two processes, as torchrun would start it, with every
    BatchNorm2d a CollectiveBatchNorm; the statistics after each re-estimation are saved.
    `signal_at_step`: SIGTERM to process 1 inside that step. Writes how the run ended."""
    import signal

    import engine
    import evaluation
    import model as model_module
    import train
    build, recalibrate = model_module.build, evaluation.recalibrate_batchnorm
    name = cfg['run_name'] or Path(cfg['resume']).name + '-resumed'
    steps = {'n': 0}

    def loss(model, views, labels, labelled, cfg):
        steps['n'] += 1
        if rank == 1 and steps['n'] == signal_at_step:
            os.kill(os.getpid(), signal.SIGTERM)
        return train.loss(model, views, labels, labelled, cfg)

    def collective_build(*args):
        built = build(*args)
        for module in built.modules():
            if type(module) is torch.nn.BatchNorm2d:
                module.__class__ = CollectiveBatchNorm
        return built

    def recalibrate_and_keep(model, *args):
        recalibrate(model, *args)
        torch.save({key: value for key, value in model.state_dict().items() if 'running' in key},
                   os.path.join(out_dir, f'{name}-step{steps["n"]}-batchnorm-rank{rank}.pt'))
    model_module.build, evaluation.recalibrate_batchnorm = collective_build, recalibrate_and_keep
    try:
        engine.run(cfg, 'clar', loss, 'all', given)
        outcome = {'finished': True}
    except engine.Stopped as stopped:
        outcome = {'finished': False, 'requested': stopped.requested,
                   'stopped': str(stopped).split('. Continue with')[0]}
    Path(out_dir, f'{name}-rank{rank}.json').write_text(json.dumps(outcome))


@pytest.fixture(scope='module')
def two_process_runs(tmp_path_factory):
    """Runs of train.py's regime in two processes, each started afresh as torchrun would:
    a whole run (2 epochs of 3 steps); one stopped inside its second epoch, then resumed;
    one where only process 1 receives a SIGTERM, in step 2 (log_every=2)."""
    from tests.conftest import tiny_run
    root = tmp_path_factory.mktemp('ddp')
    write_speechcommands(root / 'sc', speakers=6, takes=2)    # 24 training clips
    runs = {'whole': ({}, None), 'stopped': ({'stop_after_steps': 4}, None),
            'stopped-resumed': ({'run_name': '', 'resume': str(root / 'runs' / 'stopped')}, None),
            'signalled': ({'log_every': 2}, 2)}
    outcomes = {}
    for name, (overrides, signal_at_step) in runs.items():
        cfg = tiny_run(root, name, **{'device': 'cpu', 'batch_size': 4, 'epochs': 2, **overrides})
        run_processes(engine_worker, cfg, {'resume'} if cfg['resume'] else set(), signal_at_step,
                      str(root), timeout=150)
        outcomes[name] = [json.loads((root / f'{name}-rank{rank}.json').read_text())
                          for rank in range(2)]
    return root, outcomes


def test_batchnorm_reestimation_meets_on_every_process(two_process_runs):
    """With --sync_batchnorm every train-mode forward is a collective. The re-estimation of
    the BatchNorm statistics before validation used to run on process 0 alone while the
    others waited in a barrier: a hang. Every process now re-estimates, on the same clips,
    and ends with the same statistics."""
    root, outcomes = two_process_runs
    assert outcomes['whole'] == [{'finished': True}] * 2
    kept = sorted(root.glob('whole-step*-batchnorm-rank0.pt'))
    assert [path.name.split('-')[1] for path in kept] == ['step3', 'step6']   # each epoch's end
    for path in kept:
        mine, theirs = torch.load(path), torch.load(str(path).replace('rank0', 'rank1'))
        assert mine.keys() == theirs.keys() and len(mine) > 10
        for name in mine:
            assert torch.equal(mine[name], theirs[name]), name


def test_a_resumed_two_process_run_is_exact(two_process_runs):
    """Every process saves its own random states (its augmentations differ from the
    others'); a resume gives each its own back and ends exactly where the whole run ends."""
    from tests.test_resume import assert_same_run, finished
    root, outcomes = two_process_runs
    assert outcomes['stopped'] == [{'finished': False, 'requested': True, 'stopped':
                                    'stopped by stop_after_steps in epoch 2 after batch 1'}] * 2
    assert outcomes['stopped-resumed'] == [{'finished': True}] * 2
    assert_same_run(finished(root / 'runs' / 'whole'), finished(root / 'runs' / 'stopped'),
                    epochs=[1, 2])


def test_a_signal_to_one_process_stops_all_at_the_same_step(two_process_runs):
    """A signal reaches the processes of a torchrun run at different steps; one that stopped
    alone would leave the others waiting. They agree at the next logged step: both stop
    after batch 2, and the checkpoint holds both processes' random states."""
    root, outcomes = two_process_runs
    assert outcomes['signalled'] == [
        {'finished': False, 'requested': False,
         'stopped': 'stopped by a signal to another process in epoch 1 after batch 2'},
        {'finished': False, 'requested': False,
         'stopped': 'stopped by SIGTERM in epoch 1 after batch 2'}]
    state = torch.load(root / 'runs' / 'signalled' / 'checkpoint_last.pt', weights_only=False)
    assert (state['epoch'], state['batch'], state['world_size']) == (0, 2, 2)
    assert len(state['rng']) == 2
    assert not torch.equal(state['rng'][0]['augment'], state['rng'][1]['augment'])


def test_a_resume_with_another_process_count_is_refused(two_process_runs):
    import engine
    import train
    from config import UserError
    from tests.conftest import tiny_run
    root, _ = two_process_runs
    cfg = tiny_run(root, '', resume=str(root / 'runs' / 'signalled'))
    with pytest.raises(UserError, match=r'trained with 2 processes; resume it with 2 \(got 1\)'):
        engine.run(cfg, 'clar', train.loss, 'all', {'resume'})
