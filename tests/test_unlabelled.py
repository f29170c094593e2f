"""Your own audio, the CLAR way: an unlabelled pool of recordings of any length beside a few
labelled clips; batches with a fixed number of labelled clips; validation every N steps."""
import json
import re

import numpy as np
import pytest
import soundfile
import torch

import audio
import engine
import supervised
import train
import unlabelled
from config import UserError
from tests.conftest import tiny_run, tone_clip, write_class_folders
from trainer import mixed_batches


def write_pool(root, seed=0):
    """Recordings of several lengths, rates and channel counts, in nested folders; one of
    them silent."""
    rng = np.random.default_rng(seed)
    (root / 'day1' / 'morning').mkdir(parents=True)
    (root / 'day2').mkdir(parents=True)
    long = np.concatenate([tone_clip(i % 3, rng, 22050) for i in range(4)])[:int(3.7 * 22050)]
    soundfile.write(root / 'day1' / 'long.flac', np.stack([long, long], 1), 22050,
                    subtype='PCM_24')                            # 3.7 s: 3 windows + 0.7 s
    soundfile.write(root / 'day1' / 'morning' / 'short.wav', tone_clip(1, rng, 16000)[:4800],
                    16000, subtype='PCM_16')                      # 0.3 s: one padded window
    soundfile.write(root / 'day2' / 'quiet.ogg', np.zeros(2 * 44100), 44100, format='OGG',
                    subtype='VORBIS')                             # 2 s of silence
    (root / 'day2' / 'notes.txt').write_text('not audio')
    return root


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('own')
    write_class_folders(root / 'labelled', per_class=10)
    write_pool(root / 'pool')
    return root


def test_windows_of_every_file_are_cached_as_read(data, tmp_path):
    pools = unlabelled.load([data / 'pool'], tmp_path / 'cache', 16000, 16000)
    root, waves, index = pools[0]
    names = [p.rsplit('/', 1)[-1] for p in index['files']]
    assert names == ['long.flac', 'short.wav', 'quiet.ogg']
    assert index['windows_per_file'] == [4, 1, 2] and len(waves) == 7
    folder = next(p for p in (tmp_path / 'cache' / 'waveforms').glob('unlabelled-*') if p.is_dir())
    starts = np.load(folder / 'starts.npy')
    assert starts.tolist() == [0, 16000, 32000, 48000, 0, 0, 16000]
    whole = audio.read_audio(index['files'][0], 16000)
    expected, _ = audio.windows(whole, 16000, 16000)
    assert np.array_equal(waves[:4], audio.to_int16(expected.numpy()))
    assert not waves[3, int(0.7 * 16000) + 10:].any()             # the padded tail
    halves = unlabelled.load([data / 'pool'], tmp_path / 'cache', 16000, 16000, hop_seconds=0.5)
    assert halves[0][2]['windows_per_file'] == [7, 1, 3]


def test_silent_windows_are_dropped_and_counted(data, tmp_path):
    (_, waves, index), = unlabelled.load([data / 'pool'], tmp_path / 'cache', 16000, 16000,
                                         silence_db=-60)
    assert index['windows_per_file'] == [4, 1, 0] and index['silent'] == 2 and len(waves) == 5
    assert 'silent windows dropped' in unlabelled.describe([(data / 'pool', waves, index)])


def test_a_new_file_in_one_root_re_decodes_only_that_root(data, tmp_path, monkeypatch):
    second = tmp_path / 'second'
    second.mkdir()
    soundfile.write(second / 'a.wav', tone_clip(0, np.random.default_rng(1)), 16000)
    unlabelled.load([data / 'pool', second], tmp_path / 'cache', 16000, 16000)
    decoded = []
    original = audio.read_audio
    monkeypatch.setattr(audio, 'read_audio', lambda path, *a: decoded.append(path) or original(path, *a))
    unlabelled.load([data / 'pool', second], tmp_path / 'cache', 16000, 16000)
    assert decoded == []                                         # both cached
    soundfile.write(second / 'b.wav', tone_clip(1, np.random.default_rng(2)), 16000)
    pools = unlabelled.load([data / 'pool', second], tmp_path / 'cache', 16000, 16000)
    assert sorted(p.rsplit('/', 1)[-1] for p in decoded) == ['a.wav', 'b.wav']
    assert [len(waves) for _, waves, _ in pools] == [7, 2]


