"""Unlabelled pools: folders of recordings of any length whose clip-length windows join the
training clips of train.py and selfsupervised.py without a label.

    python train.py --dataset=folder --data_root=labelled/ --unlabelled_root=recordings/

Every .wav/.flac/.ogg/.mp3 file under a root (recursively; any rate, channel count and length)
is cut into consecutive windows of the clip length, --unlabelled_hop seconds apart (default:
the clip length), by audio.windows: a last partial window is kept, zero-padded, when it
holds at least half a clip; a file shorter than a clip gives one padded window.
--skip_silent_windows=-50 drops windows whose RMS is below -50 dB full scale. The windows
are decoded once into a waveform cache per root (memory-mapped; adding files to one root
re-decodes that root only), the same int16 cache the datasets use (audio.build_windows:
labelled recordings are cut the same way under --labelled_windows).
"""
import json
from pathlib import Path

import numpy as np

import audio
from config import UserError

def roots_of(text):
    return [Path(part.strip()).expanduser() for part in text.split(',') if part.strip()]


def check_roots(roots, labelled_root):
    """Refuse a pool root that is missing, or that is, contains or lies inside the folder
    of the labelled data (it would put validation and test clips into training)."""
    labelled = Path(labelled_root).resolve()
    for root in roots:
        if not root.is_dir():
            raise UserError(f'--unlabelled_root: {root} is not a folder')
        resolved = root.resolve()
        if resolved == labelled or labelled in resolved.parents or resolved in labelled.parents:
            relation = ('is' if resolved == labelled else
                        'lies inside' if labelled in resolved.parents else 'contains')
            raise UserError(f'--unlabelled_root: {root} {relation} the labelled data '
                            f'({labelled}); its validation and test clips would join training. '
                            f'Give a folder apart from the labelled data.')


def load(roots, cache_dir, sample_rate, clip_samples, hop_seconds=0.0, silence_db=0.0,
         skip_bad_files=False):
    """The windows of every root: [(root, int16 memmap (n, clip_samples), index)], built on
    first use. index: files, windows per file, skipped files, silent windows dropped."""
    hop = int(round(hop_seconds * sample_rate)) if hop_seconds else clip_samples
    pools = []
    for root in roots:
        files = [str(p) for p in audio.audio_files(root)]
        if not files:
            raise UserError(f'--unlabelled_root: no audio ({", ".join(audio.AUDIO_EXTENSIONS)}) '
                            f'under {root}')
        key = audio.fingerprint(files, [0.0] * len(files), sample_rate, clip_samples,
                                extra=f'pool hop {hop} silence {silence_db:g}')
        folder = (Path(cache_dir).expanduser() / 'waveforms' /
                  f'unlabelled-{root.name or "root"}-{sample_rate}-{clip_samples}-{key}')
        audio.build_once(folder, lambda: audio.build_windows(folder, files, sample_rate,
                                                             clip_samples, hop, silence_db,
                                                             skip_bad_files))
        index = json.loads((folder / 'index.json').read_text())
        if index['skipped'] and not skip_bad_files:
            raise UserError(f'the cached pool {root} skipped {len(index["skipped"])} bad files '
                            f'(first: {index["skipped"][0]}); run with --skip_bad_files=True')
        if index['count'] == 0:
            raise UserError(f'--unlabelled_root: {root} gave no windows ('
                            + (f'{len(index["skipped"])} unreadable files' if index['skipped']
                               else f'{index["silent"]} windows below '
                                    f'--skip_silent_windows={silence_db:g} dB') + ')')
        waves = np.load(folder / 'waves.npy', mmap_mode='r')[:index['count']]
        pools.append((root, waves, index))
    return pools


def attach(data, pools):
    """The dataset with the pools' windows added after its own clips: labels -1, in no
    split, listed in data.unlabelled."""
    arrays = [waves for _, waves, _ in pools]
    total = sum(len(a) for a in arrays)
    first = len(data.labels)
    data.pool = arrays
    data.labels = np.concatenate([data.labels, np.full(total, -1, dtype=np.int64)])
    data.unlabelled = np.arange(first, first + total)
    return data


def describe(pools):
    lines = []
    for root, waves, index in pools:
        files = sum(1 for n in index['windows_per_file'] if n)
        lines.append(f'unlabelled pool {root}: {files} files, {len(waves)} windows'
                     + (f', {index["silent"]} silent windows dropped' if index['silent'] else '')
                     + (f', {len(index["skipped"])} unreadable files skipped'
                        if index['skipped'] else ''))
    return '\n'.join(lines)
