import numpy as np
import pytest
import soundfile

import audio
import dataset
from config import UserError
from tests.conftest import write_class_folders, write_speechcommands


def test_speechcommands_layout_classes_and_official_split(speechcommands, cache_dir):
    data = dataset.load('speechcommands', speechcommands, cache_dir)
    assert data.classes == ['no', 'up', 'yes']                  # no _background_noise_
    assert data.waves.shape == (72, 16000) and data.waves.dtype == np.int16
    validation = set((speechcommands / 'validation_list.txt').read_text().split())
    testing = set((speechcommands / 'testing_list.txt').read_text().split())
    relative = [str(p).split('speech_commands_v0.02/')[1] for p in data.paths]
    assert {relative[i] for i in data.splits['val']} == validation
    assert {relative[i] for i in data.splits['test']} == testing
    assert len(data.splits['train']) == 72 - len(validation) - len(testing)
    # clips of one speaker share a split
    speaker_split = {}
    for split, indices in data.splits.items():
        for i in indices:
            assert speaker_split.setdefault(relative[i].split('/')[1].split('_')[0], split) == split


def test_speechcommands_is_found_under_torchaudios_download_folder(tmp_path, cache_dir):
    write_speechcommands(tmp_path / 'SpeechCommands' / 'speech_commands_v0.02', speakers=6, takes=1)
    assert dataset.load('speechcommands', tmp_path, cache_dir).classes == ['no', 'up', 'yes']


def test_sc09_keeps_only_the_digits(tmp_path, cache_dir):
    root = write_speechcommands(tmp_path / 'sc', words=('one', 'two', 'yes'), speakers=6, takes=1)
    assert dataset.load('sc09', root, cache_dir).classes == ['one', 'two']


def test_missing_speechcommands_says_where_it_looked_and_how_to_download(tmp_path, cache_dir):
    with pytest.raises(UserError, match=r'looked for validation_list.txt in .*--download=True'):
        dataset.load('speechcommands', tmp_path / 'nothing', cache_dir)


def test_folder_dataset_converts_formats_rates_and_channels(tmp_path, cache_dir):
    root = write_class_folders(tmp_path / 'mine', per_class=10)
    data = dataset.load('folder', root, cache_dir, clip_seconds=1.0)
    assert data.classes == ['high', 'low', 'mid'] and data.waves.shape == (30, 16000)
    for i in (0, 1, 2, 3):            # wav 16 kHz, flac 22.05 kHz stereo, ogg 44.1 kHz, float wav 8 kHz
        direct = audio.read_clip(data.paths[i], 16000, 16000)
        assert np.abs(data.waves[i] / 32768 - direct).max() < 2e-4    # int16 rounding only
    # the seeded stratified 80/10/10 split: one val and one test clip per class of 10
    for split, count in (('train', 24), ('val', 3), ('test', 3)):
        assert len(data.splits[split]) == count
        assert sorted(data.labels[data.splits[split]]) == sorted(np.repeat([0, 1, 2], count // 3))


def test_folder_split_is_seeded(tmp_path, cache_dir):
    root = write_class_folders(tmp_path / 'mine', per_class=10)
    first = dataset.list_folder(root, seed=1).splits
    assert first == dataset.list_folder(root, seed=1).splits
    assert first != dataset.list_folder(root, seed=2).splits


def test_the_cache_is_built_once_and_rebuilt_when_files_change(speechcommands, cache_dir, monkeypatch):
    first = dataset.load('speechcommands', speechcommands, cache_dir)
    samples = np.array(first.waves[:5])

    def no_decoding(*args):
        raise AssertionError('decoded audio although the cache was valid')
    with monkeypatch.context() as patch:
        patch.setattr(audio, 'read_clip', no_decoding)
        again = dataset.load('speechcommands', speechcommands, cache_dir)
        assert np.array_equal(np.array(again.waves[:5]), samples)
    changed = speechcommands / 'yes' / '00000000_nohash_0.wav'
    soundfile.write(changed, np.zeros(8000), 16000, subtype='PCM_16')
    rebuilt = dataset.load('speechcommands', speechcommands, cache_dir)
    assert not rebuilt.waves[rebuilt.paths.index(str(changed))].any()


def test_a_corrupt_file_stops_the_build_naming_it_unless_skipped(speechcommands, cache_dir):
    broken = speechcommands / 'up' / '00000001_nohash_0.wav'
    broken.write_bytes(b'RIFF not really a wav file')
    with pytest.raises(UserError, match=f'{broken}: unreadable audio.*--skip_bad_files=True'):
        dataset.load('speechcommands', speechcommands, cache_dir)
    assert not list((cache_dir / 'waveforms').glob('*/index.json'))      # nothing half-built
    data = dataset.load('speechcommands', speechcommands, cache_dir, skip_bad_files=True)
    assert len(data.skipped) == 1 and str(broken) not in data.paths and len(data.paths) == 71


def test_batches_are_floats_with_their_labels(speechcommands, cache_dir):
    data = dataset.load('speechcommands', speechcommands, cache_dir)
    waves, labels, order = data.batch([5, 2, 9])
    assert list(order) == [2, 5, 9] and waves.shape == (3, 16000)
    assert labels.tolist() == data.labels[[2, 5, 9]].tolist()
    assert waves.abs().max() <= 1 and waves.abs().max() > 0.05


def test_labelled_subset_is_class_balanced_seeded_and_at_least_one_per_class():
    labels = np.repeat([0, 1, 2], [100, 50, 10])
    train = np.arange(160)
    subset = dataset.labelled_subset(labels, train, 0.1, seed=3)
    assert np.bincount(labels[subset]).tolist() == [10, 5, 1]
    assert np.array_equal(subset, dataset.labelled_subset(labels, train, 0.1, seed=3))
    assert not np.array_equal(subset, dataset.labelled_subset(labels, train, 0.1, seed=4))
    assert np.bincount(labels[dataset.labelled_subset(labels, train, 0.001)]).tolist() == [1, 1, 1]
    assert len(dataset.labelled_subset(labels, train, 1.0)) == 160
    with pytest.raises(UserError, match='label_fraction must be in'):
        dataset.labelled_subset(labels, train, 0.0)


def test_labelled_subset_of_windows_draws_whole_files():
    """Windows of one recording are labelled together or not at all, and the fraction
    counts files: 10 files of 3 windows each at 0.3 label 3 files (9 windows)."""
    files = [f'f{i // 3}.wav' for i in range(60)]          # 20 files, two classes
    labels = np.array([0] * 30 + [1] * 30)
    train = np.arange(60)
    chosen = dataset.labelled_subset(labels, train, 0.3, seed=4, files=files)
    picked = {files[i] for i in chosen}
    assert len(picked) == 6 and len(chosen) == 18
    assert all(i in chosen for i in train if files[i] in picked)
    per_window = dataset.labelled_subset(labels, train, 0.3, seed=4)   # without files: windows
    assert len(per_window) == 18 and len({files[i] for i in per_window}) > 6
