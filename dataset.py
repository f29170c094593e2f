"""Datasets as fixed-length 16 kHz mono clips, read through an on-disk waveform cache.

Each dataset is a listing of (audio file, optional start offset, class, split). The first use
decodes every clip once into an int16 array under `cache_dir` (audio.py: decoding and the
cache), memory-mapped afterwards: no epoch decodes audio again. Datasets that differ only in
labels or splits (NSynth's two labels, ESC's five test folds) share one cache.

    data = load('speechcommands', 'data', cache_dir='~/.cache/clar')
    data.waves[i]            # int16 samples of clip i
    data.labels[data.splits['train']]

Datasets (`--dataset=`), their layouts under `--data_root` and splits:
    synth             generated demo words (in cache_dir)
    speechcommands    Speech Commands v0.02, 35 words; official validation/testing lists
    sc09              its ten digits
    speechcommands12  the 12-class benchmark: yes no up down left right on off stop go,
                      _unknown_ (every other word) and _silence_ (1-s cuts of the
                      _background_noise_ files: of each file's cuts, the first 80 % train,
                      the next 10 % val, the last 10 % test)
    nsynth            nsynth-{train,valid,test}/examples.json + audio/*.wav, 4 s; label
                      --nsynth_label = instrument_family (11) | pitch (the pitches present)
    esc50, esc10      ESC-50 release (audio/, meta/esc50.csv; esc10 = its esc10 rows) or, for
                      esc10, the stand-alone ESC-10 release ('NNN - Name'/{fold}-{id}-{take}.ogg);
                      5 s; --test_fold=k is the test split, fold k-1 (5 when k = 1) the
                      validation split, the other three folds train
    fsdd              Free Spoken Digit Dataset recordings/{digit}_{speaker}_{take}.wav, 1 s;
                      takes 0-4 test, 5-9 val, the rest train
    folder            your own: one sub-folder of audio files per class, split by file; every
                      file cut into clip-length windows (--labelled_windows, --labelled_hop),
                      checked as it loads (datacheck.py)

--labelled_windows: a labelled file longer than a clip gives every window of it
(audio.build_windows, the cut of the unlabelled pools: --labelled_hop apart, a last partial
window kept when it holds half a clip), each with the file's class and split; off, a file
gives its first clip (cropped or zero-padded). On by default for folder only: the other
datasets' clips are already one length, and load as they always have.
"""
import csv
import json
import os
import re
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torchaudio

import audio
import datacheck
from audio import AUDIO_EXTENSIONS, audio_files
from config import UserError, parse_value

SPLITS = ('train', 'val', 'test')
SC09_WORDS = ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine')
SC12_KEYWORDS = ('yes', 'no', 'up', 'down', 'left', 'right', 'on', 'off', 'stop', 'go')
SILENCE, UNKNOWN = '_silence_', '_unknown_'
NSYNTH_FOLDERS = {'nsynth-train': 'train', 'nsynth-valid': 'val', 'nsynth-test': 'test'}
NSYNTH_LABELS = ('instrument_family', 'pitch')
NSYNTH_URL = 'http://download.magenta.tensorflow.org/datasets/nsynth/{}.jsonwav.tar.gz'
ESC50_URL = 'https://github.com/karoldvl/ESC-50/archive/master.zip'
FSDD_URL = 'https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/heads/master.zip'
ESC_FOLDS = (1, 2, 3, 4, 5)
FSDD_NAME = re.compile(r'^(\d)_([^_]+)_(\d+)\.wav$')
# options of some datasets only, passed to load() by name (options.dataset_options)
EXTRA_OPTIONS = ('nsynth_label', 'test_fold', 'labelled_windows', 'labelled_hop', 'skip_silent',
                 'small_classes')


@dataclass
class Listing:
    """What a dataset holds before decoding: parallel lists of files, class names and splits.
    `offsets` (optional, parallel too) are start times in seconds into each file, for clips
    cut from longer recordings; None means every clip starts at the file's beginning."""
    paths: list
    class_names: list
    splits: list
    classes: list
    clip_seconds: float
    offsets: list = None
    root: str = ''                  # the folder of class folders, where there is one
    split_by: str = ''              # how the split was made, in words
    others: list = field(default_factory=list)  # files in class folders that are not audio
    loose: list = field(default_factory=list)   # audio files in the root, in no class folder


