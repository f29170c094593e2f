"""Your own folders as they are: long labelled recordings cut into windows (split by file),
one class, tiny classes, silence, the same audio twice, imbalance, files that are not
audio, mp3; the --inspect report; tools/split_labelled.py on repeated file names."""
import csv
import json
import shutil
import sys

import numpy as np
import pytest
import soundfile

import audio
import config
import datacheck
import dataset
import engine
import evaluate
import options
import predict
import train
from config import UserError
from tests.conftest import ROOT, tiny_run, tone_clip, write_speechcommands


def write(path, samples, rate=16000, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, samples, rate, **kwargs)
    return path


def recording(class_index, seconds, rng, rate=16000):
    """`seconds` of one class's tones, one after another."""
    parts = [tone_clip(class_index, rng, rate) for _ in range(int(np.ceil(seconds)))]
    return np.concatenate(parts)[:int(seconds * rate)]


def write_folders(root, files, seed=0):
    """Class folders: files = {class: [seconds of each file, ...]}; 0 seconds = silence (1 s
    of zeros)."""
    rng = np.random.default_rng(seed)
    for c, (name, lengths) in enumerate(files.items()):
        for i, seconds in enumerate(lengths):
            samples = recording(c, seconds, rng) if seconds else np.zeros(16000)
            write(root / name / f'{name}{i}.wav', samples, subtype='PCM_16')
    return root


def run_cfg(tmp_path, root, name, **overrides):
    return tiny_run(tmp_path, name, **{'dataset': 'folder', 'data_root': str(root), 'epochs': 1,
                                       'warmup_epochs': 0, 'label_fraction': 1.0, **overrides})