def test_mixed_batches_hold_k_labelled_clips_and_no_clip_twice():
    labelled, others = np.arange(0, 10), np.arange(100, 190)
    batches = mixed_batches(labelled, others, batch_size=16, per_batch=4, seed=3, epoch=2)
    assert len(batches) == 90 // 12                              # one pass over the others
    assert all(len(set(b.tolist())) == len(b) == 16 for b in batches)
    assert all(np.isin(b[:4], labelled).all() and not np.isin(b[4:], labelled).any()
               for b in batches)
    assert len(set(np.concatenate([b[4:] for b in batches]).tolist())) == 84
    stream = np.concatenate([b[:4] for b in batches])
    assert sorted(stream[:10].tolist()) == labelled.tolist()     # cycled: every clip per pass
    again = mixed_batches(labelled, others, 16, 4, seed=3, epoch=2)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    shares = [b[rank::2] for b in batches for rank in (0, 1)]    # two processes' shares
    assert all(np.isin(s, labelled).sum() == 2 for s in shares)
    tight = mixed_batches(np.arange(5), others, 8, 5, seed=0, epoch=0)   # k = all labelled
    assert all(sorted(b[:5].tolist()) == list(range(5)) for b in tight)


def options(data, name, script='train', **overrides):
    return tiny_run(data, name, script, **{'dataset': 'folder', 'data_root': str(data / 'labelled'),
                                           'label_fraction': 1.0, 'epochs': 2, **overrides})


def test_clar_trains_on_the_pool_and_reports_it(data, capsys):
    results = engine.run(options(data, 'pooled', unlabelled_root=str(data / 'pool'),
                                 labelled_per_batch=4, eval_every_steps=2, label_fraction=0.5),
                         'clar', train.loss, 'all')
    out = capsys.readouterr().out
    assert re.search(r'unlabelled pool .*pool: 3 files, 7 windows', out)
    assert 'batches: 4 labelled clips in each (random batches would hold 3.1 on average)' in out
    assert results['unlabelled_clips'] == 7 and results['training_clips'] == 24 + 7
    metrics = [json.loads(line) for line in
               (data / 'runs' / 'pooled' / 'metrics.jsonl').read_text().splitlines()]
    assert [m['step'] for m in metrics] == list(range(2, results['steps'] + 1, 2)) + (
        [results['steps']] if results['steps'] % 2 else [])
    assert {'probe_h_val_accuracy', 'probe_p_val_accuracy'} <= set(metrics[-1])
    assert 0 <= results['head_train_clean_accuracy'] <= 1
    assert 0 <= results['head_train_augmented_accuracy'] <= 1


@pytest.mark.parametrize('fraction,average', [(1.0, '8.0'), (0.5, '4.0')])
def test_labelled_per_batch_never_lowers_the_labelled_share(data, capsys, fraction, average):
    # every clip labelled, or random batches holding more labelled clips on average than asked:
    # the usual random batches over all clips
    plain = engine.run(options(data, f'plain-{fraction}', epochs=1, warmup_epochs=0,
                               label_fraction=fraction), 'clar', train.loss, 'all')
    asked = engine.run(options(data, f'asked-{fraction}', epochs=1, warmup_epochs=0,
                               label_fraction=fraction, labelled_per_batch=3),
                       'clar', train.loss, 'all')
    assert asked['steps'] == plain['steps'] > 1
    assert asked['test_accuracy'] == plain['test_accuracy']
    assert (f'batches: at random, holding {average} labelled clips on average; '
            f'--labelled_per_batch=3 is no more') in capsys.readouterr().out


def test_supervised_ignores_the_pool_and_says_so(data, capsys):
    results = engine.run(options(data, 'supervised-pool', 'supervised', epochs=1, warmup_epochs=0,
                                 unlabelled_root=str(data / 'pool')),
                         'supervised', supervised.loss, 'labelled')
    assert 'supervised.py trains on the labelled clips only; --unlabelled_root is ignored' in \
        capsys.readouterr().out
    assert results['unlabelled_clips'] == 0


def test_equal_steps_replace_epochs(data):
    results = engine.run(options(data, 'steps', 'supervised', steps=7, eval_every_steps=3),
                         'supervised', supervised.loss, 'labelled')
    metrics = [json.loads(line) for line in
               (data / 'runs' / 'steps' / 'metrics.jsonl').read_text().splitlines()]
    assert [m['step'] for m in metrics] == [3, 6, 7] and results['steps'] == 7


