"""Audio in: decoding files into fixed-length 16 kHz mono clips, and the on-disk waveform
cache that every epoch reads instead of decoding again.

    clip = read_clip('a.ogg', 16000, 16000)            # float32, resampled, mono, fitted
    waves, index = cached(folder, paths, offsets, 16000, 16000)   # int16 memmap (N, samples)
    x = to_float(waves, order, device)                 # a batch as float32 in [-1, 1)

The cache holds audio only: it is keyed by the files' names, offsets, sizes and modification
times (and the rate and length), so it is rebuilt when they change, and datasets that differ
only in labels or splits share one. It is built once (atomically, streaming, by a few
threads) and memory-mapped afterwards, so memory use does not grow with the dataset.
"""
import contextlib
import functools
import hashlib
import json
import math
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torchaudio

try:
    import fcntl                    # one process builds a cache while others wait (POSIX)
except ImportError:
    fcntl = None

from config import UserError

AUDIO_EXTENSIONS = ('.wav', '.flac', '.ogg', '.mp3')   # what libsndfile (1.1 on) decodes
CACHE_VERSION = 3                       # 3: clips beyond +-1 scaled to fit, not clipped
_SCALE = np.float32(1 / 32768)          # int16 -> [-1, 1); exact (a power of two)
INT16_PEAK = np.float32(32767 / 32768)  # the largest sample int16 holds, as a float


def audio_files(folder):
    """Every .wav/.flac/.ogg/.mp3 file under `folder`, recursively, sorted."""
    return sorted(p for p in Path(folder).rglob('*') if p.suffix.lower() in AUDIO_EXTENSIONS
                  and p.is_file())


def other_files(folder):
    """The files under `folder` (recursively, sorted) that audio_files leaves out, but for
    hidden ones (.DS_Store and the like)."""
    return sorted(p for p in Path(folder).rglob('*') if p.suffix.lower() not in AUDIO_EXTENSIONS
                  and not p.name.startswith('.') and p.is_file())


def to_float(arrays, order, device='cpu'):
    """Rows `order` (sorted: memmap reads fastest in file order) of int16 arrays as float32
    waveforms in [-1, 1) on `device`. `arrays`: one (N, samples) array, or several whose
    rows count on from each other (a dataset and its unlabelled pools)."""
    arrays = [np.asarray(a) for a in (arrays if isinstance(arrays, (list, tuple)) else [arrays])]
    ends = np.cumsum([len(a) for a in arrays])
    which = np.searchsorted(ends, order, side='right')
    local = order - np.concatenate([[0], ends[:-1]])[which]
    samples = arrays[0].shape[1]
    device = torch.device(device)
    if device.type == 'cuda':
        # gather the int16 rows straight into pinned memory, send half the bytes of
        # float32, convert on the GPU
        staged = torch.empty((len(order), samples), dtype=torch.int16, pin_memory=True)
        for k, rows in enumerate(arrays):
            mine = which == k
            if mine.any():
                staged.numpy()[mine] = np.take(rows, local[mine], axis=0, mode='clip')
        return staged.to(device, non_blocking=True).float().mul_(1 / 32768)
    # one pass per row from the memmap to float32, while the row is in cache (a gather
    # then a conversion would pass over the batch three times)
    # (numpy's allocator asks for huge pages: fewer page faults on large batches)
    out = np.empty((len(order), samples), dtype=np.float32)
    for row, (k, i) in enumerate(zip(which, local)):
        np.multiply(arrays[k][i], _SCALE, out=out[row])
    return torch.from_numpy(out)


# ---------------------------------------------------------------- decoding

