"""NSynth, ESC-50 / ESC-10, the 12-class Speech Commands set and FSDD, on tiny fixtures in
their real layouts; downloads from file:// archives (no network); fold summaries; the
cache's batch reader."""
import json
import shutil
import tarfile
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

import audio
import dataset
from config import UserError
from tests.conftest import (write_background_noise, write_esc10_standalone, write_esc50,
                            write_fsdd, write_nsynth, write_speechcommands)


def cached_equals_decoded(data, indices):
    """The cache holds what read_clip decodes (to one int16 step)."""
    offsets = data.offsets or [0.0] * len(data.paths)
    for i in indices:
        direct = audio.read_clip(data.paths[i], data.sample_rate, data.clip_samples, offsets[i])
        expected = np.round(np.clip(direct, -1, 32767 / 32768) * 32768)
        assert np.abs(data.waves[i].astype(np.int32) - expected).max() <= 1, data.paths[i]
    return True


def cache_folders(cache_dir):
    return sorted(p.name for p in (cache_dir / 'waveforms').glob('*/index.json'))


def split_of(data):
    return {i: s for s, indices in data.splits.items() for i in indices}


# ---------------------------------------------------------------- NSynth

@pytest.fixture(scope='module')
def nsynth(tmp_path_factory):
    return write_nsynth(tmp_path_factory.mktemp('nsynth'))


def test_nsynth_family_labels_official_splits_and_4_second_clips(nsynth, tmp_path):
    data = dataset.load('nsynth', nsynth, tmp_path / 'cache')
    assert data.classes == ['bass', 'guitar', 'vocal']                  # by family number
    assert data.waves.shape == (12, 64000) and data.sample_rate == 16000
    folder_split = {'nsynth-train': 'train', 'nsynth-valid': 'val', 'nsynth-test': 'test'}
    splits = split_of(data)
    for i, path in enumerate(data.paths):
        folder = Path(path).parents[1].name
        assert splits[i] == folder_split[folder]
        entry = json.loads((nsynth / folder / 'examples.json').read_text())[Path(path).stem]
        assert data.classes[data.labels[i]] == entry['instrument_family_str']
    assert [len(data.splits[s]) for s in dataset.SPLITS] == [6, 3, 3]
    assert cached_equals_decoded(data, range(12))


def test_nsynth_pitch_labels_are_the_pitches_present_in_numeric_order(nsynth, tmp_path):
    family = dataset.load('nsynth', nsynth, tmp_path / 'cache')
    pitch = dataset.load('nsynth', nsynth, tmp_path / 'cache', nsynth_label='pitch')
    assert pitch.classes == ['9', '21', '40', '45', '60', '64', '72', '100']
    assert [pitch.classes[label] for label in pitch.labels] == \
           [Path(p).stem.split('-')[1].lstrip('0') for p in pitch.paths]
    assert len(cache_folders(tmp_path / 'cache')) == 1       # both labels share one cache
    assert np.array_equal(family.waves, pitch.waves)
    with pytest.raises(UserError, match='unknown --nsynth_label=velocity; valid: instrument_family, pitch'):
        dataset.load('nsynth', nsynth, tmp_path / 'cache', nsynth_label='velocity')


def test_nsynth_listing_reads_examples_json_not_the_audio(nsynth, monkeypatch):
    def no_audio(*args, **kwargs):
        raise AssertionError('the listing opened an audio file')
    monkeypatch.setattr(soundfile, 'info', no_audio)
    monkeypatch.setattr(soundfile, 'SoundFile', no_audio)
    listing = dataset.listing('nsynth', nsynth, 'unused')
    assert len(listing.paths) == 12 and listing.clip_seconds == 4.0


def test_nsynth_bad_or_missing_files_stop_the_build_naming_them_unless_skipped(tmp_path):
    root = write_nsynth(tmp_path / 'ns', notes={'nsynth-train': [(0, 1, 40), (3, 2, 50), (3, 3, 52)],
                                               'nsynth-valid': [(0, 4, 41)],
                                               'nsynth-test': [(3, 5, 60)]})
    broken = root / 'nsynth-train' / 'audio' / 'guitar_acoustic_002-050-100.wav'
    broken.write_bytes(b'')
    with pytest.raises(UserError, match=f'{broken}: unreadable audio.*--skip_bad_files=True'):
        dataset.load('nsynth', root, tmp_path / 'cache')
    assert not cache_folders(tmp_path / 'cache')                         # nothing half-built
    missing = root / 'nsynth-test' / 'audio' / 'guitar_acoustic_005-060-100.wav'
    missing.unlink()
    data = dataset.load('nsynth', root, tmp_path / 'cache', skip_bad_files=True)
    assert len(data.skipped) == 2 and str(missing) in data.skipped[1]
    assert len(data.waves) == 3 and [len(data.splits[s]) for s in dataset.SPLITS] == [2, 1, 0]
    assert cached_equals_decoded(data, range(3))