@dataclass
class AudioData:
    """Decoded clips: waves (N, samples) int16, labels, split -> indices. Unlabelled pools
    (unlabelled.attach) add their windows after the dataset's own clips: `pool` holds their
    int16 arrays, `unlabelled` their indices, and their labels are -1."""
    name: str
    classes: list
    sample_rate: int
    clip_samples: int
    waves: np.ndarray
    labels: np.ndarray
    splits: dict
    paths: list
    skipped: list
    offsets: list = None          # start (seconds) of each clip in its file, when not all 0
    windowed: bool = False        # clips are windows of longer files (--labelled_windows)
    report: str = ''              # datacheck's report, for data_report.txt in the run directory
    pool: list = field(default_factory=list)
    unlabelled: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def batch(self, indices, device='cpu'):
        """Float waveforms in [-1, 1) and labels for the given clip indices, in sorted order
        (returned as `order`: memmap reads fastest in file order)."""
        order = np.sort(np.asarray(indices, dtype=np.int64))
        if len(order) and (order[0] < 0 or order[-1] >= len(self.labels)):
            raise IndexError(f'clip indices must be in [0, {len(self.labels)})')
        device = torch.device(device)
        waves = audio.to_float([self.waves, *self.pool], order, device)
        labels = torch.from_numpy(self.labels[order])
        if device.type == 'cuda':
            return waves, labels.pin_memory().to(device, non_blocking=True), order
        return waves.to(device), labels.to(device), order


# ---------------------------------------------------------------- listings

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
    files = {f.name: audio_files(f) for f in folders}
    files = {name: found for name, found in files.items() if found}
    others = [str(p) for f in folders for p in audio.other_files(f)]
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
    split_by = ('validation_list.txt and testing_list.txt (by file)' if use_lists else
                f'each class\'s files shuffled (seed {seed}: --label_seed) and split 80/10/10 by '
                f'file (one each in val and test from 3 files, none below)')
    return Listing(paths, names, splits, sorted(files), 1.0, root=str(root), split_by=split_by,
                   others=others)


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


def silence_split(cut, cuts):
    """The split of 1-s cut number `cut` of a noise file with `cuts` cuts: contiguous blocks,
    the first 80 % train, the next 10 % val, the last 10 % test (so neighbouring, correlated
    cuts straddle a split only at two block edges per file)."""
    tenth = 10 * cut // cuts
    return 'train' if tenth < 8 else 'val' if tenth == 8 else 'test'