def read_audio(path, sample_rate, offset=0.0, samples=None):
    """Decode float32 mono samples at `sample_rate` from `path`, starting `offset` seconds
    into the file: to its end, or at most `samples` of them. Downmixed by averaging the
    channels, resampled with torchaudio. Raises ValueError with the reason when it cannot."""
    import soundfile                # here: training from a built cache needs no decoder
    try:
        with soundfile.SoundFile(path) as audio:
            rate, length = audio.samplerate, audio.frames
            start = int(round(offset * rate))
            past_end = start > 0 and start >= length
            if start and not past_end:
                audio.seek(start)
            # only what is asked for, plus a margin wider than the resampling filter
            # (identical samples to resampling the whole file)
            frames = (-1 if samples is None else
                      math.ceil(samples * rate / sample_rate) + 64 * math.ceil(rate / sample_rate))
            decoded = None if past_end else audio.read(frames, dtype='float32', always_2d=True)
    except Exception as error:          # soundfile raises several types for broken files
        raise ValueError(f'unreadable audio ({error})') from None
    if decoded is None:
        raise ValueError(f'offset {offset:g} s is past the end ({length / rate:.3f} s)')
    if decoded.size == 0:
        raise ValueError('no samples')
    if not np.isfinite(decoded).all():
        raise ValueError('NaN or infinite samples')
    mono = torch.from_numpy(decoded.mean(axis=1) if decoded.shape[1] > 1 else decoded[:, 0])
    if rate != sample_rate:
        mono = resampler(rate, sample_rate)(mono)
    return (mono if samples is None else mono[:samples]).numpy()


def read_clip(path, sample_rate, clip_samples, offset=0.0):
    """`clip_samples` float32 mono samples at `sample_rate` from `path`, starting `offset`
    seconds into the file, zero-padded on the right when the file ends sooner."""
    return fit_length(torch.from_numpy(read_audio(path, sample_rate, offset, clip_samples)),
                      clip_samples).numpy()


def cache_row(path, sample_rate, clip_samples, offset=0.0):
    """The clip of `path` from `offset` seconds as the waveform cache stores it: int16
    (clip_samples,), and whether it was scaled down to fit 16 bits. ValueError when the
    file cannot be read."""
    clip, scaled = scale_to_fit(read_clip(path, sample_rate, clip_samples, offset))
    return to_int16(clip), bool(scaled)


def windows(wave, clip_samples, hop_samples):
    """Consecutive clip-length windows of a (T,) waveform, `hop_samples` apart: a view
    (n, clip_samples), no copy, and the start of each in samples. Where the whole windows
    leave the end of the wave uncovered, one more, zero-padded window is kept if it holds
    at least half a clip; a wave shorter than a clip gives one padded window."""
    wave = torch.as_tensor(wave)
    if hop_samples < 1:
        raise ValueError(f'hop must be at least one sample, got {hop_samples}')
    full = 1 + (len(wave) - clip_samples) // hop_samples if len(wave) >= clip_samples else 0
    covered = (full - 1) * hop_samples + clip_samples if full else 0
    count = full
    if full == 0 or (len(wave) > covered and len(wave) - full * hop_samples >= clip_samples / 2):
        count += 1                      # the last, partial window
    padded = torch.zeros(max(len(wave), (count - 1) * hop_samples + clip_samples),
                         dtype=torch.float32, device=wave.device)
    padded[:len(wave)] = wave
    return (padded.unfold(0, clip_samples, hop_samples)[:count],
            torch.arange(count, dtype=torch.int64) * hop_samples)


def quantize(waves):
    """Float samples rounded to 16 bits, as the waveform cache holds them (what the model
    saw in training): clips beyond +-1 scaled to fit, then rounded. A tensor stays on its
    device (the same values as scale_to_fit and to_int16: rounded half to even)."""
    if isinstance(waves, torch.Tensor):
        waves = waves.float()
        if waves.numel():
            peak = waves.abs().amax(dim=-1, keepdim=True)
            waves = torch.where(peak > 1, waves * (INT16_PEAK / peak.clamp(min=1.0)), waves)
        return torch.round(waves.clamp(-1.0, 32767 / 32768) * 32768) * (1 / 32768)
    return torch.from_numpy(to_int16(scale_to_fit(waves)[0])).float() * (1 / 32768)