# ---------------------------------------------------------------- ESC-50 and ESC-10

@pytest.fixture(scope='module')
def esc50(tmp_path_factory):
    return write_esc50(tmp_path_factory.mktemp('esc') / 'ESC-50-master')


@pytest.mark.parametrize('name', ['esc50', 'esc10'])
def test_esc_folds_never_straddle_splits_and_follow_test_fold(esc50, name):
    for test_fold in range(1, 6):
        listing = dataset.listing(name, esc50, 'unused', test_fold=test_fold)
        folds = defaultdict(set)
        for path, split in zip(listing.paths, listing.splits):
            folds[split].add(dataset.esc_fold(path))
        validation_fold = test_fold - 1 if test_fold > 1 else 5
        assert folds['test'] == {test_fold} and folds['val'] == {validation_fold}
        assert folds['train'] == set(range(1, 6)) - {test_fold, validation_fold}
    # the two takes of one source recording share a fold, hence a split
    takes = [s for p, s in zip(listing.paths, listing.splits) if '-100010-' in p]
    assert len(takes) == 2 and len(set(takes)) == 1


def test_esc50_and_esc10_classes_5_second_clips_and_the_parent_folder(esc50, tmp_path):
    everything = dataset.load('esc50', esc50.parent, tmp_path / 'cache')      # parent of ESC-50-master
    assert everything.classes == ['dog', 'rooster', 'rain', 'airplane']        # by target
    assert everything.waves.shape == (21, 80000) and everything.sample_rate == 16000
    ten = dataset.load('esc10', esc50, tmp_path / 'cache', test_fold=2)
    assert ten.classes == ['dog', 'rooster', 'rain'] and len(ten.paths) == 16
    assert all(dataset.esc_fold(ten.paths[i]) == 2 for i in ten.splits['test'])
    for data in (everything, ten):
        for i, path in enumerate(data.paths):       # the file name ends with the target
            target = int(Path(path).stem.split('-')[-1])
            assert {'dog': 0, 'rooster': 1, 'rain': 10, 'airplane': 47}[data.classes[data.labels[i]]] == target
    assert cached_equals_decoded(everything, [0, 7, 20])
    # other test folds read the same cache
    assert dataset.load('esc50', esc50, tmp_path / 'cache', test_fold=3).splits['test'].size == 4
    assert len(cache_folders(tmp_path / 'cache')) == 2            # esc50 and esc10


def test_esc_test_fold_must_be_one_to_five(esc50):
    with pytest.raises(UserError, match='--test_fold must be one of 1, 2, 3, 4, 5, got 6'):
        dataset.listing('esc50', esc50, 'unused', test_fold=6)


def test_esc10_reads_the_standalone_release(tmp_path):
    root = write_esc10_standalone(tmp_path / 'ESC-10')
    data = dataset.load('esc10', tmp_path, tmp_path / 'cache', test_fold=1)   # the parent works too
    assert data.classes == ['Dog bark', 'Rain', 'Fire crackling']
    assert data.waves.shape == (15, 80000)
    assert [data.classes[label] for label in data.labels] == \
           [Path(p).parent.name.split(' - ')[1] for p in data.paths]
    splits = split_of(data)
    for i, path in enumerate(data.paths):
        assert splits[i] == dataset.esc_split(int(Path(path).name[0]), 1)
    assert {dataset.esc_fold(data.paths[i]) for i in data.splits['val']} == {5}
    short = data.paths.index(str(root / '001 - Dog bark' / '1-20001-A.ogg'))    # 3.6 s
    assert not data.waves[short, int(3.6 * 16000) + 1:].any()                # zero-padded
    assert np.abs(data.waves[short, int(3.5 * 16000):int(3.59 * 16000)]).max() > 1000
    long = data.paths.index(str(root / '001 - Dog bark' / '2-20002-A.ogg'))     # 7.2 s, cropped
    assert data.waves[long, -800:].any()
    assert cached_equals_decoded(data, [short, long, 14])