def list_speechcommands12(data_root, download=False):
    """The 12-class benchmark: the ten keywords, _unknown_ (every other word, official lists
    as for the keywords) and _silence_ (every whole second of each _background_noise_ wav,
    split by silence_split)."""
    root = _speechcommands_root(data_root, download)
    words = list_class_folders(root)
    names = [name if name in SC12_KEYWORDS else UNKNOWN for name in words.class_names]
    offsets = [0.0] * len(words.paths)
    noise_files = sorted((root / '_background_noise_').glob('*.wav'))
    if not noise_files:
        raise UserError(f'no {root}/_background_noise_/*.wav: the 12-class Speech Commands set '
                        f'cuts its {SILENCE} clips from those recordings')
    paths, splits = list(words.paths), list(words.splits)
    import soundfile
    for noise in noise_files:
        try:
            info = soundfile.info(str(noise))
            cuts = int(info.frames // info.samplerate)
        except Exception:           # listed once, so that the cache build names the bad file
            cuts = 0
        for cut in range(max(cuts, 1)):
            paths.append(str(noise))
            offsets.append(float(cut))
            splits.append(silence_split(cut, max(cuts, 1)))
            names.append(SILENCE)
    present = set(names)
    classes = [c for c in (SILENCE, UNKNOWN, *SC12_KEYWORDS) if c in present]
    return Listing(paths, names, splits, classes, 1.0, offsets)


def list_synth(cache_dir):
    import synth_speech
    return list_class_folders(synth_speech.ensure(Path(cache_dir).expanduser()))


def list_folder(data_root, seed=0):
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise UserError(f'--data_root={data_root} is not a folder: the folder dataset wants '
                        f'one sub-folder of audio files per class')
    found = list_class_folders(root, seed=seed)
    found.loose = [str(p) for p in sorted(root.iterdir())
                   if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()]
    return found


# NSynth

def _nsynth_root(data_root, download):
    root = Path(data_root).expanduser()
    candidates = [root, root / 'nsynth']
    for candidate in candidates:
        if all((candidate / f / 'examples.json').exists() for f in NSYNTH_FOLDERS):
            return candidate
    missing = [f for f in NSYNTH_FOLDERS if not (root / f / 'examples.json').exists()]
    if download:
        for folder in missing:
            fetch(NSYNTH_URL.format(folder), root, f'NSynth {folder}',
                  size='about 22 GB' if folder == 'nsynth-train' else 'under 1 GB')
        return root
    raise UserError(
        f'NSynth not found: looked for {", ".join(f + "/examples.json" for f in NSYNTH_FOLDERS)} '
        f'in {" and ".join(str(c) for c in candidates)} ({", ".join(missing)} missing in {root}). '
        f'Run with --download=True to fetch the official archives (about 23 GB, 37 GB once '
        f'cached) into --data_root, or point --data_root at the folder holding the three '
        f'extracted nsynth-* folders.')


def list_nsynth(data_root, download=False, label='instrument_family'):
    """NSynth's official splits (the folders), labelled by instrument_family (class names from
    instrument_family_str, ordered by family number) or pitch (the MIDI pitches present,
    ordered numerically). Reads examples.json only, not the 300k wav headers."""
    if label not in NSYNTH_LABELS:
        raise UserError(f'unknown --nsynth_label={label}; valid: {", ".join(NSYNTH_LABELS)}')
    root = _nsynth_root(data_root, download)
    paths, names, splits, class_order = [], [], [], {}
    for folder, split in NSYNTH_FOLDERS.items():
        index_file = root / folder / 'examples.json'
        try:
            examples = json.loads(index_file.read_text())
        except (OSError, ValueError) as error:
            raise UserError(f'{index_file}: cannot read ({error}); download it again') from None
        for note in sorted(examples):
            entry = examples[note]
            try:
                if label == 'pitch':
                    number = int(entry['pitch'])
                    name = str(number)
                else:
                    number = int(entry['instrument_family'])
                    name = entry['instrument_family_str']
            except (KeyError, TypeError, ValueError):
                raise UserError(f'{index_file}: entry {note!r} lacks a usable {label}') from None
            if class_order.setdefault(name, number) != number:
                raise UserError(f'{index_file}: {name!r} has two family numbers')
            paths.append(str(root / folder / 'audio' / f'{note}.wav'))
            names.append(name)
            splits.append(split)
    classes = sorted(class_order, key=class_order.get)
    return Listing(paths, names, splits, classes, 4.0, root=str(root),
                   split_by='the nsynth-train, -valid and -test folders')


# ESC-50 and ESC-10

def esc_split(fold, test_fold):
    """test for the fold `test_fold`, val for the fold before it (fold 5 when test_fold is
    1), train for the other three."""
    validation_fold = ESC_FOLDS[(ESC_FOLDS.index(test_fold) - 1) % len(ESC_FOLDS)]
    return 'test' if fold == test_fold else 'val' if fold == validation_fold else 'train'


def _esc50_root(root):
    for candidate in (root, root / 'ESC-50-master', root / 'ESC-50'):
        if (candidate / 'meta' / 'esc50.csv').exists():
            return candidate
    return None


ESC10_FOLDER = re.compile(r'^\d{3} - (.+)$')


def _esc10_root(root):
    for candidate in (root, root / 'ESC-10-master', root / 'ESC-10'):
        if candidate.is_dir() and any(p.is_dir() and ESC10_FOLDER.match(p.name)
                                      for p in candidate.iterdir()):
            return candidate
    return None


def _esc50_rows(root, esc10_only):
    table = root / 'meta' / 'esc50.csv'
    with open(table, newline='') as source:
        rows = list(csv.DictReader(source))
    needed = {'filename', 'fold', 'target', 'category', 'esc10'}
    if not rows or not needed <= set(rows[0]):
        raise UserError(f'{table}: expected the columns {", ".join(sorted(needed))}')
    if esc10_only:
        rows = [r for r in rows if r['esc10'].strip().lower() == 'true']
    return table, rows


def list_esc(data_root, download=False, test_fold=5, esc10=False):
    """ESC-50 (or its ESC-10 subset) by folds; see esc_split."""
    if test_fold not in ESC_FOLDS:
        raise UserError(f'--test_fold must be one of {", ".join(map(str, ESC_FOLDS))}, got {test_fold}')
    name = 'ESC-10' if esc10 else 'ESC-50'
    root = Path(data_root).expanduser()
    esc50_root = _esc50_root(root)
    if esc50_root is None and esc10 and _esc10_root(root) is not None:
        return _list_esc10_standalone(_esc10_root(root), test_fold)
    if esc50_root is None and download:
        fetch(ESC50_URL, root, 'ESC-50', size='about 600 MB')
        esc50_root = _esc50_root(root)
    if esc50_root is None:
        looked = (f'{root}, {root}/ESC-50-master and {root}/ESC-50' +
                  (f'; the stand-alone ESC-10 layout ("NNN - Name" class folders) in {root}, '
                   f'{root}/ESC-10-master and {root}/ESC-10' if esc10 else ''))
        raise UserError(f'{name} not found: looked for meta/esc50.csv in {looked}. Run with '
                        f'--download=True to fetch ESC-50 ({ESC50_URL}) into --data_root, or '
                        f'point --data_root at the extracted ESC-50-master folder.')
    table, rows = _esc50_rows(esc50_root, esc10)
    paths, names, splits, class_order = [], [], [], {}
    for row in sorted(rows, key=lambda r: r['filename']):
        try:
            fold, target = int(row['fold']), int(row['target'])
        except ValueError:
            raise UserError(f'{table}: row {row["filename"]} has a bad fold or target') from None
        if fold not in ESC_FOLDS:
            raise UserError(f'{table}: row {row["filename"]} has fold {fold}, not 1-5')
        if class_order.setdefault(row['category'], target) != target:
            raise UserError(f'{table}: category {row["category"]} has two targets')
        paths.append(str(esc50_root / 'audio' / row['filename']))
        names.append(row['category'])
        splits.append(esc_split(fold, test_fold))
    if not paths:
        raise UserError(f'{table} lists no {name} clips')
    return Listing(paths, names, splits, sorted(class_order, key=class_order.get), 5.0)


def _list_esc10_standalone(root, test_fold):
    """The stand-alone ESC-10 release: 'NNN - Class name'/{fold}-{freesound id}-{take}.ogg."""
    paths, names, splits, classes = [], [], [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and ESC10_FOLDER.match(p.name)):
        class_name = ESC10_FOLDER.match(folder.name).group(1)
        found = sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS)
        for path in found:
            fold = int(path.name[0]) if path.name[0].isdigit() else None
            if fold not in ESC_FOLDS:
                raise UserError(f'{path}: an ESC-10 file name starts with its fold (1-5)')
            paths.append(str(path))
            names.append(class_name)
            splits.append(esc_split(fold, test_fold))
        if found:
            classes.append(class_name)
    return Listing(paths, names, splits, classes, 5.0)


