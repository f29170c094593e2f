"""Runs that survive: exact resume after a stop between or inside epochs, signals,
non-finite losses."""
import json
import signal
import subprocess
import sys
import time

import pytest
import torch

import checkpoint
import engine
import train
from config import UserError
from tests.conftest import ROOT, tiny_run


@pytest.fixture(scope='module')
def data_root(tiny_root):
    return tiny_root


def options(data_root, name, **overrides):
    return tiny_run(data_root, name, **overrides)


def train_run(cfg, given=()):
    return engine.run(cfg, 'clar', train.loss, 'all', given)


def finished(run_dir):
    metrics = [json.loads(l) for l in (run_dir / 'metrics.jsonl').read_text().splitlines()]
    weights = checkpoint.load(run_dir / 'checkpoint_last.pt')['model']
    return metrics, weights, json.loads((run_dir / 'results.json').read_text())


def assert_same_run(a, b, epochs=(1, 2, 3, 4)):
    metrics_a, weights_a, results_a = a
    metrics_b, weights_b, results_b = b
    assert [m['epoch'] for m in metrics_a] == [m['epoch'] for m in metrics_b] == list(epochs)
    for x, y in zip(metrics_a, metrics_b):
        for key in ('loss', 'nt_xent', 'ce', 'val_accuracy', 'learning_rate'):
            assert x[key] == pytest.approx(y[key], rel=1e-4, abs=1e-6), key
    for name in weights_a:
        assert torch.allclose(weights_a[name].float(), weights_b[name].float(), rtol=1e-4, atol=1e-5), name
    for key in ('val_accuracy', 'test_accuracy', 'probe_test_accuracy', 'best_epoch'):
        assert results_a[key] == pytest.approx(results_b[key]), key


@pytest.fixture(scope='module')
def uninterrupted(data_root):
    train_run(options(data_root, 'whole'))
    return finished(data_root / 'runs' / 'whole')


@pytest.mark.parametrize('stop', [{'stop_after_epochs': 2}, {'stop_after_steps': 5}],
                         ids=['between-epochs', 'inside-an-epoch'])
def test_a_stopped_run_resumes_to_the_same_result(data_root, uninterrupted, stop):
    name = next(iter(stop))
    with pytest.raises(engine.Stopped, match=f'stopped by {name}'):
        train_run(options(data_root, name, **stop))
    run_dir = data_root / 'runs' / name
    assert json.loads((run_dir / 'status.json').read_text())['status'] == 'interrupted'
    assert not (run_dir / 'results.json').exists()
    train_run(options(data_root, '', resume=str(run_dir)), given={'resume'})
    assert json.loads((run_dir / 'status.json').read_text())['status'] == 'finished'
    assert_same_run(uninterrupted, finished(run_dir))


def test_resume_refuses_changed_options_and_finished_runs(data_root, uninterrupted):
    with pytest.raises(UserError, match='already finished'):
        train_run(options(data_root, '', resume=str(data_root / 'runs' / 'whole')), {'resume'})
    with pytest.raises(UserError, match='drop --learning_rate'):
        train_run(options(data_root, '', resume=str(data_root / 'runs' / 'whole')),
                  {'resume', 'learning_rate'})
    with pytest.raises(UserError, match='no config.json'):
        train_run(options(data_root, '', resume=str(data_root / 'nowhere')), {'resume'})


def test_non_finite_losses_are_skipped_then_stop_the_run(data_root):
    calls = {'n': 0}

    def sometimes_nan(model, views, labels, labelled, cfg):
        calls['n'] += 1
        loss, parts = train.loss(model, views, labels, labelled, cfg)
        return (loss * float('nan') if calls['n'] == 2 else loss), parts
    engine.run(options(data_root, 'one-nan', epochs=1, warmup_epochs=0), 'clar', sometimes_nan, 'all')
    metrics = json.loads((data_root / 'runs' / 'one-nan' / 'metrics.jsonl').read_text())
    assert metrics['skipped_steps'] == 1 and metrics['loss'] == metrics['loss']   # not NaN

    def nan_after_first_epoch(model, views, labels, labelled, cfg):
        calls['n'] += 1
        loss, parts = train.loss(model, views, labels, labelled, cfg)
        return (loss * float('nan') if calls['n'] > 100 + 3 else loss), parts
    calls['n'] = 100
    run_dir = data_root / 'runs' / 'all-nan'
    with pytest.raises(UserError, match='not finite for 3 steps in a row.*checkpoint_last.pt'):
        engine.run(options(data_root, 'all-nan', max_nonfinite_steps=3), 'clar',
                   nan_after_first_epoch, 'all')
    kept = checkpoint.load(run_dir / 'checkpoint_last.pt')
    assert kept['epoch'] == 1 and all(torch.isfinite(v).all() for v in kept['model'].values()
                                      if v.is_floating_point())
    assert json.loads((run_dir / 'status.json').read_text())['status'] == 'failed'


def test_sigterm_checkpoints_prints_the_resume_command_and_exits_non_zero(data_root):
    run_dir = data_root / 'runs' / 'signalled'
    cfg = options(data_root, 'signalled', epochs=30)
    command = [sys.executable, 'train.py', *[f'--{k}={v}' for k, v in cfg.items()
                                             if k in ('dataset', 'data_root', 'cache_dir', 'out_dir',
                                                      'run_name', 'encoder_width', 'batch_size',
                                                      'epochs', 'label_fraction')]]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.time() + 120
    while not (run_dir / 'metrics.jsonl').exists() and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 3, err[-2000:]
    assert f'--resume={run_dir}' in err and 'stopped by SIGTERM' in err
    assert 'Traceback' not in err
    assert json.loads((run_dir / 'status.json').read_text())['status'] == 'interrupted'
    state = checkpoint.load(run_dir / 'checkpoint_last.pt')
    assert state['epoch'] >= 1 and state['epoch'] < 30


def test_a_second_signal_exits_at_once(monkeypatch):
    calls = []
    monkeypatch.setattr(engine.os, '_exit', lambda status: calls.append(('exit', status)))
    stop = engine.StopSignal(on_second=lambda: calls.append('marked interrupted'))
    with stop:
        assert signal.getsignal(signal.SIGINT) == stop.handle
        stop.handle(signal.SIGINT, None)
        assert stop.received == 'SIGINT' and calls == []        # the first only asks to stop
        stop.handle(signal.SIGTERM, None)
    assert calls == ['marked interrupted', ('exit', 128 + signal.SIGTERM)]
    assert signal.getsignal(signal.SIGINT) != stop.handle        # handlers restored
