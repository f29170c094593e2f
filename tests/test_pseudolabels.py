"""Pseudo-labels (train.py --pseudo_labels): the loss term, the per-class thresholds, the
teacher, whole runs (logs, results, exact resume, pools), bad values, two processes."""
import json
import os

import numpy as np
import pytest
import torch

import checkpoint
import distributed
import config
import engine
import pseudolabels
import train
from config import UserError
from model import pseudo_cross_entropy
from tests.conftest import tiny_run, write_speechcommands
from tests.test_distributed import run_processes, toy_config, toy_data
from trainer import Trainer


# ---------------------------------------------------------------- the pieces

def test_pseudo_cross_entropy_counts_confident_unlabelled_rows_over_all_unlabelled():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0], [3.0, 0.0]])
    targets = torch.tensor([0, 0, 1, 1])
    confident = torch.tensor([True, True, False, True])
    unlabelled = torch.tensor([True, True, True, False])    # row 3 is labelled: never counted
    losses = torch.nn.functional.cross_entropy(logits, targets, reduction='none')
    expected = (losses[0] + losses[1]) / 3
    assert pseudo_cross_entropy(logits, targets, confident, unlabelled).item() == pytest.approx(
        expected.item())
    none = torch.zeros(4, dtype=torch.bool)
    assert pseudo_cross_entropy(logits, targets, none, unlabelled).item() == 0
    assert pseudo_cross_entropy(logits, targets, confident, none).item() == 0


def test_flexmatch_thresholds_warm_up_then_follow_each_class():
    memory = torch.full((10,), -1)
    assert pseudolabels.flexmatch_thresholds(memory, 10, 3, 0.9).tolist() == [0, 0, 0]
    memory[:6], memory[6:9] = 0, 1          # class 0: 6 confident clips, class 1: 3, one not yet
    got = pseudolabels.flexmatch_thresholds(memory, 10, 3, 0.9)
    assert got.tolist() == pytest.approx([0.9, 0.9 * 0.5 / 1.5, 0.0])
    # while most clips are not yet confident, they bound every class (the warm-up)
    got = pseudolabels.flexmatch_thresholds(memory, 100, 3, 0.9)
    beta = torch.tensor([6, 3, 0]) / 91
    assert got.tolist() == pytest.approx((0.9 * beta / (2 - beta)).tolist())


def test_weak_forward_leaves_batchnorm_statistics_alone():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pseudolabels.frozen_batchnorm_statistics(model):
        model(torch.randn(8, 4) * 5 + 3)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    model(torch.randn(8, 4) * 5 + 3)                        # the check has teeth
    assert not torch.equal(model[1].running_mean, before['1.running_mean'])
    assert model[1].momentum == 0.1


def test_ema_update_moves_the_teacher_part_of_the_way():
    student, teacher = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    old = teacher.weight.detach().clone()
    pseudolabels.ema_update(teacher, student, 0.9)
    assert torch.allclose(teacher.weight, 0.9 * old + 0.1 * student.weight.detach())


# ---------------------------------------------------------------- a trainer's steps

def steps(trainer, count):
    for batch in trainer.epoch_batches(0)[:count]:
        waves, labels, labelled = trainer.load_batch(batch)
        trainer.optimise(trainer.make_views(waves), labels, labelled, clean=waves,
                         clips=trainer.clips_of(batch), epoch=0)
    return [p.detach().clone() for p in trainer.model.parameters()]


def toy_trainer(data, **options):
    torch.manual_seed(0)
    cfg = {**toy_config(**options), 'label_fraction': 0.25, 'batch_size': 8}
    return Trainer(cfg, 'clar', train.loss, 'all', data, torch.device('cpu'))


def test_hidden_labels_never_reach_the_loss():
    """Scrambling the labels of the clips outside the labelled subset changes the
    pseudo-labels' logged accuracy but not a single weight."""
    data = toy_data(train_clips=32)
    trainer = toy_trainer(data, pseudo_labels='fixed', pseudo_threshold=0.3)
    weights = steps(trainer, 3)
    other = toy_trainer(toy_data(train_clips=32), pseudo_labels='fixed', pseudo_threshold=0.3)
    hidden = np.setdiff1d(other.data.splits['train'], other.labelled_indices)
    assert np.array_equal(other.labelled_indices, trainer.labelled_indices) and len(hidden)
    other.data.labels[hidden] = (other.data.labels[hidden] + 1) % 3    # once the subset is drawn
    other_weights = steps(other, 3)
    for a, b in zip(weights, other_weights):
        assert torch.equal(a, b)
    assert trainer.pseudo.summary()['pseudo_accuracy_all'] != other.pseudo.summary()['pseudo_accuracy_all']