def test_few_labels_in_a_large_pool_get_a_suggestion(data, tmp_path, capsys):
    pool = tmp_path / 'many'
    pool.mkdir()
    long = np.tile(tone_clip(0, np.random.default_rng(0)), 300)       # 5 minutes
    soundfile.write(pool / 'hour.wav', long, 16000, subtype='PCM_16')
    with pytest.raises(engine.Stopped):
        engine.run(options(data, 'suggested', epochs=1, warmup_epochs=0, stop_after_steps=1,
                           label_fraction=0.2,
                           unlabelled_root=str(pool)), 'clar', train.loss, 'all')
    out = capsys.readouterr().out
    assert re.search(r'note: 6 labelled clips among \d+: a random batch of 8 holds 0\.\d\d', out)
    assert '--labelled_per_batch=1 puts 1 in every batch' in out


@pytest.mark.parametrize('setup,message', [
    (lambda d, t: {'unlabelled_root': str(t / 'absent')}, 'is not a folder'),
    (lambda d, t: {'unlabelled_root': str(t)}, 'no audio'),
    (lambda d, t: {'unlabelled_root': str(d / 'labelled')}, 'is the labelled data'),
    (lambda d, t: {'unlabelled_root': str(d / 'labelled' / 'low')}, 'lies inside the labelled data'),
    (lambda d, t: {'unlabelled_root': str(d)}, 'contains the labelled data'),
    (lambda d, t: {'labelled_per_batch': 8}, '--labelled_per_batch=8 must be below --batch_size=8'),
    (lambda d, t: {'labelled_per_batch': 7, 'label_fraction': 0.1},
     '--labelled_per_batch=7 is more than the 3 labelled clips'),
])
def test_bad_pools_and_batches_are_refused_before_the_run_directory(data, tmp_path, setup, message):
    with pytest.raises(UserError, match=message):
        engine.run(options(data, 'refused', **setup(data, tmp_path)), 'clar', train.loss, 'all')
    assert not (data / 'runs' / 'refused').exists()


def test_a_pool_of_unreadable_files_is_refused(data, tmp_path):
    broken = tmp_path / 'broken'
    broken.mkdir()
    (broken / 'a.wav').write_bytes(b'RIFF not really audio')
    with pytest.raises(UserError, match='a.wav: unreadable audio'):
        engine.run(options(data, 'unreadable', unlabelled_root=str(broken)), 'clar', train.loss, 'all')
    with pytest.raises(UserError, match='gave no windows \\(1 unreadable files\\)'):
        engine.run(options(data, 'unreadable', unlabelled_root=str(broken), skip_bad_files=True),
                   'clar', train.loss, 'all')
    assert not (data / 'runs' / 'unreadable').exists()


def test_the_batch_reads_dataset_and_pool_rows(data, tmp_path):
    import dataset
    labelled = dataset.load('folder', data / 'labelled', tmp_path / 'cache')
    own = len(labelled.labels)
    pools = unlabelled.load([data / 'pool'], tmp_path / 'cache', 16000, 16000)
    both = unlabelled.attach(labelled, pools)
    waves, labels, order = both.batch([own + 1, 0, own + 6])
    assert order.tolist() == [0, own + 1, own + 6] and labels.tolist()[1:] == [-1, -1]
    assert torch.equal(waves[1], torch.from_numpy(pools[0][1][1].astype(np.float32) / 32768))
    assert torch.equal(waves[0], torch.from_numpy(labelled.waves[0].astype(np.float32) / 32768))


def test_the_split_tool_keeps_the_labelled_subset_and_the_split(tmp_path):
    import sys

    import dataset
    from tests.conftest import ROOT, write_fsdd
    sys.path.insert(0, str(ROOT / 'tools'))
    import split_labelled
    recordings = write_fsdd(tmp_path / 'fsdd')
    counts = split_labelled.split('fsdd', recordings, tmp_path / 'cache', 0.5, 0, tmp_path / 'own')
    whole = dataset.load('fsdd', recordings, tmp_path / 'cache')
    chosen = dataset.labelled_subset(whole.labels, whole.splits['train'], 0.5, 0)
    own = dataset.load('folder', tmp_path / 'own' / 'labelled', tmp_path / 'cache')
    name = lambda paths: sorted(p.rsplit('/', 1)[-1] for p in paths)        # noqa: E731
    assert name(own.paths[i] for i in own.splits['train']) == name(whole.paths[i] for i in chosen)
    for part in ('val', 'test'):
        assert name(own.paths[i] for i in own.splits[part]) == name(
            whole.paths[i] for i in whole.splits[part])
    pool = sorted(p.name for p in (tmp_path / 'own' / 'unlabelled').iterdir())
    assert len(pool) == counts['unlabelled'] == len(whole.splits['train']) - len(chosen)
    assert own.classes == whole.classes