def file_windows(path, sample_rate, clip_samples, hop_samples):
    """A recording of any length prepared as training prepares its clips (decoded, mono,
    resampled, rounded to 16 bits) and cut into clip-length windows `hop_samples` apart:
    (view (n, clip_samples), starts in samples); see windows(). Its first window is the
    clip training reads from the file. Raises ValueError when the file cannot be read."""
    return windows(prepared(path, sample_rate)[0], clip_samples, hop_samples)


def prepared(path, sample_rate):
    """A whole recording decoded (mono, resampled) and rounded to 16 bits as the cache holds
    it (quantize), and whether it went beyond +-1 and was scaled down to fit."""
    wave = torch.from_numpy(read_audio(str(path), sample_rate))
    return quantize(wave), bool(len(wave) and wave.abs().max() > 1)


def fit_length(wave, clip_samples):
    """Crop or zero-pad a (T,) waveform on the right to clip_samples, float32."""
    clip = torch.zeros(clip_samples, dtype=torch.float32)
    clip[:min(clip_samples, len(wave))] = wave[:clip_samples]
    return clip


def scale_to_fit(clips):
    """Clips (along the last axis) whose samples go beyond +-1, as float audio's may, scaled
    down so that their peak just fits int16 (rather than clipped); and which were scaled
    (one bool per clip)."""
    clips = np.asarray(clips, dtype=np.float32)
    peak = np.abs(clips).max(axis=-1, keepdims=True, initial=0.0)
    over = peak > 1.0
    return np.where(over, clips * (INT16_PEAK / np.maximum(peak, 1.0)), clips), over[..., 0]


def to_int16(clips):
    """Float samples in [-1, 1) to the int16 values the waveform cache stores."""
    return np.round(np.clip(clips, -1.0, 32767 / 32768) * 32768).astype(np.int16)


@functools.lru_cache(maxsize=16)
def resampler(rate, sample_rate):
    """torchaudio's resampling (the same samples as torchaudio.functional.resample), with
    its filter kernel computed once per pair of rates rather than per clip."""
    return torchaudio.transforms.Resample(rate, sample_rate)


def fingerprint(paths, offsets, sample_rate, clip_samples, extra=''):
    """Identifies the audio of a cache: rate, length and each clip's file (name, size, time)
    and offset (and `extra`, how the clips were cut). Classes and splits are not in it: they
    come from the listing at load time."""
    cut = f'|{extra}' if extra else ''         # (dataset caches made before `extra` stay valid)
    digest = hashlib.sha1(f'{CACHE_VERSION}|{sample_rate}|{clip_samples}{cut}\n'.encode())
    for path, offset in zip(paths, offsets):
        try:
            stat = os.stat(path)
            size, modified = stat.st_size, stat.st_mtime_ns
        except OSError:                 # a missing file: the build names it
            size = modified = -1
        digest.update(f'{path}|{offset!r}|{size}|{modified}\n'.encode())
    return digest.hexdigest()[:16]


def decode_workers():
    """Threads that decode while building a cache (soundfile and torch release the GIL)."""
    return max(1, min(8, (len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity')
                          else os.cpu_count() or 1)))