# ---------------------------------------------------------------- Free Spoken Digit Dataset

@pytest.fixture(scope='module')
def fsdd(tmp_path_factory):
    return write_fsdd(tmp_path_factory.mktemp('fsdd'))


def test_fsdd_digits_take_split_and_8_khz_resampled_to_1_second(fsdd, tmp_path):
    data = dataset.load('fsdd', fsdd.parent, tmp_path / 'cache')
    assert data.classes == [str(d) for d in range(10)]
    assert data.waves.shape == (120, 16000) and data.sample_rate == 16000
    splits = split_of(data)
    for i, path in enumerate(data.paths):
        digit, _, take = Path(path).stem.split('_')
        assert data.classes[data.labels[i]] == digit
        assert splits[i] == ('test' if int(take) <= 4 else 'val' if int(take) <= 9 else 'train')
    assert [len(data.splits[s]) for s in dataset.SPLITS] == [40, 40, 40]
    assert soundfile.info(data.paths[0]).samplerate == 8000
    long = data.paths.index(str(fsdd / '0_jackson_10.wav'))                    # 1.3 s: cropped
    assert data.waves[long, -400:].any()
    short = data.paths.index(str(fsdd / '0_jackson_0.wav'))                    # 0.5 s: padded
    assert not data.waves[short, 8001:].any()
    assert cached_equals_decoded(data, [short, long, 77])
    # data_root may be the recordings folder itself
    assert dataset.listing('fsdd', fsdd, 'unused').paths == data.paths


def test_fsdd_misnamed_or_empty_files(tmp_path):
    recordings = write_fsdd(tmp_path / 'f', digits=(1, 2), speakers=('ana',), takes=(0, 7, 20))
    (recordings / 'README.txt').write_text('not audio')                        # ignored
    empty = recordings / '2_ana_30.wav'
    empty.write_bytes(b'')
    with pytest.raises(UserError, match=f'{empty}: unreadable audio'):
        dataset.load('fsdd', recordings, tmp_path / 'cache')
    assert len(dataset.load('fsdd', recordings, tmp_path / 'cache', skip_bad_files=True).paths) == 6
    (recordings / 'two.wav').write_bytes(b'')
    with pytest.raises(UserError, match=r'two.wav: not named \{digit\}_\{speaker\}_\{take\}.wav'):
        dataset.listing('fsdd', recordings, 'unused')


# ---------------------------------------------------------------- Speech Commands, 12 classes

def test_speechcommands12_keywords_unknown_and_silence_cuts(tmp_path):
    root = write_speechcommands(tmp_path / 'sc', words=('yes', 'no', 'cat', 'dog'), speakers=6,
                                takes=1)
    write_background_noise(root)            # 10 s at 16 kHz, 10.5 s at 22.05 kHz; + 3 s white noise
    data = dataset.load('speechcommands12', root, tmp_path / 'cache')
    assert data.classes == ['_silence_', '_unknown_', 'yes', 'no']
    names = [data.classes[label] for label in data.labels]
    words = [(p, n) for p, n in zip(data.paths, names) if '_background_noise_' not in p]
    assert len(words) == 24
    assert all(n == (Path(p).parent.name if Path(p).parent.name in ('yes', 'no') else '_unknown_')
               for p, n in words)
    # word clips follow the official lists
    validation = set((root / 'validation_list.txt').read_text().split())
    testing = set((root / 'testing_list.txt').read_text().split())
    splits = split_of(data)
    for i, path in enumerate(data.paths):
        relative = Path(path).relative_to(root).as_posix()
        if names[i] != '_silence_':
            assert splits[i] == ('val' if relative in validation else 'test' if relative in testing
                                 else 'train')
    # silence: every whole second of each noise file, first 80 % train, 10 % val, 10 % test
    cuts = defaultdict(list)
    for i in np.flatnonzero(np.array(names) == '_silence_'):
        assert names[i] == '_silence_' and data.paths[i].endswith('.wav')
        cuts[Path(data.paths[i]).name].append((data.offsets[i], splits[i]))
    assert sorted(cuts) == ['dude_miaowing.wav', 'running_tap.wav', 'white_noise.wav']
    assert [o for o, _ in cuts['running_tap.wav']] == [float(s) for s in range(10)]
    assert [s for _, s in cuts['running_tap.wav']] == ['train'] * 8 + ['val', 'test']
    assert [s for _, s in cuts['white_noise.wav']] == ['train'] * 3
    assert len(data.splits['test']) == len(testing) + 2
    assert data.waves.shape == (24 + 10 + 10 + 3, 16000)
    # a cut at 16 kHz is exactly that second of the file
    tap = [i for i in range(len(data.paths)) if data.paths[i].endswith('running_tap.wav')]
    samples, _ = soundfile.read(data.paths[tap[3]], dtype='int16')
    assert data.offsets[tap[3]] == 3.0 and np.array_equal(data.waves[tap[3]], samples[48000:64000])
    cached_equals_decoded(data, [i for i in range(len(data.paths)) if 'miaowing' in data.paths[i]][::3])
    assert dataset.silence_split(0, 1) == 'train'


