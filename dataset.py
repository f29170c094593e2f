"""Datasets as fixed-length 16 kHz mono clips, read through an on-disk waveform cache.

Each dataset is a listing of (audio file, class, split). The first use decodes every file
once (soundfile; resampled, downmixed, zero-padded or cropped on the right) into an int16
array under `cache_dir`, memory-mapped afterwards: no epoch decodes audio again. The cache
is keyed by the files' names, sizes and modification times, so it is rebuilt when they change.

    data = load('speechcommands', 'data', cache_dir='~/.cache/clar')
    data.waves[i]            # int16 samples of clip i
    data.labels[data.splits['train']]
"""
import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio
from tqdm import tqdm

from config import UserError

AUDIO_EXTENSIONS = ('.wav', '.flac', '.ogg')
SPLITS = ('train', 'val', 'test')
SC09_WORDS = ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine')
CACHE_VERSION = 1


@dataclass
class Listing:
    """What a dataset holds before decoding: parallel lists of files, class names and splits."""
    paths: list
    class_names: list
    splits: list
    classes: list
    clip_seconds: float


@dataclass
class AudioData:
    """Decoded clips: waves (N, samples) int16, labels (N,), split -> indices."""
    name: str
    classes: list
    sample_rate: int
    clip_samples: int
    waves: np.ndarray
    labels: np.ndarray
    splits: dict
    paths: list
    skipped: list

    def batch(self, indices, device='cpu'):
        """Float waveforms in [-1, 1) and labels for the given clip indices."""
        order = np.sort(np.asarray(indices))        # memmap reads fastest in file order
        waves = torch.from_numpy(np.ascontiguousarray(self.waves[order]))
        labels = torch.from_numpy(self.labels[order])
        if torch.device(device).type == 'cuda':
            waves, labels = waves.pin_memory(), labels.pin_memory()
        waves = waves.to(device, non_blocking=True).float().div_(32768.0)
        return waves, labels.to(device, non_blocking=True), order


# ---------------------------------------------------------------- listings

def _audio_files(folder):
    return sorted(p for p in folder.rglob('*') if p.suffix.lower() in AUDIO_EXTENSIONS
                  and p.is_file())


def _read_list(path):
    if not path.exists():
        return set()
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def list_class_folders(root, classes=None, seed=0):
    """One sub-folder per class. validation_list.txt / testing_list.txt (paths relative to
    root, the Speech Commands convention) give the split when present; otherwise each class
    is split 80/10/10 by a seeded shuffle."""
    root = Path(root)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(('_', '.')))
    if classes is not None:
        folders = [f for f in folders if f.name in classes]
    files = {f.name: _audio_files(f) for f in folders}
    files = {name: found for name, found in files.items() if found}
    if not files:
        raise UserError(f'no audio ({", ".join(AUDIO_EXTENSIONS)}) in class sub-folders of {root}')
    validation = _read_list(root / 'validation_list.txt')
    testing = _read_list(root / 'testing_list.txt')
    use_lists = bool(validation or testing)
    paths, names, splits = [], [], []
    rng = np.random.default_rng(seed)
    for name, found in files.items():
        if use_lists:
            relative = [p.relative_to(root).as_posix() for p in found]
            split = ['val' if r in validation else 'test' if r in testing else 'train'
                     for r in relative]
        else:
            order = rng.permutation(len(found))
            n_val = n_test = int(round(0.1 * len(found))) if len(found) >= 10 else int(len(found) >= 3)
            split = [None] * len(found)
            for rank, i in enumerate(order):
                split[i] = 'val' if rank < n_val else 'test' if rank < n_val + n_test else 'train'
        paths += [str(p) for p in found]
        names += [name] * len(found)
        splits += split
    return Listing(paths, names, splits, sorted(files), 1.0)


def _speechcommands_root(data_root, download):
    root = Path(data_root).expanduser()
    candidates = [root, root / 'SpeechCommands' / 'speech_commands_v0.02']
    for candidate in candidates:
        if (candidate / 'validation_list.txt').exists():
            return candidate
    if download:
        root.mkdir(parents=True, exist_ok=True)
        print(f'downloading Speech Commands v0.02 into {root} (2.3 GB) ...')
        torchaudio.datasets.SPEECHCOMMANDS(str(root), download=True)
        return candidates[1]
    raise UserError(
        f'Speech Commands not found: looked for validation_list.txt in '
        f'{" and ".join(str(c) for c in candidates)}. Run with --download=True to fetch it '
        f'into --data_root, or point --data_root at the folder holding the word folders.')


def list_speechcommands(data_root, download=False, words=None):
    root = _speechcommands_root(data_root, download)
    return list_class_folders(root, classes=words)


def list_synth(cache_dir):
    import synth_speech
    return list_class_folders(synth_speech.ensure(Path(cache_dir).expanduser()))


def list_folder(data_root, seed=0):
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise UserError(f'--data_root={data_root} is not a folder: the folder dataset wants '
                        f'one sub-folder of audio files per class')
    return list_class_folders(root, seed=seed)


def listing(name, data_root, cache_dir, download=False, seed=0):
    if name == 'synth':
        return list_synth(cache_dir)
    if name == 'speechcommands':
        return list_speechcommands(data_root, download)
    if name == 'sc09':
        return list_speechcommands(data_root, download, words=SC09_WORDS)
    if name == 'folder':
        return list_folder(data_root, seed)
    raise UserError(f'unknown --dataset={name}; valid: {", ".join(DATASETS)}')


