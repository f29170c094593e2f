"""Weights & Biases, offline (no account, no network): what a run logs, a resumed run
continuing the same wandb run, and the refusals that come before the run directory."""
import json
import struct
import sys
import time

import pytest

import engine
import train
from config import UserError
from tests.conftest import tiny_run

pytest.importorskip('wandb')


def wandb_records(run_dir):
    """Every record of the run's offline wandb logs, in order, as (run id, kind, protobuf).
    The .wandb file is a LevelDB-style log: a 7-byte header, then 32 KiB blocks of chunks,
    each with a 7-byte header (crc32c, length, type: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2
    records = []
    for path in sorted(run_dir.glob('wandb/offline-run-*/run-*.wandb')):
        raw = path.read_bytes()
        assert raw[:4] == b':W&B'
        position, pending = 7, b''
        while position + 7 <= len(raw):
            left = 32768 - position % 32768
            if left < 7:                        # a block's tail too short for a header
                position += left
                continue
            _, length, kind = struct.unpack('<IHB', raw[position:position + 7])
            if length == 0 and kind == 0:
                break
            pending += raw[position + 7:position + 7 + length]
            position += 7 + length
            if kind in (1, 4):
                record = wandb_internal_pb2.Record()
                record.ParseFromString(pending)
                records.append((path.stem[4:], record.WhichOneof('record_type'), record))
                pending = b''
    return records


def history(records):
    rows = []
    for _, kind, record in records:
        if kind == 'history':
            rows.append({item.key or '/'.join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows


@pytest.fixture(scope='module')
def data_root(tiny_root):
    return tiny_root


def options(data_root, name, **overrides):
    return tiny_run(data_root, name, **{'epochs': 3, 'wandb': 'offline', 'log_every': 2,
                                        **overrides})


def test_an_offline_run_logs_steps_epochs_results_and_the_confusion_matrix(data_root):
    run_dir = data_root / 'runs' / 'logged'
    with pytest.raises(engine.Stopped):
        engine.run(options(data_root, 'logged', stop_after_epochs=1), 'clar', train.loss, 'all')
    run_id = (run_dir / 'wandb_id.txt').read_text().strip()
    time.sleep(1.1)     # wandb names an offline run's folder by the second it started
    engine.run(options(data_root, '', resume=str(run_dir)), 'clar', train.loss, 'all', {'resume'})
    assert (run_dir / 'wandb_id.txt').read_text().strip() == run_id

    records = wandb_records(run_dir)
    runs = [(file_id, record.run) for file_id, kind, record in records if kind == 'run']
    assert len(runs) == 2 and {r.run_id for _, r in runs} == {run_id}     # resumed: same run
    assert {file_id for file_id, _ in runs} == {run_id}
    logged_config = {item.key: json.loads(item.value_json) for item in runs[0][1].config.update}
    assert logged_config['learning_rate'] == 1e-3 and logged_config['regime'] == 'clar'

    rows = history(records)
    steps_per_epoch = 3                       # 24 training clips / batch 8
    train_steps = sorted({r['_step'] for r in rows if 'train/loss' in r})
    assert train_steps == list(range(2, 3 * steps_per_epoch + 1, 2))    # every log_every steps
    assert all('learning_rate' in r and r['train/loss'] > 0 for r in rows if 'train/loss' in r)
    epochs = [r for r in rows if 'val_accuracy' in r]
    assert [r['epoch'] for r in epochs] == [1, 2, 3]
    assert [r['_step'] for r in epochs] == [3, 6, 9]
    images = [r for r in rows if 'test_confusion_matrix/_type' in r]
    assert len(images) == 1 and images[0]['test_confusion_matrix/_type'] == 'image-file'
    assert list(run_dir.glob('wandb/offline-run-*/files/media/images/test_confusion_matrix*.png'))
    summary = {}
    for _, kind, record in records:
        if kind == 'summary':
            summary.update({item.key: json.loads(item.value_json) for item in record.summary.update
                            if item.key})
    results = json.loads((run_dir / 'results.json').read_text())
    assert summary['test_accuracy'] == pytest.approx(results['test_accuracy'])
    assert (run_dir / 'confusion_test.png').exists()
    matrix = json.loads((run_dir / 'confusion_test.json').read_text())['matrix']
    assert sum(map(sum, matrix)) == 6          # one test speaker x 2 takes x 3 words


def test_wandb_off_writes_no_wandb_files(data_root):
    engine.run(options(data_root, 'quiet', wandb='off', epochs=1, warmup_epochs=0), 'clar', train.loss, 'all')
    run_dir = data_root / 'runs' / 'quiet'
    assert not (run_dir / 'wandb').exists() and not (run_dir / 'wandb_id.txt').exists()
    assert (run_dir / 'confusion_test.png').exists()


def test_a_missing_package_is_reported_before_the_run_directory(data_root, monkeypatch):
    monkeypatch.setitem(sys.modules, 'wandb', None)          # import wandb now fails
    with pytest.raises(UserError, match='needs the wandb package: pip install wandb'):
        engine.run(options(data_root, 'no-package'), 'clar', train.loss, 'all')
    assert not (data_root / 'runs' / 'no-package').exists()


def test_online_without_credentials_is_reported_before_the_run_directory(data_root, tmp_path,
                                                                          monkeypatch):
    monkeypatch.delenv('WANDB_API_KEY', raising=False)
    (tmp_path / 'netrc').write_text('')
    monkeypatch.setenv('NETRC', str(tmp_path / 'netrc'))
    with pytest.raises(UserError, match='--wandb=online needs Weights & Biases credentials'):
        engine.run(options(data_root, 'no-login', wandb='online'), 'clar', train.loss, 'all')
    assert not (data_root / 'runs' / 'no-login').exists()
    (tmp_path / 'netrc').write_text('machine api.wandb.ai\n  login user\n  password ' + 'k' * 40 + '\n')
    from rundir import check_wandb
    check_wandb('online')                   # credentials found: accepted
