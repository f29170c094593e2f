"""How fast clips come out of the waveform cache, against decoding the same files.

    python bench_data.py [--data_root=/work/shared/data/fsdd] [--dataset=fsdd] [--batch_size=256] [--seconds=5]

Prints one JSON line per measurement, then a table. Three ways to get the same clips, each
for about --seconds, single process:
  cache       random batches from the warm int16 memmap via AudioData.batch (what training does)
  read_clip   soundfile + resampling + mono + padding/cropping, as the cache build does per clip
  soundfile   soundfile.read of the whole file alone (the floor of any decode-per-epoch loader)
bench_cache(data, batch_size, seconds) is the first, for other benchmarks to call.
"""
import json
import sys
import time

import numpy as np
import soundfile
import torch

import config
import dataset as datasets

# options (--name=value)
dataset = 'fsdd'              # which dataset (dataset.DATASETS)
data_root = '/work/shared/data/fsdd'  # where it lives
cache_dir = '~/.cache/clar'   # where its waveform cache is (built on first use)
batch_size = 256              # clips per batch read from the cache
seconds = 5.0                 # how long each of the three measurements runs
sample_rate = 16000           # the cache's rate
clip_seconds = 0.0            # clip length; 0 = the dataset's own
device = 'cpu'                # where the cache's batches go (cpu | cuda)
skip_bad_files = False        # skip unreadable files when building the cache
nsynth_label = 'instrument_family'  # as in config.py
test_fold = 5                 # as in config.py
seed = 0                      # the random batch order


def warm(data):
    """Read every page of the cache once, so the measurement sees the page cache."""
    rows = np.asarray(data.waves)
    for start in range(0, len(rows), 4096):
        rows[start:start + 4096, ::2048].copy()      # one sample per 4 KiB page


def bench_cache(data, batch_size=256, seconds=5.0, device='cpu', seed=0, warm_first=True):
    """Clips per second reading random batches of `batch_size` (shuffled epochs, as training
    does) from the waveform cache through data.batch, for about `seconds`."""
    if warm_first:
        warm(data)
    batch_size = min(batch_size, len(data.waves))
    rng = np.random.default_rng(seed)
    device = torch.device(device)
    data.batch(rng.permutation(len(data.waves))[:batch_size], device)      # first-call costs
    clips = batches = 0
    started = time.perf_counter()
    while True:
        permutation = rng.permutation(len(data.waves))
        for first in range(0, len(permutation) - batch_size + 1, batch_size):
            waves, labels, order = data.batch(permutation[first:first + batch_size], device)
            clips += len(order)
            batches += 1
            if time.perf_counter() - started >= seconds and batches >= 3:
                break
        else:
            continue
        break
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - started
    return {'what': 'cache', 'dataset': data.name, 'clips_per_second': clips / elapsed,
            'megabytes_per_second': clips * data.clip_samples * 2 / elapsed / 1e6,
            'clips': clips, 'batches': batches, 'batch_size': batch_size,
            'clip_samples': data.clip_samples, 'seconds': elapsed, 'device': str(device),
            'torch_threads': torch.get_num_threads()}


def bench_decode(data, seconds=5.0, how='read_clip', seed=0):
    """Clips per second decoding the cache's files one by one, in a random order, on one
    core: how = 'read_clip' (as the cache build does) or 'soundfile' (soundfile.read alone)."""
    order = np.random.default_rng(seed).permutation(len(data.paths))
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)        # one decoder per core, as DataLoader workers and the cache build run
    try:
        clips, elapsed = _decode(data, order, seconds, how)
    finally:
        torch.set_num_threads(torch_threads)
    return {'what': how, 'dataset': data.name, 'clips_per_second': clips / elapsed,
            'clips': clips, 'clip_samples': data.clip_samples, 'seconds': elapsed,
            'torch_threads': 1}


def _decode(data, order, seconds, how):
    """Decode clips in `order`, over and over, until `seconds` have passed."""
    offsets = data.offsets or [0.0] * len(data.paths)
    clips = 0
    started = time.perf_counter()
    while True:
        for i in order:
            if how == 'read_clip':
                datasets.read_clip(data.paths[i], data.sample_rate, data.clip_samples, offsets[i])
            elif offsets[i]:                # a cut of a longer file: read that second only
                rate = soundfile.info(data.paths[i]).samplerate
                soundfile.read(data.paths[i], dtype='float32', start=int(offsets[i] * rate),
                               frames=int(data.clip_samples * rate / data.sample_rate))
            else:
                soundfile.read(data.paths[i], dtype='float32')
            clips += 1
            if time.perf_counter() - started >= seconds:
                return clips, time.perf_counter() - started


def main(argv):
    defaults = config.defaults_of({k: v for k, v in globals().items() if k in OPTIONS})
    cfg = config.parse_args(defaults, argv, sources=[__file__], program='bench_data.py')
    started = time.perf_counter()
    data = datasets.load(cfg['dataset'], cfg['data_root'], cfg['cache_dir'], cfg['sample_rate'],
                         cfg['clip_seconds'], False, cfg['skip_bad_files'], 0,
                         nsynth_label=cfg['nsynth_label'], test_fold=cfg['test_fold'])
    load_seconds = time.perf_counter() - started
    print(json.dumps({'what': 'load', 'dataset': data.name, 'clips': len(data.waves),
                      'clip_samples': data.clip_samples, 'seconds': load_seconds}), flush=True)
    results = [bench_cache(data, cfg['batch_size'], cfg['seconds'], cfg['device'], cfg['seed'])]
    print(json.dumps(results[-1]), flush=True)
    for how in ('read_clip', 'soundfile'):
        results.append(bench_decode(data, cfg['seconds'], how, cfg['seed']))
        print(json.dumps(results[-1]), flush=True)
    cache_rate = results[0]['clips_per_second']
    print(f'\n{data.name}: {len(data.waves)} clips of {data.clip_samples} samples '
          f'({data.clip_samples / data.sample_rate:g} s); load {load_seconds:.2f} s; '
          f'batches of {results[0]["batch_size"]} to {results[0]["device"]}')
    print(f'{"source":<12}{"clips/s":>12}{"cache is x faster":>20}')
    for result in results:
        print(f'{result["what"]:<12}{result["clips_per_second"]:>12,.0f}'
              f'{cache_rate / result["clips_per_second"]:>20,.1f}')


OPTIONS = ('dataset', 'data_root', 'cache_dir', 'batch_size', 'seconds', 'sample_rate',
           'clip_seconds', 'device', 'skip_bad_files', 'nsynth_label', 'test_fold', 'seed')

if __name__ == '__main__':
    config.exit_on_user_error(lambda: main(sys.argv[1:]))