def test_speechcommands12_needs_background_noise(tmp_path):
    root = write_speechcommands(tmp_path / 'sc', words=('yes',), speakers=6, takes=1)
    shutil.rmtree(root / '_background_noise_')
    with pytest.raises(UserError, match='_background_noise_/\\*.wav'):
        dataset.listing('speechcommands12', root, 'unused')


def test_offsets_are_part_of_the_cache_key(tmp_path):
    path = tmp_path / 'noise.wav'
    soundfile.write(path, np.zeros(32000), 16000, subtype='PCM_16')
    first = audio.fingerprint([str(path)], [0.0], 16000, 16000)
    assert audio.fingerprint([str(path)], [1.0], 16000, 16000) != first
    assert audio.fingerprint([str(path)], [0.0], 16000, 16001) != first
    with pytest.raises(ValueError, match='offset 2 s is past the end'):
        audio.read_clip(str(path), 16000, 16000, 2.0)


# ---------------------------------------------------------------- missing data and downloads

@pytest.mark.parametrize('name,looked', [
    ('nsynth', r'NSynth not found: looked for nsynth-train/examples.json'),
    ('esc50', r'ESC-50 not found: looked for meta/esc50.csv in .*ESC-50-master'),
    ('esc10', r'ESC-10 not found: .*stand-alone ESC-10 layout'),
    ('fsdd', r'Free Spoken Digit Dataset was not found: looked for'),
    ('speechcommands12', r'looked for validation_list.txt in')])
def test_a_missing_dataset_says_where_it_looked_and_how_to_download(tmp_path, name, looked):
    with pytest.raises(UserError, match=looked + r'.*--download=True.*--data_root'):
        dataset.load(name, tmp_path / 'nothing', tmp_path / 'cache')


def zip_folder(folder, archive, inside):
    with zipfile.ZipFile(archive, 'w') as packed:
        for path in sorted(folder.rglob('*')):
            packed.write(path, f'{inside}/{path.relative_to(folder).as_posix()}')
    return archive


def test_downloads_stream_and_extract_archives(tmp_path, monkeypatch):
    # FSDD: a zip of the whole repository, of which only recordings/ is kept
    recordings = write_fsdd(tmp_path / 'fsdd-src', digits=(3,), speakers=('ana',), takes=(0, 5, 11))
    (tmp_path / 'fsdd-src' / 'README.md').write_text('repo readme')
    archive = zip_folder(tmp_path / 'fsdd-src', tmp_path / 'fsdd.zip',
                         'free-spoken-digit-dataset-master')
    monkeypatch.setattr(dataset, 'FSDD_URL', archive.as_uri())
    listing = dataset.listing('fsdd', tmp_path / 'data', 'unused', download=True)
    assert sorted(p.name for p in (tmp_path / 'data').iterdir()) == ['recordings']
    assert len(listing.paths) == 3 and set(listing.splits) == {'train', 'val', 'test'}
    assert sorted(p.name for p in recordings.iterdir()) == \
           sorted(p.name for p in (tmp_path / 'data' / 'recordings').iterdir())
    # NSynth: one tar.gz per split, fetched only when missing
    source = write_nsynth(tmp_path / 'ns-src', notes={'nsynth-train': [(0, 1, 40)],
                                                      'nsynth-valid': [(3, 2, 41)],
                                                      'nsynth-test': [(3, 3, 42)]})
    for folder in dataset.NSYNTH_FOLDERS:
        with tarfile.open(tmp_path / f'{folder}.jsonwav.tar.gz', 'w:gz') as packed:
            packed.add(source / folder, folder)
    shutil.copytree(source / 'nsynth-test', tmp_path / 'nsdata' / 'nsynth-test')
    monkeypatch.setattr(dataset, 'NSYNTH_URL', (tmp_path / 'x').as_uri()[:-1] + '{}.jsonwav.tar.gz')
    data = dataset.load('nsynth', tmp_path / 'nsdata', tmp_path / 'cache', download=True)
    assert data.classes == ['bass', 'guitar'] and data.waves.shape == (3, 64000)
    assert sorted(p.name for p in (tmp_path / 'nsdata').iterdir()) == sorted(dataset.NSYNTH_FOLDERS)
    # ESC-50: the GitHub zip, extracted as ESC-50-master
    write_esc50(tmp_path / 'esc-src', categories=(('dog', 0, True),))
    monkeypatch.setattr(dataset, 'ESC50_URL', zip_folder(tmp_path / 'esc-src', tmp_path / 'm.zip',
                                                         'ESC-50-master').as_uri())
    listing = dataset.listing('esc10', tmp_path / 'escdata', 'unused', download=True)
    assert len(listing.paths) == 6 and (tmp_path / 'escdata' / 'ESC-50-master' / 'meta').is_dir()