def esc_fold(path):
    """The fold of an ESC-50 or ESC-10 clip: the first field of its file name."""
    return int(Path(path).name.split('-')[0])


# Free Spoken Digit Dataset

def fsdd_split(take):
    return 'test' if take <= 4 else 'val' if take <= 9 else 'train'


def _fsdd_root(data_root, download):
    root = Path(data_root).expanduser()
    candidates = [root / 'recordings', root, root / 'free-spoken-digit-dataset-master' / 'recordings']
    for candidate in candidates:
        if candidate.is_dir() and any(FSDD_NAME.match(p.name) for p in candidate.iterdir()):
            return candidate
    if download:
        fetch(FSDD_URL, root, 'the Free Spoken Digit Dataset', size='about 20 MB',
              keep={'free-spoken-digit-dataset-master/recordings': 'recordings'})
        return root / 'recordings'
    raise UserError(
        f'the Free Spoken Digit Dataset was not found: looked for {{digit}}_{{speaker}}_{{take}}.wav '
        f'in {", ".join(str(c) for c in candidates)}. Run with --download=True to fetch it into '
        f'--data_root/recordings, or point --data_root at its recordings folder.')


def list_fsdd(data_root, download=False):
    """FSDD's documented split by take: 0-4 test, 5-9 validation (ours), 10-49 train."""
    root = _fsdd_root(data_root, download)
    paths, names, splits = [], [], []
    for path in sorted(root.iterdir()):
        if path.suffix.lower() != '.wav':
            continue
        match = FSDD_NAME.match(path.name)
        if not match:
            raise UserError(f'{path}: not named {{digit}}_{{speaker}}_{{take}}.wav; move it out '
                            f'of {root}')
        paths.append(str(path))
        names.append(match.group(1))
        splits.append(fsdd_split(int(match.group(3))))
    return Listing(paths, names, splits, sorted(set(names)), 1.0, root=str(root),
                   split_by='by take: 0-4 test, 5-9 val, the rest train')