def test_with_weight_zero_the_machinery_changes_nothing():
    """The weak forward, the teacher and the counts touch neither the weights, nor the
    BatchNorm statistics, nor the random draws: weight 0 trains exactly as plain CLAR."""
    data = toy_data(train_clips=32)
    plain = steps(toy_trainer(data), 3)
    for options in ({}, {'ema_decay': 0.5}, {'pseudo_labels': 'per_class'}):
        options = {'pseudo_labels': 'fixed', 'pseudo_weight': 0.0, **options}
        trainer = toy_trainer(data, **options)
        for a, b in zip(plain, steps(trainer, 3)):
            assert torch.equal(a, b), options
        assert trainer.pseudo.counts[0] > 0                # it did label
    with_term = steps(toy_trainer(data, pseudo_labels='fixed', pseudo_threshold=0.3), 3)
    assert not all(torch.equal(a, b) for a, b in zip(plain, with_term))


# ---------------------------------------------------------------- whole runs

@pytest.fixture(scope='module')
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp('pseudo')
    write_speechcommands(root / 'sc', speakers=6, takes=2)
    return root


def run(cfg, given=()):
    return engine.run(cfg, 'clar', train.loss, 'all', given)


def read(run_dir):
    metrics = [json.loads(line) for line in (run_dir / 'metrics.jsonl').read_text().splitlines()]
    return metrics, json.loads((run_dir / 'results.json').read_text())


PSEUDO = dict(pseudo_labels='per_class', pseudo_threshold=0.4, ema_decay=0.5,
              pseudo_start_epoch=1)


def test_a_run_logs_and_reports_the_share_and_the_accuracy(root):
    results = run(tiny_run(root, 'logs', **PSEUDO))
    metrics, saved = read(root / 'runs' / 'logs')
    assert saved['pseudo_share_confident'] == pytest.approx(results['pseudo_share_confident'])
    assert 'pseudo_ce' not in metrics[0] and 'pseudo_share_confident' not in metrics[0]
    for record in metrics[1:]:              # from the start epoch on
        assert 0 <= record['pseudo_share_confident'] <= 1 and record['pseudo_ce'] >= 0
        assert 0 <= record['pseudo_accuracy_all'] <= 1
    # 3 of the 4 epochs, every unlabelled row of every batch, half the training clips hidden
    cfg = config.script_defaults(vars(train))
    assert 0 < saved['pseudo_unlabelled_seen'] <= 3 * saved['training_clips'] // 2 + 8
    assert saved['pseudo_hidden_seen'] == saved['pseudo_unlabelled_seen']
    assert 0 <= saved['pseudo_share_confident'] <= 1
    assert len(saved['pseudo_thresholds']) == 3
    assert all(0 <= t <= 0.4 for t in saved['pseudo_thresholds'])
    assert cfg['pseudo_labels'] == 'off'    # the default: the paper's CLAR


def test_a_stopped_run_resumes_to_the_same_result(root):
    run(tiny_run(root, 'whole', **PSEUDO))
    with pytest.raises(engine.Stopped):
        run(tiny_run(root, 'parts', stop_after_steps=7, **PSEUDO))
    resumed = tiny_run(root, 'ignored', resume=str(root / 'runs' / 'parts'))
    run(resumed, given={'resume'})
    (whole_metrics, whole), (parts_metrics, parts) = (read(root / 'runs' / 'whole'),
                                                      read(root / 'runs' / 'parts'))
    for a, b in zip(whole_metrics, parts_metrics):
        for key in ('loss', 'pseudo_ce', 'pseudo_share_confident', 'val_accuracy'):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    for key in ('pseudo_unlabelled_seen', 'pseudo_share_confident', 'pseudo_thresholds',
                'val_accuracy', 'test_accuracy'):
        assert whole[key] == pytest.approx(parts[key], rel=1e-4), key
    a = checkpoint.load(root / 'runs' / 'whole' / 'checkpoint_last.pt')
    b = checkpoint.load(root / 'runs' / 'parts' / 'checkpoint_last.pt')
    for name, value in a['pseudo_labels']['teacher'].items():
        assert torch.allclose(value.float(), b['pseudo_labels']['teacher'][name].float(),
                              rtol=1e-4, atol=1e-5), name
    assert torch.equal(a['pseudo_labels']['confident_class'], b['pseudo_labels']['confident_class'])


def test_unlabelled_pool_windows_are_pseudo_labelled_without_a_hidden_label(root, tmp_path):
    import soundfile
    pool = tmp_path / 'pool'
    pool.mkdir()
    rng = np.random.default_rng(0)
    soundfile.write(pool / 'long.wav', rng.normal(0, 0.1, 16000 * 6), 16000)
    results = run(tiny_run(root, 'pool', label_fraction=1.0, unlabelled_root=str(pool),
                           epochs=2, pseudo_labels='fixed', pseudo_threshold=0.3))
    assert results['unlabelled_clips'] == 6
    assert results['pseudo_unlabelled_seen'] > 0 and results['pseudo_hidden_seen'] == 0
    assert 'pseudo_accuracy' not in results and 'pseudo_accuracy_all' not in results


