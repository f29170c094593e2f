"""End to end: each script trains on a tiny Speech Commands fixture and writes its run."""
import json
import subprocess
import sys

import pytest
import torch

import checkpoint
from tests.conftest import ROOT, write_speechcommands

FAST = ['--encoder_width=0.125', '--batch_size=8', '--epochs=12', '--warmup_epochs=1',
        '--learning_rate=1e-3']


@pytest.fixture(scope='module')
def fixture_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('data')
    write_speechcommands(root / 'speech_commands_v0.02', speakers=12, takes=3)
    return root


def run_script(script, fixture_data, *options):
    command = [sys.executable, script, '--dataset=speechcommands',
               f'--data_root={fixture_data}/speech_commands_v0.02',
               f'--cache_dir={fixture_data}/cache', f'--out_dir={fixture_data}/runs', *FAST,
               *options]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize('script,regime,fraction', [
    ('train.py', 'clar', 0.5), ('supervised.py', 'supervised', 0.5),
    ('selfsupervised.py', 'selfsupervised', 0.5)])
def test_script_trains_and_writes_its_run(fixture_data, script, regime, fraction):
    result = run_script(script, fixture_data, f'--label_fraction={fraction}', f'--run_name={regime}')
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = fixture_data / 'runs' / regime
    assert f'run directory: {run_dir}' in result.stdout
    results = json.loads((run_dir / 'results.json').read_text())
    for key in ('regime', 'dataset', 'label_fraction', 'labelled_clips', 'epochs', 'seed',
                'val_accuracy', 'test_accuracy', 'per_class_test_accuracy', 'seconds',
                'clips_per_second', 'test_accuracy_from'):
        assert key in results
    assert results['regime'] == regime and results['label_fraction'] == fraction
    assert results['labelled_clips'] == 36       # half of 8 training speakers x 3 takes x 3 words
    assert set(results['per_class_test_accuracy']) == {'no', 'up', 'yes'}
    assert results['test_accuracy'] > 0.5, results          # chance is 1/3
    config = json.loads((run_dir / 'config.json').read_text())
    assert config['label_fraction'] == fraction and config['run_name'] == regime
    epochs = [json.loads(line) for line in (run_dir / 'metrics.jsonl').read_text().splitlines()]
    assert [e['epoch'] for e in epochs] == list(range(1, 13))
    assert {'loss', 'val_accuracy', 'learning_rate', 'seconds'} <= set(epochs[0])
    assert json.loads((run_dir / 'status.json').read_text())['status'] == 'finished'
    best = checkpoint.load(run_dir / 'checkpoint_best.pt')
    assert best['config']['label_fraction'] == fraction
    assert (run_dir / 'checkpoint_last.pt').exists()


def test_an_existing_run_is_never_overwritten(fixture_data):
    (fixture_data / 'runs').mkdir(exist_ok=True)
    existing = fixture_data / 'runs' / 'taken'
    existing.mkdir()
    (existing / 'results.json').write_text('{"keep": 1}')
    result = run_script('train.py', fixture_data, '--run_name=taken')
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert 'already exists' in result.stderr and '--run_name' in result.stderr
    assert (existing / 'results.json').read_text() == '{"keep": 1}'
    assert sorted(p.name for p in existing.iterdir()) == ['results.json']


def test_released_recipe_raw_audio_encoder_and_mlp_probe(fixture_data):
    result = run_script('train.py', fixture_data, '--optimizer=lars', '--learning_rate=0.5',
                        '--encoder=resnet1d', '--probe=mlp', '--epochs=2', '--run_name=options')
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((fixture_data / 'runs' / 'options' / 'results.json').read_text())
    assert results['probe'].startswith('MLP probe')
    state = checkpoint.load(fixture_data / 'runs' / 'options' / 'checkpoint_last.pt')
    assert state['model']['encoder.stem.0.weight'].shape[-1] == 9          # Conv1d, kernel 9
    assert 'lars' in state['optimizer']['param_groups'][0]


def test_supervised_fine_tuning_starts_from_a_pretrained_encoder(fixture_data):
    pretrained = fixture_data / 'runs' / 'selfsupervised' / 'checkpoint_best.pt'
    if not pretrained.exists():
        pytest.skip('needs the self-supervised run of test_script_trains_and_writes_its_run')
    result = run_script('supervised.py', fixture_data, f'--init_from={pretrained.parent}',
                        '--epochs=1', '--learning_rate=1e-9', '--warmup_epochs=0',
                        '--run_name=finetune', '--batchnorm_batches=0')
    assert result.returncode == 0, result.stderr[-2000:]
    before = checkpoint.load(pretrained)['model']
    after = checkpoint.load(fixture_data / 'runs' / 'finetune' / 'checkpoint_last.pt')['model']
    conv = 'encoder.layers.0.conv1.weight'
    assert torch.allclose(before[conv], after[conv], atol=1e-6)   # a vanishing learning rate
    bad = run_script('supervised.py', fixture_data, '--init_from=/no/such/run', '--run_name=bad')
    assert bad.returncode == 2 and 'no such checkpoint' in bad.stderr
    assert not (fixture_data / 'runs' / 'bad').exists()       # refused before the run starts