def listing(name, data_root, cache_dir, download=False, seed=0,
            nsynth_label='instrument_family', test_fold=5):
    if name == 'synth':
        return list_synth(cache_dir)
    if name == 'speechcommands':
        return list_speechcommands(data_root, download)
    if name == 'sc09':
        return list_speechcommands(data_root, download, words=SC09_WORDS)
    if name == 'speechcommands12':
        return list_speechcommands12(data_root, download)
    if name == 'nsynth':
        return list_nsynth(data_root, download, nsynth_label)
    if name in ('esc50', 'esc10'):
        return list_esc(data_root, download, test_fold, esc10=name == 'esc10')
    if name == 'fsdd':
        return list_fsdd(data_root, download)
    if name == 'folder':
        return list_folder(data_root, seed)
    raise UserError(f'unknown --dataset={name}; valid: {", ".join(DATASETS)}')


DATASETS = ('synth', 'speechcommands', 'sc09', 'speechcommands12', 'nsynth', 'esc50', 'esc10',
            'fsdd', 'folder')


# ---------------------------------------------------------------- downloads

def fetch(url, destination, what, size='', keep=None):
    """Download the archive at `url` (streamed to a temporary file inside `destination`), then
    extract it there. `keep` maps paths inside the archive to names under `destination`
    (default: every top-level entry keeps its name). Entries appear only once extracted
    completely; an interrupted download leaves nothing behind."""
    from tqdm import tqdm
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    print(f'downloading {what}{f" ({size})" if size else ""} from {url} into {destination} ...')
    with tempfile.TemporaryDirectory(prefix='.download-', dir=destination) as temporary:
        archive = Path(temporary) / url.rsplit('/', 1)[-1]
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(archive, 'wb') as out:
                total = int(response.headers.get('Content-Length') or 0) or None
                with tqdm(total=total, unit='B', unit_scale=True, unit_divisor=1024,
                          desc=archive.name, mininterval=1.0) as progress:
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                        progress.update(len(chunk))
        except (OSError, urllib.error.URLError) as error:
            raise UserError(f'could not download {url} ({error}). Fetch it another way, extract '
                            f'it into {destination} and run again without --download') from None
        print(f'extracting {archive.name} ...')
        unpacked = Path(temporary) / 'unpacked'
        try:
            if archive.name.endswith('.zip'):
                with zipfile.ZipFile(archive) as opened:
                    opened.extractall(unpacked)
            else:
                with tarfile.open(archive) as opened:
                    safe = {'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}
                    opened.extractall(unpacked, **safe)
        except (OSError, zipfile.BadZipFile, tarfile.TarError) as error:
            raise UserError(f'{url}: the downloaded archive does not extract ({error})') from None
        archive.unlink()
        moves = keep or {p.name: p.name for p in unpacked.iterdir()}
        for inside, name in moves.items():
            source, target = unpacked / inside, destination / name
            if not source.exists():
                raise UserError(f'{url}: the archive holds no {inside}')
            if target.exists():
                raise UserError(f'{target} is in the way of the download: remove it and run again')
            os.replace(source, target)
    print(f'{what} is in {destination}')


def labelled_windows_on(name, setting):
    """Whether --labelled_windows (auto | true | false) cuts the labelled files into
    windows: auto means for --dataset=folder only."""
    if str(setting).lower() == 'auto':
        return name == 'folder'
    return parse_value('labelled_windows', str(setting), bool)


def hop_samples(hop_seconds, sample_rate, clip_samples):
    """--labelled_hop in samples; 0 means the clip length."""
    return int(round(hop_seconds * sample_rate)) if hop_seconds else clip_samples


def cut_already(name):
    return (f'--labelled_windows=True: {name} already cuts its clips out of longer files; '
            f'leave --labelled_windows at auto or false')


def load(name, data_root='data', cache_dir='~/.cache/clar', sample_rate=16000,
         clip_seconds=0.0, download=False, skip_bad_files=False, seed=0,
         nsynth_label='instrument_family', test_fold=5, labelled_windows='auto',
         labelled_hop=0.0, skip_silent=False, small_classes='refuse', strict=True):
    """The dataset `name` as AudioData, decoding into the waveform cache on first use.
    --dataset=folder is checked (datacheck.py); `strict`: say what the checks find and
    refuse what they stop on (a new run), or only apply --skip_silent (evaluate.py, a
    resumed run: the data the run was checked on)."""
    found = listing(name, data_root, cache_dir, download, seed, nsynth_label, test_fold)
    clip_samples = int(round((clip_seconds or found.clip_seconds) * sample_rate))
    checked = name == 'folder'
    if checked:                 # before decoding anything
        datacheck.act(datacheck.listing_problems(found), strict)
    windowed = labelled_windows_on(name, labelled_windows)
    if windowed:
        if found.offsets is not None:
            raise UserError(cut_already(name))
        hop = hop_samples(labelled_hop, sample_rate, clip_samples)
        key = audio.fingerprint(found.paths, [0.0] * len(found.paths), sample_rate, clip_samples,
                                extra=f'labelled windows hop {hop}')
        folder = (Path(cache_dir).expanduser() / 'waveforms' /
                  f'{name}-windows-{sample_rate}-{clip_samples}-{hop}-{key}')
        waves, item_of_row, starts, index = audio.cached_windows(
            folder, found.paths, sample_rate, clip_samples, hop, skip_bad_files,
            what=f'{name} dataset')
        paths = [found.paths[i] for i in item_of_row]
        offsets = (starts / sample_rate).tolist()
    else:
        offsets = found.offsets if found.offsets is not None else [0.0] * len(found.paths)
        key = audio.fingerprint(found.paths, offsets, sample_rate, clip_samples)
        folder = Path(cache_dir).expanduser() / 'waveforms' / f'{name}-{sample_rate}-{clip_samples}-{key}'
        waves, index = audio.cached(folder, found.paths, offsets, sample_rate, clip_samples,
                                    skip_bad_files, what=f'{name} dataset')
        item_of_row = np.asarray(index['kept'], dtype=np.int64)
        paths = index['paths']
        offsets = index['offsets'] if found.offsets is not None else None
    used, report = np.ones(len(item_of_row), dtype=bool), ''
    if checked:
        facts = datacheck.cache_facts(waves, item_of_row, found.paths, index['skipped'])
        result = datacheck.survey(found, facts, skip_silent, small_classes, skip_bad_files)
        problems = datacheck.listing_problems(found) + result.problems
        datacheck.act(result.problems, strict)
        used = result.keep[item_of_row]
        report = datacheck.report(result, problems, datacheck.title(
            name, found, facts, sample_rate, clip_samples, hop if windowed else None))
    class_to_label = {c: i for i, c in enumerate(found.classes)}
    labels = np.array([class_to_label[found.class_names[i]] for i in item_of_row], dtype=np.int64)
    split_of = np.array([found.splits[i] for i in item_of_row])
    splits = {s: np.flatnonzero((split_of == s) & used) for s in SPLITS}
    return AudioData(name, list(found.classes), sample_rate, clip_samples, waves, labels,
                     splits, paths, index['skipped'], offsets, windowed=windowed, report=report)


def labelled_subset(labels, train_indices, fraction, seed=0, files=None):
    """A class-balanced subset of the training clips: from every class, `fraction` of its
    clips (rounded, at least one), drawn by `seed`. Independent of the training seed, so
    the three scripts see the same labelled clips. With `files` (every clip's file, where
    clips are windows of longer recordings), whole files are drawn: all the windows of a
    chosen file are labelled, and none of another's."""
    if not 0 < fraction <= 1:
        raise UserError(f'--label_fraction must be in (0, 1], got {fraction}')
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels[train_indices]):
        members = np.sort(train_indices[labels[train_indices] == label])
        if files is None:
            count = len(members) if fraction == 1 else max(1, int(round(fraction * len(members))))
            chosen.append(rng.permutation(members)[:count])
            continue
        file_of = np.asarray(files, dtype=object)[members]
        names = np.unique(file_of)
        count = len(names) if fraction == 1 else max(1, int(round(fraction * len(names))))
        chosen.append(members[np.isin(file_of, rng.permutation(names)[:count])])
    return np.sort(np.concatenate(chosen))