# ---------------------------------------------------------------- refused

@pytest.mark.parametrize('options, message', [
    ({'pseudo_labels': 'fixed', 'pseudo_threshold': 0.0}, r'--pseudo_threshold must be in \(0, 1\]'),
    ({'pseudo_labels': 'fixed', 'pseudo_threshold': 1.5}, r'--pseudo_threshold must be in \(0, 1\]'),
    ({'pseudo_labels': 'fixed', 'pseudo_weight': -0.5}, '--pseudo_weight must be 0 or more'),
    ({'pseudo_labels': 'fixed', 'ema_decay': 1.0}, r'--ema_decay must be in \[0, 1\)'),
    ({'pseudo_labels': 'fixed', 'ema_decay': -0.1}, r'--ema_decay must be in \[0, 1\)'),
    ({'pseudo_labels': 'always'}, 'unknown --pseudo_labels=always'),
    ({'pseudo_labels': 'fixed', 'pseudo_weak_view': 'pitch'}, 'unknown --pseudo_weak_view'),
    ({'pseudo_labels': 'fixed', 'pseudo_start_epoch': 4}, 'would never join the loss'),
    ({'pseudo_threshold': 0.8}, '--pseudo_threshold is read only with pseudo-labels on'),
    ({'pseudo_labels': 'fixed', 'label_fraction': 1.0}, 'nothing to pseudo-label'),
])
def test_bad_values_are_refused_before_anything_is_written(root, options, message):
    cfg = tiny_run(root, 'refused', **options)
    with pytest.raises(UserError, match=message):
        run(cfg, given=set(options))
    assert not (root / 'runs' / 'refused').exists()


@pytest.mark.parametrize('script', ['supervised', 'selfsupervised'])
def test_other_scripts_name_the_option_they_do_not_read(root, script, capsys):
    import importlib
    module = importlib.import_module(script)
    with pytest.raises(SystemExit) as stop:
        engine.main(vars(module), regime=script, loss=module.loss,
                    train_on='labelled' if script == 'supervised' else 'all',
                    argv=['--pseudo_labels=fixed', f'--out_dir={root}/refused_runs'])
    assert stop.value.code == 2
    assert ('--pseudo_labels is an option of train.py (clar) only; '
            f'{script}.py does not read it') in capsys.readouterr().err
    assert not (root / 'refused_runs').exists()


# ---------------------------------------------------------------- two processes

def per_class_worker(rank, world_size, out_dir):
    import torch.distributed as dist
    dist.init_process_group('gloo', rank=rank, world_size=world_size)
    torch.manual_seed(0)
    # a threshold below 1/3 with 3 classes: every unlabelled row's top class reaches it
    cfg = {**toy_config(pseudo_labels='per_class', pseudo_threshold=0.3), 'label_fraction': 0.25}
    trainer = Trainer(cfg, 'clar', train.loss, 'all',
                      toy_data(train_clips=32), torch.device('cpu'), rank, world_size)
    mine = []
    for batch in trainer.epoch_batches(0)[:3]:
        waves, labels, labelled = trainer.load_batch(batch)
        mine.append(trainer.clips_of(batch)[~labelled.numpy()])
        trainer.optimise(trainer.make_views(waves), labels, labelled, clean=waves,
                         clips=trainer.clips_of(batch), epoch=0)
    torch.save({'memory': trainer.pseudo.confident_class, 'thresholds': trainer.pseudo.thresholds(),
                'counts': trainer.pseudo.counts, 'mine': np.concatenate(mine)},
               os.path.join(out_dir, f'rank{rank}.pt'))
    distributed.shutdown(meet_first=True)     # both saved: tear down together (gloo can abort otherwise)


def test_per_class_statistics_agree_across_processes(tmp_path):
    """Each process labels its own share, and every process's memory holds the clips of
    both shares: the thresholds are the same everywhere."""
    run_processes(per_class_worker, str(tmp_path))
    ranks = [torch.load(tmp_path / f'rank{rank}.pt', weights_only=False) for rank in range(2)]
    assert torch.equal(ranks[0]['memory'], ranks[1]['memory'])
    assert torch.equal(ranks[0]['thresholds'], ranks[1]['thresholds'])
    assert torch.equal(ranks[0]['counts'], ranks[1]['counts'])
    remembered = set(np.flatnonzero(ranks[0]['memory'].numpy() >= 0))
    for got in ranks:           # every unlabelled row of both shares is remembered
        assert set(got['mine'].tolist()) <= remembered
    assert ranks[0]['counts'][0] == len(ranks[0]['mine']) + len(ranks[1]['mine'])