def test_a_failed_download_says_so_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(dataset, 'FSDD_URL', (tmp_path / 'absent.zip').as_uri())
    with pytest.raises(UserError, match='could not download .*absent.zip'):
        dataset.listing('fsdd', tmp_path / 'data', 'unused', download=True)
    assert not list((tmp_path / 'data').iterdir())
    (tmp_path / 'broken.zip').write_bytes(b'PK not a zip')
    monkeypatch.setattr(dataset, 'FSDD_URL', (tmp_path / 'broken.zip').as_uri())
    with pytest.raises(UserError, match='does not extract'):
        dataset.listing('fsdd', tmp_path / 'data', 'unused', download=True)
    assert not list((tmp_path / 'data').iterdir())


# ---------------------------------------------------------------- folds, batches, benchmark

def fake_run(folder, test_fold, accuracy, name='esc10'):
    folder.mkdir(parents=True)
    (folder / 'config.json').write_text(json.dumps({'dataset': name, 'test_fold': test_fold}))
    (folder / 'results.json').write_text(json.dumps({'test_accuracy': accuracy,
                                                     'val_accuracy': accuracy + 0.1}))
    return folder


def test_fold_summary_reads_results_of_each_fold(tmp_path):
    accuracies = {1: 0.7, 2: 0.8, 3: 0.75, 4: 0.9, 5: 0.85}
    runs = [fake_run(tmp_path / f'fold{k}', k, a) for k, a in accuracies.items()]
    summary = dataset.fold_summary(runs)
    assert summary['per_fold'] == accuracies and summary['folds'] == 5
    assert summary['mean'] == pytest.approx(0.8)
    assert summary['std'] == pytest.approx(np.std(list(accuracies.values()), ddof=1))
    assert dataset.fold_summary(runs, 'val_accuracy')['mean'] == pytest.approx(0.9)
    assert dataset.fold_summary(runs[:1])['std'] == 0.0
    with pytest.raises(UserError, match='two runs tested fold 1'):
        dataset.fold_summary(runs + [fake_run(tmp_path / 'again', 1, 0.5)])
    (tmp_path / 'unfinished').mkdir()
    with pytest.raises(UserError, match='unfinished has no results.json'):
        dataset.fold_summary(runs + [tmp_path / 'unfinished'])


def test_batch_reads_sorted_float_clips_and_bench_cache_measures_it(fsdd, tmp_path):
    import bench_data
    data = dataset.load('fsdd', fsdd, tmp_path / 'cache')
    waves, labels, order = data.batch([77, 3, 50, 3])
    assert order.tolist() == [3, 3, 50, 77] and waves.dtype == torch.float32
    assert torch.equal(waves, torch.from_numpy(np.asarray(data.waves[order], np.float32) / 32768))
    assert labels.tolist() == data.labels[order].tolist()
    assert data.batch([])[0].shape == (0, 16000)
    with pytest.raises(IndexError):
        data.batch([120])
    result = bench_data.bench_cache(data, batch_size=32, seconds=0.05)
    assert result['clips_per_second'] > 0 and result['batches'] >= 3
    assert result['clips'] == 32 * result['batches'] and result['clip_samples'] == 16000
    decoded = bench_data.bench_decode(data, seconds=0.05, how='soundfile')
    assert decoded['clips'] >= 1 and decoded['what'] == 'soundfile'