DATASETS = ('synth', 'speechcommands', 'sc09', 'folder')


# ---------------------------------------------------------------- decoding

def read_clip(path, sample_rate, clip_samples):
    """Decode one file to `clip_samples` float32 mono samples at `sample_rate`.
    Raises ValueError with the reason when the file cannot be used."""
    try:
        samples, rate = soundfile.read(path, dtype='float32', always_2d=True)
    except Exception as error:          # soundfile raises several types for broken files
        raise ValueError(f'unreadable audio ({error})') from None
    if samples.size == 0:
        raise ValueError('no samples')
    if not np.isfinite(samples).all():
        raise ValueError('NaN or infinite samples')
    mono = torch.from_numpy(samples.mean(axis=1))
    if rate != sample_rate:
        mono = torchaudio.functional.resample(mono, rate, sample_rate)
    clip = torch.zeros(clip_samples)
    clip[:min(clip_samples, len(mono))] = mono[:clip_samples]
    return clip.numpy()


def _fingerprint(name, listing_, sample_rate, clip_samples):
    digest = hashlib.sha1(f'{CACHE_VERSION}|{name}|{sample_rate}|{clip_samples}'.encode())
    for path, class_name, split in zip(listing_.paths, listing_.class_names, listing_.splits):
        stat = os.stat(path)
        digest.update(f'{path}|{class_name}|{split}|{stat.st_size}|{stat.st_mtime_ns}\n'.encode())
    return digest.hexdigest()[:16]


def build_cache(folder, listing_, sample_rate, clip_samples, skip_bad_files=False):
    """Decode every clip into folder/waves.int16 and folder/index.json, atomically: the
    folder appears only when complete."""
    parent = folder.parent
    parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=folder.name + '.partial-', dir=parent))
    try:
        waves = np.lib.format.open_memmap(partial / 'waves.npy', mode='w+', dtype=np.int16,
                                          shape=(len(listing_.paths), clip_samples))
        kept, skipped = [], []
        for i, path in enumerate(tqdm(listing_.paths, desc=f'caching {folder.name}',
                                      unit='clip', mininterval=1.0)):
            try:
                clip = read_clip(path, sample_rate, clip_samples)
            except ValueError as error:
                if not skip_bad_files:
                    raise UserError(f'{path}: {error}. Remove or fix the file, or run with '
                                    f'--skip_bad_files=True to skip such files.') from None
                skipped.append(f'{path}: {error}')
                continue
            waves[len(kept)] = np.round(np.clip(clip, -1.0, 32767 / 32768) * 32768)
            kept.append(i)
        waves.flush()
        del waves
        index = {
            'paths': [listing_.paths[i] for i in kept],
            'class_names': [listing_.class_names[i] for i in kept],
            'splits': [listing_.splits[i] for i in kept],
            'classes': listing_.classes, 'count': len(kept), 'skipped': skipped,
            'sample_rate': sample_rate, 'clip_samples': clip_samples,
        }
        (partial / 'index.json').write_text(json.dumps(index))
        os.replace(partial, folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def load(name, data_root='data', cache_dir='~/.cache/clar', sample_rate=16000,
         clip_seconds=0.0, download=False, skip_bad_files=False, seed=0):
    """The dataset `name` as AudioData, decoding into the cache on first use."""
    listing_ = listing(name, data_root, cache_dir, download, seed)
    clip_samples = int(round((clip_seconds or listing_.clip_seconds) * sample_rate))
    key = _fingerprint(name, listing_, sample_rate, clip_samples)
    folder = Path(cache_dir).expanduser() / 'waveforms' / f'{name}-{sample_rate}-{clip_samples}-{key}'
    if not (folder / 'index.json').exists():
        build_cache(folder, listing_, sample_rate, clip_samples, skip_bad_files)
    index = json.loads((folder / 'index.json').read_text())
    if index['skipped'] and not skip_bad_files:
        raise UserError(f'the cached {name} dataset skipped {len(index["skipped"])} bad files '
                        f'(first: {index["skipped"][0]}); run with --skip_bad_files=True')
    if index['skipped']:
        print(f'skipped {len(index["skipped"])} bad audio files (listed in {folder}/index.json)')
    waves = np.load(folder / 'waves.npy', mmap_mode='r')[:index['count']]
    class_to_label = {c: i for i, c in enumerate(index['classes'])}
    labels = np.array([class_to_label[c] for c in index['class_names']], dtype=np.int64)
    split_of = np.array(index['splits'])
    splits = {s: np.flatnonzero(split_of == s) for s in SPLITS}
    return AudioData(name, index['classes'], sample_rate, clip_samples, waves, labels, splits,
                     index['paths'], index['skipped'])


def labelled_subset(labels, train_indices, fraction, seed=0):
    """A class-balanced subset of the training clips: from every class, `fraction` of its
    clips (rounded, at least one), drawn by `seed`. Independent of the training seed, so
    the three scripts see the same labelled clips."""
    if not 0 < fraction <= 1:
        raise UserError(f'--label_fraction must be in (0, 1], got {fraction}')
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels[train_indices]):
        members = np.sort(train_indices[labels[train_indices] == label])
        count = len(members) if fraction == 1 else max(1, int(round(fraction * len(members))))
        chosen.append(rng.permutation(members)[:count])
    return np.sort(np.concatenate(chosen))