def run_train(capsys, *arguments):
    """train.py's entry point in this process: (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        engine.main(vars(train), 'clar', train.loss, 'all', argv=list(arguments))
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


# ---------------------------------------------------------------- 1. recordings of any length

def test_long_recordings_become_windows_of_their_file_split_by_file(tmp_path):
    root = write_folders(tmp_path / 'own', {'low': [3.6] * 4, 'high': [2.0, 0.4, 1.2, 1.0, 5.0]})
    data = dataset.load('folder', root, tmp_path / 'cache')
    assert data.windowed
    long_file = str(root / 'low' / 'low0.wav')
    mine = [i for i, p in enumerate(data.paths) if p == long_file]
    # the windowing of the unlabelled pools and predict.py: 3 whole windows + 0.6 s kept
    rows, starts, _ = audio.window_rows(long_file, 16000, 16000, 16000)
    assert len(mine) == 4 and np.array_equal(data.waves[mine], rows)
    assert [data.offsets[i] for i in mine] == [0.0, 1.0, 2.0, 3.0]
    assert {data.labels[i] for i in mine} == {data.classes.index('low')}
    per_file = {p: sum(1 for q in data.paths if q == p) for p in set(data.paths)}
    assert per_file[str(root / 'high' / 'high2.wav')] == 1        # 1.2 s: the 0.2 s tail dropped
    assert per_file[str(root / 'high' / 'high4.wav')] == 5
    # the split is by file: every window of a file in its file's split, no file in two
    split_of_file = {}
    for split, indices in data.splits.items():
        for i in indices:
            assert split_of_file.setdefault(data.paths[i], split) == split
    assert len(split_of_file) == 9
    assert sorted(split_of_file.values()) == sorted(dataset.list_folder(root).splits)
    # --labelled_hop: half a clip apart
    halves = dataset.load('folder', root, tmp_path / 'cache', labelled_hop=0.5)
    assert sum(1 for p in halves.paths if p == long_file) == 7
    # off: each file's first clip, as before
    first = dataset.load('folder', root, tmp_path / 'cache', labelled_windows='False')
    assert not first.windowed and len(first.paths) == 9 and first.offsets is None
    assert np.array_equal(first.waves[first.paths.index(long_file)], rows[0])


def test_the_papers_datasets_load_as_before(tmp_path, speechcommands):
    data = dataset.load('speechcommands', speechcommands, tmp_path / 'cache')
    found = dataset.list_speechcommands(speechcommands)
    assert not data.windowed and data.paths == found.paths and data.offsets is None
    key = audio.fingerprint(found.paths, [0.0] * len(found.paths), 16000, 16000)
    assert (tmp_path / 'cache' / 'waveforms' / f'speechcommands-16000-16000-{key}').is_dir()
    assert data.report == ''
    assert not dataset.labelled_windows_on('fsdd', 'auto') and dataset.labelled_windows_on('fsdd', 'yes')
    with pytest.raises(UserError, match='speechcommands12 already cuts its clips'):
        dataset.load('speechcommands12', speechcommands, tmp_path / 'cache', labelled_windows='true')


def test_a_windowed_run_reports_files_and_windows_and_per_file_accuracy(tmp_path, capsys):
    root = write_folders(tmp_path / 'own', {'low': [3.6] * 4, 'mid': [1.0] * 10,
                                             'high': [2.0] * 6})
    cfg = run_cfg(tmp_path, root, 'windows', label_fraction=0.5)
    results = engine.run(cfg, 'clar', train.loss, 'all')
    out = capsys.readouterr().out
    assert 'class   files  train   val  test   windows  train   val  test' in out
    assert 'low         4      2     1     1        16      8     4     4' in out
    run_dir = tmp_path / 'runs' / 'windows'
    saved = json.loads((run_dir / 'results.json').read_text())
    assert saved['labelled_windows'] is True
    assert saved['files']['train'] == {'high': 4, 'low': 2, 'mid': 8}
    assert saved['windows']['train'] == {'high': 8, 'low': 8, 'mid': 8}
    assert saved['test_files'] == 3 and 0 <= saved['test_accuracy_per_file'] <= 1
    assert saved['test_accuracy_per_file'] == results['head_test_accuracy_per_file']
    assert 'probe_test_accuracy_per_file' in saved
    assert (run_dir / 'data_report.txt').read_text().startswith('folder at ')
    # evaluate.py: per window and per file
    report = evaluate.evaluate(run_dir, device='cpu', verbose=True)
    printed = capsys.readouterr().out
    assert report['splits']['test']['files'] == 3 and report['splits']['test']['clips'] == 7
    assert report['test_accuracy_per_file'] == pytest.approx(saved['test_accuracy_per_file'])
    assert 'per file (3 files' in printed
    # predict.py: a file is its windows pooled, with a row per window
    long_file = root / 'low' / 'low0.wav'
    out_csv = tmp_path / 'p.csv'
    assert predict.main([str(run_dir), str(long_file), f'--out={out_csv}', '--hop=1',
                         '--per_window=True', '--device=cpu']) == 0
    with open(out_csv, newline='') as table:
        rows = list(csv.DictReader(table))
    assert rows[0]['windows'] == '4' and [r['window'] for r in rows[1:]] == ['0', '1', '2', '3']


def test_runs_saved_before_the_option_load_their_first_clips(tmp_path):
    old = {'dataset': 'folder', 'nsynth_label': 'instrument_family', 'test_fold': 5}
    assert options.dataset_options(old)['labelled_windows'] == 'false'
    fresh = config.script_defaults(vars(train))
    assert options.dataset_options(fresh)['labelled_windows'] == 'auto'
    run = tmp_path / 'run'
    run.mkdir()
    (run / 'config.json').write_text(json.dumps({**old, 'regime': 'clar'}))
    (run / 'checkpoint_last.pt').write_bytes(b'')
    resumed = options.resumed_config({**fresh, 'resume': str(run)}, given={'resume'})
    assert resumed['labelled_windows'] == 'false'


# ---------------------------------------------------------------- 2. refused or said

def test_one_class_is_refused_naming_the_folder(tmp_path, capsys):
    root = write_folders(tmp_path / 'own', {'dog': [1.0] * 5})
    status, _, err = run_train(capsys, '--dataset=folder', f'--data_root={root}',
                               f'--out_dir={tmp_path}/runs', f'--cache_dir={tmp_path}/cache')
    assert status == 2 and f'{root} holds one class folder (dog/)' in err
    assert 'at least two classes' in err
    assert not list((tmp_path / 'runs').iterdir()) and not (tmp_path / 'cache').exists()


def test_a_class_too_small_for_every_split_is_refused_or_trained_on_unmeasured(tmp_path, capsys):
    root = write_folders(tmp_path / 'own', {'a': [1.0] * 10, 'b': [1.0] * 10, 'rare': [1.0] * 2})
    with pytest.raises(UserError, match=r'class rare \(2 files; none in val or test\): too few '
                                        r'files to appear in every split.*--small_classes=train_only'):
        dataset.load('folder', root, tmp_path / 'cache')
    data = dataset.load('folder', root, tmp_path / 'cache', small_classes='train_only')
    out = capsys.readouterr().out
    assert ('class rare (2 files; none in val or test) is in training only '
            '(--small_classes=train_only): its accuracy is not measured') in out
    rare = data.classes.index('rare')
    assert (data.labels[data.splits['train']] == rare).sum() == 2
    assert not (data.labels[data.splits['test']] == rare).any()
    status, _, err = run_train(capsys, '--dataset=folder', f'--data_root={root}',
                               f'--out_dir={tmp_path}/runs', f'--cache_dir={tmp_path}/cache')
    assert status == 2 and 'class rare (2 files' in err and not list((tmp_path / 'runs').iterdir())


def test_a_class_without_training_files_is_refused_and_an_emptied_split_said(tmp_path, capsys):
    root = write_folders(tmp_path / 'own', {'a': [1.0] * 4, 'b': [1.0] * 4})
    (root / 'validation_list.txt').write_text('a/a0.wav\nb/b0.wav\nb/b1.wav\n')
    (root / 'testing_list.txt').write_text('a/a1.wav\nb/b2.wav\nb/b3.wav\n')
    with pytest.raises(UserError, match=r'class b \(4 files; 0 usable in training\): the model '
                                        r'cannot learn it.*list fewer of its files'):
        dataset.load('folder', root, tmp_path / 'cache')
    (root / 'testing_list.txt').write_text('a/a1.wav\nb/b2.wav\n')
    write(root / 'a' / 'a0.wav', np.zeros(16000), subtype='PCM_16')     # a's only val file
    data = dataset.load('folder', root, tmp_path / 'cache', skip_silent=True)
    assert ('class a (4 files; none in val once unreadable or silent files are left out): its '
            'accuracy is not measured there') in capsys.readouterr().out
    assert set(data.labels[data.splits['val']].tolist()) == {data.classes.index('b')}


def test_silent_files_are_counted_named_in_the_run_and_skipped_only_when_asked(tmp_path, capsys):
    root = write_folders(tmp_path / 'own', {'a': [1.0] * 10 + [0, 0], 'b': [1.0] * 10})
    silent = {str(root / 'a' / 'a10.wav'), str(root / 'a' / 'a11.wav')}
    data = dataset.load('folder', root, tmp_path / 'cache')
    out = capsys.readouterr().out
    assert '2 files of 22 are digital silence' in out and '--skip_silent=True leaves them out' in out
    used = {data.paths[i] for s in data.splits.values() for i in s}
    assert silent <= used                                          # kept by default
    assert all(path in data.report for path in silent)
    skipped = dataset.load('folder', root, tmp_path / 'cache', skip_silent=True)
    assert 'left out (--skip_silent=True)' in capsys.readouterr().out
    assert not silent & {skipped.paths[i] for s in skipped.splits.values() for i in s}
    # a run names them in data_report.txt in its directory
    engine.run(run_cfg(tmp_path, root, 'silent'), 'clar', train.loss, 'all')
    text = (tmp_path / 'runs' / 'silent' / 'data_report.txt').read_text()
    assert 'digital silence (every sample 0 at 16 bits): 2' in text
    assert all(path in text for path in silent)


def test_the_same_audio_in_two_classes_is_refused_and_in_two_splits_said(tmp_path, capsys):
    root = write_folders(tmp_path / 'own', {'a': [1.0] * 10, 'b': [1.0] * 10})
    # the same samples saved again as FLAC in the other class: equal decoded samples
    samples, rate = soundfile.read(root / 'a' / 'a3.wav')
    copy = write(root / 'b' / 'copy.flac', samples, rate, subtype='PCM_16')
    with pytest.raises(UserError) as refused:
        dataset.load('folder', root, tmp_path / 'cache')
    message = str(refused.value)
    assert f'{root / "a" / "a3.wav"} (a) and {copy} (b) hold the same audio' in message
    copy.unlink()
    found = dataset.list_folder(root)
    train_file = next(p for p, c, s in zip(found.paths, found.class_names, found.splits)
                      if c == 'a' and s == 'train')
    test_file = next(p for p, c, s in zip(found.paths, found.class_names, found.splits)
                     if c == 'a' and s == 'test')
    shutil.copy(train_file, test_file)
    dataset.load('folder', root, tmp_path / 'cache2')
    out = capsys.readouterr().out
    assert '1 recording of one class is in two splits' in out and test_file in out


def test_imbalance_beyond_ten_to_one_is_printed_with_the_counts(tmp_path, capsys):
    root = write_folders(tmp_path / 'own', {'big': [12.0] * 3, 'small': [1.0] * 3})
    dataset.load('folder', root, tmp_path / 'cache')
    out = capsys.readouterr().out
    assert 'the classes are imbalanced 12:1 in training clips (big 12, small 1)' in out


def test_other_files_and_loose_audio_are_counted_and_named_and_mp3_is_read(tmp_path, capsys):
    root = write_folders(tmp_path / 'own', {'a': [1.0] * 4, 'b': [1.0] * 4})
    (root / 'a' / 'notes.txt').write_text('x')
    (root / 'b' / 'song.m4a').write_bytes(b'x')
    (root / 'b' / 'take.M4A').write_bytes(b'x')
    (root / 'a' / '.DS_Store').write_bytes(b'x')
    write(root / 'stray.wav', np.zeros(100))
    rng = np.random.default_rng(0)
    try:
        mp3 = write(root / 'b' / 'clip.mp3', recording(1, 1.0, rng), format='MP3')
    except (soundfile.LibsndfileError, TypeError, ValueError) as error:
        mp3 = None
        print(f'this libsndfile ({soundfile.__libsndfile_version__}) cannot write mp3: {error}')
    data = dataset.load('folder', root, tmp_path / 'cache')
    out = capsys.readouterr().out
    assert ('3 files under the class folders of ' f'{root} are not audio this reads (.m4a 2, '
            '.txt 1; e.g. ') in out
    assert f'1 audio file directly in {root} (e.g. {root / "stray.wav"}) is in no class folder' in out
    if mp3 is None:
        pytest.skip('this libsndfile cannot write mp3 (the rest of the test ran)')
    row = data.paths.index(str(mp3))
    assert np.abs(data.waves[row].astype(np.float32) / 32768).max() > 0.1
    assert data.labels[row] == data.classes.index('b')


@pytest.mark.parametrize('arguments,message', [
    (['--labelled_windows=maybe'], 'unknown --labelled_windows=maybe; valid: auto, true, false'),
    (['--small_classes=drop'], 'unknown --small_classes=drop; valid: refuse, train_only'),
    (['--labelled_hop=-1'], '--labelled_hop must be 0'),
    (['--dataset=fsdd', '--skip_silent=True'], '--skip_silent=True is for --dataset=folder'),
    (['--dataset=fsdd', '--labelled_hop=0.5'], 'but --labelled_windows is off for --dataset=fsdd'),
])
def test_bad_data_options_are_refused(tmp_path, capsys, arguments, message):
    status, _, err = run_train(capsys, f'--out_dir={tmp_path}/runs', *arguments)
    assert status == 2 and message in err and not (tmp_path / 'runs').exists()


# ---------------------------------------------------------------- 3. a dry look first

def test_inspect_prints_what_a_run_would_see_and_writes_nothing(tmp_path, capsys):
    root = write_folders(tmp_path / 'own', {'a': [1.0] * 9 + [0, 2.5], 'b': [1.0] * 2})
    shutil.copy(root / 'a' / 'a0.wav', root / 'b' / 'twin.wav')
    write(root / 'b' / 'stereo.flac', np.stack([recording(1, 1.0, np.random.default_rng(1))] * 2, 1),
          22050)
    before = sorted(p for p in tmp_path.rglob('*'))
    status = engine.main(vars(train), 'clar', train.loss, 'all', argv=[
        '--dataset=folder', f'--data_root={root}', '--inspect=True',
        f'--out_dir={tmp_path}/runs', f'--cache_dir={tmp_path}/cache'])
    out = capsys.readouterr().out
    assert status is None and sorted(p for p in tmp_path.rglob('*')) == before
    assert out.startswith(f'folder at {root}: 2 classes, 15 files, 17 windows of 1 s, 1 s apart')
    assert 'split: each class\'s files shuffled (seed 0' in out
    assert 'sample rates (files): 16000 Hz (14), 22050 Hz (1)' in out
    assert 'channels (files): 1 (14), 2 (1)' in out
    assert f'digital silence (every sample 0 at 16 bits): 1\n  {root / "a" / "a9.wav"} (a, ' in out
    assert 'the same audio in two classes: 1\n' in out and str(root / 'b' / 'twin.wav') in out
    assert 'a run stops: ' in out and 'hold the same audio' in out
    assert 'nothing written (no cache, no run directory)' in out


def test_inspect_finds_what_a_run_finds(tmp_path):
    root = write_folders(tmp_path / 'own', {'a': [1.0] * 4 + [2.6, 0], 'b': [3.0] * 4})
    shutil.copy(root / 'a' / 'a0.wav', root / 'a' / 'again.wav')
    found = dataset.list_folder(root)
    for hop in (16000, None):
        decoded = datacheck.decoded_facts(found, 16000, 16000, hop)
        data = dataset.load('folder', root, tmp_path / 'cache', labelled_windows=str(bool(hop)))
        rows = [found.paths.index(p) for p in data.paths]
        cached = datacheck.cache_facts(data.waves, rows, found.paths)
        assert decoded.digests == cached.digests and list(decoded.silent) == list(cached.silent)
        assert list(decoded.windows) == list(cached.windows)
    assert (decoded.windows == 1).all()                 # first clips


def test_inspect_on_fsdd_style_folders_takes_seconds(tmp_path, capsys):
    """A class-folder view of 300 short 8 kHz files (FSDD's shape, a tenth of its size)."""
    rng = np.random.default_rng(0)
    for digit in range(10):
        for take in range(30):
            write(tmp_path / 'fsdd' / str(digit) / f'{digit}_x_{take}.wav',
                  tone_clip(digit, rng, 8000, seconds=0.3), 8000, subtype='PCM_16')
    cfg = config.script_defaults(vars(train))
    cfg.update(dataset='folder', data_root=str(tmp_path / 'fsdd'))
    text = datacheck.inspect(cfg)
    assert 'folder at' in text and '10 classes, 300 files, 300 windows' in text
    seconds = float(text.rsplit('inspected in ', 1)[1].split(' s')[0])
    assert seconds < 20


# ---------------------------------------------------------------- 4. split_labelled.py

@pytest.fixture
def split_labelled():
    sys.path.insert(0, str(ROOT / 'tools'))
    import split_labelled
    return split_labelled


def test_split_labelled_keeps_repeated_names_apart_and_counts_what_it_wrote(tmp_path, capsys,
                                                                          split_labelled):
    sc = write_speechcommands(tmp_path / 'sc', words=('yes', 'no', 'up'), speakers=6, takes=2)
    counts = split_labelled.split('speechcommands', sc, tmp_path / 'cache', 0.25, 0, tmp_path / 'own')
    written = [p for p in (tmp_path / 'own').rglob('*.wav')]
    assert sum(counts.values()) == len(written) == 36
    pool = sorted(p.relative_to(tmp_path / 'own' / 'unlabelled').as_posix()
                  for p in (tmp_path / 'own' / 'unlabelled').rglob('*.wav'))
    assert len(pool) == counts['unlabelled'] and 'no/00000000_nohash_0.wav' in pool
    assert f'{len(written)} files written' in capsys.readouterr().out
    labelled = dataset.load('folder', tmp_path / 'own' / 'labelled', tmp_path / 'cache',
                            small_classes='train_only')
    assert len(labelled.splits['val']) == counts['validation']


def test_split_labelled_refuses_two_sources_for_one_target(tmp_path, monkeypatch, split_labelled):
    root = write_folders(tmp_path / 'own', {'a': [1.0] * 3, 'b': [1.0] * 3})
    found = dataset.list_folder(root)
    twice = dataset.Listing(found.paths + found.paths[:1], found.class_names + found.class_names[:1],
                            found.splits + found.splits[:1], found.classes, 1.0)
    monkeypatch.setattr(dataset, 'listing', lambda *a, **k: twice)
    with pytest.raises(UserError, match='would both be copied to .*nothing was written'):
        split_labelled.split('folder', root, tmp_path / 'cache', 1.0, 0, tmp_path / 'out')
    assert not (tmp_path / 'out').exists()


def test_report_groups_runs_by_whether_they_read_windows():
    import report
    assert report.labelled_windows({'dataset': 'folder'}) == 'off'           # made before
    assert report.labelled_windows({'dataset': 'folder', 'labelled_windows': 'auto'}) == 'on'
    assert report.labelled_windows({'dataset': 'fsdd', 'labelled_windows': 'auto'}) == 'off'
    assert report.labelled_windows({'dataset': 'fsdd', 'labelled_windows': 'True'}) == 'on'