def labelled_clips(data, fraction, seed=0):
    """The labelled subset of `data`'s training clips (labelled_subset), drawn by file
    where its clips are windows of longer recordings."""
    return labelled_subset(data.labels, data.splits['train'], fraction, seed,
                           files=data.paths if data.windowed else None)


# ---------------------------------------------------------------- cross-validation

def fold_summary(run_dirs, metric='test_accuracy'):
    r"""Mean and standard deviation of `metric` over the runs of a k-fold cross-validation
    (each run_dir with results.json, and config.json naming its test_fold):
    {'metric', 'mean', 'std' (sample, n-1; 0 for one run), 'folds' (n), 'per_fold' {fold: value}}.

        for k in 1 2 3 4 5; do python train.py --dataset=esc10 --data_root=data/ESC-50-master \
            --test_fold=$k --run_name=esc10-clar-fold$k || break; done
        python -c "import dataset, json; print(json.dumps(dataset.fold_summary(
            [f'runs/esc10-clar-fold{k}' for k in range(1, 6)]), indent=2))"
    """
    per_fold = {}
    for run_dir in map(Path, run_dirs):
        results_file = run_dir / 'results.json'
        if not results_file.exists():
            raise UserError(f'{run_dir} has no results.json: did that run finish?')
        results = json.loads(results_file.read_text())
        if metric not in results:
            raise UserError(f'{results_file} has no {metric}')
        config_file = run_dir / 'config.json'
        config = json.loads(config_file.read_text()) if config_file.exists() else {}
        fold = config.get('test_fold', results.get('test_fold'))
        if fold is None:
            raise UserError(f'{run_dir}: no test_fold in config.json or results.json')
        if fold in per_fold:
            raise UserError(f'two runs tested fold {fold} (one is {run_dir})')
        if config.get('dataset') not in (None, 'esc50', 'esc10'):
            print(f'note: {run_dir} is a {config["dataset"]} run, whose splits ignore test_fold')
        per_fold[fold] = float(results[metric])
    if not per_fold:
        raise UserError('fold_summary needs at least one run directory')
    values = np.array(list(per_fold.values()))
    return {'metric': metric, 'mean': float(values.mean()),
            'std': float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            'folds': len(values), 'per_fold': dict(sorted(per_fold.items()))}