@contextlib.contextmanager
def new_cache(folder, rows, clip_samples, what):
    """Build a waveform cache atomically: yields a temporary folder beside `folder` and an
    int16 memmap (rows, clip_samples) in it for the builder to fill (it adds its own
    index.json). The folder takes the place of `folder` only when the block ends without
    error, and is removed otherwise. Torch runs on one thread meanwhile: the builders decode
    in parallel over files instead, much faster per clip."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    needed, free = rows * clip_samples * 2, shutil.disk_usage(folder.parent).free
    if needed > free:
        raise UserError(f'the waveform cache of {rows} {what} needs {needed / 2**30:.1f} GiB but '
                        f'{folder.parent} has {free / 2**30:.1f} GiB free; point --cache_dir '
                        f'elsewhere')
    partial = Path(tempfile.mkdtemp(prefix=folder.name + '.partial-', dir=folder.parent))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        waves = np.lib.format.open_memmap(partial / 'waves.npy', mode='w+', dtype=np.int16,
                                          shape=(max(rows, 1), clip_samples))
        yield partial, waves
        waves.flush()
        os.replace(partial, folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        torch.set_num_threads(threads)


def build_cache(folder, paths, offsets, sample_rate, clip_samples, skip_bad_files=False,
                workers=None):
    """Decode every clip into folder/waves.npy and folder/index.json, atomically: the
    folder appears only when complete. Clips are decoded by a few threads, written in order
    into the memory-mapped array (streaming: memory use does not grow with the dataset)."""
    from tqdm import tqdm

    def decode(i):
        try:
            return cache_row(paths[i], sample_rate, clip_samples, offsets[i]), None
        except ValueError as error:
            return None, str(error)

    def where(i):
        return paths[i] + (f' at {offsets[i]:g} s' if offsets[i] else '')

    workers = workers or decode_workers()
    with new_cache(folder, len(paths), clip_samples, 'clips') as (partial, waves), \
            ThreadPoolExecutor(workers) as pool, \
            tqdm(total=len(paths), desc=f'caching {folder.name}', unit='clip',
                 mininterval=1.0) as progress:
        kept, skipped, scaled = [], [], []
        chunk = 16 * workers
        for first in range(0, len(paths), chunk):
            numbers = range(first, min(first + chunk, len(paths)))
            for i, (clip, error) in zip(numbers, pool.map(decode, numbers)):
                progress.update()
                if error is not None:
                    if not skip_bad_files:
                        raise UserError(f'{where(i)}: {error}. Remove or fix the file, or run '
                                        f'with --skip_bad_files=True to skip such files.')
                    skipped.append(f'{where(i)}: {error}')
                    continue
                row, over = clip
                if over:
                    scaled.append(where(i))
                waves[len(kept)] = row
                kept.append(i)
        (partial / 'index.json').write_text(json.dumps({
            'kept': kept, 'paths': [paths[i] for i in kept],
            'offsets': [offsets[i] for i in kept], 'count': len(kept), 'skipped': skipped,
            'scaled': scaled, 'sample_rate': sample_rate, 'clip_samples': clip_samples}))


def window_rows(path, sample_rate, clip_samples, hop_samples):
    """The windows of one file as the waveform cache stores them: int16 (n, clip_samples),
    the start of each in samples (file_windows: the preparation predict.py and embed.py
    use), and whether the file was scaled to fit. ValueError when it cannot be read."""
    wave, scaled = prepared(path, sample_rate)
    views, starts = windows(wave, clip_samples, hop_samples)
    return to_int16(views.numpy()), starts.numpy(), scaled


def quiet(rows, silence_db):
    """Which int16 windows have an RMS below silence_db dB full scale (0: none)."""
    if not silence_db:
        return np.zeros(len(rows), dtype=bool)
    rms = np.sqrt(np.mean(np.square(rows.astype(np.float32) / 32768), axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-10)) < silence_db


def build_windows(folder, files, sample_rate, clip_samples, hop, silence_db=0.0,
                  skip_bad_files=False):
    """Decode the windows of every file (window_rows, `hop` samples apart) into
    folder/waves.npy, with starts.npy (each window's start in samples), file.npy (its
    file's number in `files`) and index.json, atomically, a few files at a time in threads.
    Windows quieter than `silence_db` (when not 0) are dropped and counted."""
    import soundfile
    room = 0
    for path in files:              # an upper bound on the windows, from the headers
        try:
            info = soundfile.info(path)
            samples = math.ceil(info.frames * sample_rate / info.samplerate)
        except Exception:           # unreadable: the decode below names it
            samples = 0
        room += 1 + max(0, math.ceil((samples - clip_samples) / hop) + 1)

    def decode(path):
        try:
            return window_rows(path, sample_rate, clip_samples, hop), None
        except ValueError as error:
            return None, str(error)

    workers = decode_workers()
    with new_cache(folder, room, clip_samples, 'windows') as (partial, waves), \
            ThreadPoolExecutor(workers) as pool:
        starts, file_numbers, per_file, skipped, scaled, silent, count = [], [], [], [], [], 0, 0
        # a few files at a time: the decoded windows waiting to be written stay bounded
        results = (result for first in range(0, len(files), workers)
                   for result in pool.map(decode, files[first:first + workers]))
        for number, (decoded, error) in enumerate(results):
            if error is not None:
                if not skip_bad_files:
                    raise UserError(f'{files[number]}: {error}. Remove or fix the file, or '
                                    f'run with --skip_bad_files=True to skip such files.')
                skipped.append(f'{files[number]}: {error}')
                per_file.append(0)
                continue
            rows, row_starts, over = decoded
            if over:
                scaled.append(files[number])
            keep = ~quiet(rows, silence_db)
            silent += int((~keep).sum())
            rows, row_starts = rows[keep], row_starts[keep]
            waves[count:count + len(rows)] = rows
            count += len(rows)
            starts.append(row_starts)
            file_numbers.append(np.full(len(rows), number, dtype=np.int32))
            per_file.append(len(rows))
        np.save(partial / 'starts.npy', np.concatenate(starts or [np.zeros(0, np.int64)]))
        np.save(partial / 'file.npy', np.concatenate(file_numbers or [np.zeros(0, np.int32)]))
        (partial / 'index.json').write_text(json.dumps({
            'files': files, 'windows_per_file': per_file, 'count': count, 'skipped': skipped,
            'scaled': scaled, 'silent': silent, 'sample_rate': sample_rate, 'clip_samples': clip_samples,
            'hop': hop, 'silence_db': silence_db}))


def build_once(folder, build):
    """Run build() unless folder/index.json exists; one process builds while the others
    (several ranks, several runs) wait for it."""
    if (folder / 'index.json').exists():
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f'{folder.name}.lock', 'w') as lock:
        if fcntl:
            fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / 'index.json').exists():
            build()


def cached(folder, paths, offsets, sample_rate, clip_samples, skip_bad_files=False, what='dataset'):
    """The clips (paths[i] from offsets[i] seconds) as an int16 memmap (N, clip_samples) and
    the cache's index (kept, paths, offsets, skipped), decoding into `folder` on first use.
    One process builds a given cache while others (several ranks, several runs) wait."""
    folder = Path(folder)
    build_once(folder, lambda: build_cache(folder, paths, offsets, sample_rate, clip_samples,
                                           skip_bad_files))
    return opened_cache(folder, skip_bad_files, what)


def opened_cache(folder, skip_bad_files, what):
    """A built cache's clips (int16 memmap) and index; refused if it skipped bad files and
    the run did not allow it."""
    index = json.loads((folder / 'index.json').read_text())
    if index['skipped'] and not skip_bad_files:
        raise UserError(f'the cached {what} skipped {len(index["skipped"])} bad files '
                        f'(first: {index["skipped"][0]}); run with --skip_bad_files=True')
    say_skipped_and_scaled(index, folder, 'clips')
    waves = np.load(folder / 'waves.npy', mmap_mode='r')[:index['count']]
    return waves, index


def say_skipped_and_scaled(index, folder, what):
    if index['skipped']:
        print(f'skipped {len(index["skipped"])} bad audio files (listed in {folder}/index.json)')
    if index.get('scaled'):
        print(f'scaled down {len(index["scaled"])} {what} whose samples went beyond +-1 (float '
              f'audio), so that they fit 16 bits instead of being clipped (listed in '
              f'{folder}/index.json)')


def cached_windows(folder, files, sample_rate, clip_samples, hop, skip_bad_files=False,
                   what='dataset'):
    """The windows of every file (build_windows) as an int16 memmap (N, clip_samples), with
    each window's file number and start (samples) and the cache's index; decoded into
    `folder` on first use, as cached() does for clips."""
    folder = Path(folder)
    build_once(folder, lambda: build_windows(folder, files, sample_rate, clip_samples, hop,
                                             0.0, skip_bad_files))
    waves, index = opened_cache(folder, skip_bad_files, what)
    return waves, np.load(folder / 'file.npy'), np.load(folder / 'starts.npy'), index
