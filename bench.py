"""Speed of every stage of a CLAR step, measured in one run, printed as JSON lines and a table.

    python bench.py                                  # CPU, batch 32, standard ResNet-18
    python bench.py --device=cuda --batch_size=256 --compile=True

Lines (each has `name` and `clips_per_second`):
  cache_read              random batches from the waveform cache (synthetic clips)
  augment/<name>          each augmentation alone, and augment/configured for the set in use
  frontend                waveforms -> (3, 128, T) spectrograms, one view
  model_step              encoder, heads, losses, backward, optimiser on ready spectrograms,
                          both views (CLAR's loss)
  clar_step / supervised_step / selfsupervised_step
                          the whole step of each regime: augment the views, front end,
                          forward, backward, optimiser (the training scripts' own code)
  clar_step_over_model_step   `ratio`: what augmentation and front end leave of the speed
  clar_step/resnet1d, clar_step/resnet2d, encoder_1d_over_2d
                          the whole CLAR step with each encoder, timed in turn; `ratio`:
                          how many times the raw-waveform encoder's step costs the 2D one's
  clar_step/pool          with --pool_clips=N: CLAR steps drawn from the data plus an
                          unlabelled pool of N windows (1 % labels, --labelled_per_batch);
                          `ratio`: its speed over the same steps without the pool
  clar_step/pseudo_off, clar_step/pseudo, clar_step/pseudo_ema
                          with --compare_pseudo: CLAR steps at 10 % labels without and with
                          pseudo-labels (--pseudo_labels=fixed; and with an EMA teacher), timed
                          in turn; `ratio`: the speed with them over the speed without
  memory                  peak anonymous memory (RssAnon) and, on CUDA, peak GPU memory;
                          compare runs with --pool_clips=0 and --pool_clips=100000
  onnx/latency, onnx/batch
                          with --onnx=True: the CLAR model (head and embedding, as
                          export.py writes it) in onnxruntime against PyTorch eager, both on
                          the CPU with the same threads, timed in turn: one clip
                          (latency_ms, pytorch_latency_ms) and batches of --onnx_batch_size;
                          `ratio`: onnxruntime's speed over PyTorch's (above 1: faster)
  onnx/file               its size (size_mib; clips_per_second 0)
  onnx_int8/latency, onnx_int8/batch, onnx_int8/file
                          the same for onnxruntime's dynamic int8 quantisation of the file
                          (--onnx_int8=True); `ratio` over PyTorch, `over_float` over the
                          float32 file
"""
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import augmentation
import config as config_module
import dataset
import options
import selfsupervised
import supervised
import train
from trainer import Trainer

device = 'auto'               # auto | cpu | cuda
batch_size = 32               # clips per step (two views each in the contrastive regimes)
dtype = 'auto'                # auto (bfloat16 on CUDA, float32 on CPU) | float32 | bfloat16 | float16
compile = False               # torch.compile the model
channels_last = True          # channels-last memory layout for the 2D encoder
encoder = 'resnet2d'          # resnet2d | resnet1d
encoder_width = 1.0           # 1 = the standard ResNet-18
clip_seconds = 1.0            # clip length
augmentations = 'fade,time_mask'  # the configured set (the paper's best pair by default)
seconds = 3.0                 # time spent measuring each line (after warm-up)
augment_batch = 256           # batch size for the per-augmentation lines
baselines = True              # also time torchaudio's per-clip pitch shift and time stretch
compare_encoders = True       # also time the whole CLAR step with resnet1d against resnet2d
other_regimes = True          # also time the supervised and self-supervised steps (each compiles its own model with --compile)
cache_clips = 4096            # size of the synthetic waveform cache
compare_pseudo = True         # also time CLAR steps with pseudo-labels (the weak view's extra forward) against the same steps without
onnx = True                   # also time the exported ONNX file in onnxruntime against PyTorch eager on the CPU
onnx_int8 = True              # with --onnx: also its dynamic int8 quantisation (onnxruntime's)
onnx_batch_size = 64          # the batch of the onnx/batch lines
pool_clips = 0                # also train CLAR steps from an unlabelled pool of this many synthetic windows (its memory: the `memory` line)


def timed(function, clips, device, seconds):
    """Clips per second of the fastest call of `function` among repeated calls for about
    `seconds` (after one warm-up call). The fastest call is the one least disturbed by
    other work on the machine."""
    return interleaved({'only': function}, clips, device, seconds, min_rounds=3)['only']


def interleaved(functions, clips, device, seconds, min_rounds=5):
    """Like timed() for several functions, called in turn so that a noisy machine slows
    them alike, for about `seconds` each and at least `min_rounds` calls each;
    returns {name: clips per second}."""
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    best = {}
    for name, function in functions.items():      # warm-up
        function()
        best[name] = float('inf')
    sync()
    deadline = time.perf_counter() + seconds * len(functions)
    rounds = 0
    while True:
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            sync()
            best[name] = min(best[name], time.perf_counter() - start)
        rounds += 1
        if rounds >= min_rounds and time.perf_counter() >= deadline:
            return {name: clips / t for name, t in best.items()}


def memory_mib():
    """Anonymous memory of this process now (RssAnon: what it allocated itself, not the
    memory-mapped cache's pages) and its peak resident set (VmHWM), in MiB (Linux)."""
    fields = {}
    try:
        with open('/proc/self/status') as status:
            for line in status:
                key, _, value = line.partition(':')
                fields[key] = value.strip()
    except OSError:
        return None
    return {key.lower() + '_mib': round(int(fields[key].split()[0]) / 1024, 1)
            for key in ('RssAnon', 'VmHWM') if key in fields}


def synthetic_waves(clips, clip_samples, path):
    """An on-disk int16 array of random clips, memory-mapped as the caches are."""
    waves = np.lib.format.open_memmap(path, mode='w+', dtype=np.int16, shape=(clips, clip_samples))
    rng = np.random.default_rng(0)
    for start in range(0, clips, 1024):           # in chunks: never the whole set in memory
        rows = waves[start:start + 1024]
        rows[:] = rng.integers(-3000, 3000, rows.shape, dtype=np.int16)
    waves.flush()
    del waves
    return np.load(path, mmap_mode='r')


def synthetic_data(clips, clip_samples, folder):
    """A dataset of random clips in an on-disk waveform cache, read as the scripts read theirs."""
    waves = synthetic_waves(clips, clip_samples, folder / 'waves.npy')
    labels = np.arange(clips) % 10
    splits = {'train': np.arange(clips), 'val': np.arange(10), 'test': np.arange(10)}
    return dataset.AudioData('bench', [str(i) for i in range(10)], 16000, clip_samples, waves,
                             labels, splits, [], [])


def pool_steps(make_trainer, data, opts, folder):
    """Clips per second of CLAR steps drawn, as train.py draws them, from the dataset plus
    an unlabelled pool of opts['pool_clips'] synthetic windows (1 % of the labels,
    --labelled_per_batch), and of the same steps from the dataset alone, timed in turn:
    the sampler, the batch reads from both caches, the step."""
    import unlabelled
    pool = synthetic_waves(opts['pool_clips'], data.clip_samples, folder / 'pool.npy')
    os.sync()       # the 3.2 GB of a large pool written out before any step is timed
    plain = make_trainer('clar', label_fraction=0.01)
    unlabelled.attach(data, [(folder, pool, {})])
    with_pool = make_trainer('clar', label_fraction=0.01,
                             labelled_per_batch=max(1, opts['batch_size'] // 8))

    speeds = interleaved({'pool': batch_steps(with_pool), 'plain': batch_steps(plain)},
                         plain.global_batch, plain.device, opts['seconds'])
    return speeds['pool'], speeds['plain']


def batch_steps(trainer):
    """A CLAR step as the training loop takes it, over the trainer's own batches: their
    labelled rows and, for pseudo-labels, the clean waveforms and clip indices."""
    batches = itertools.cycle(trainer.epoch_batches(0))

    def step():
        indices = next(batches)
        waves, labels, labelled = trainer.load_batch(indices)
        trainer.optimise(trainer.make_views(waves), labels, labelled, clean=waves,
                         clips=trainer.clips_of(indices))
    return step


def pseudo_steps(make_trainer, opts, device):
    """Clips per second of CLAR steps at 10 % of the labels with and without pseudo-labels,
    timed in turn: {'plain', 'pseudo', 'pseudo_ema'}."""
    trainers = {'plain': make_trainer('clar', label_fraction=0.1),
                'pseudo': make_trainer('clar', label_fraction=0.1, pseudo_labels='fixed'),
                'pseudo_ema': make_trainer('clar', label_fraction=0.1, pseudo_labels='fixed',
                                           ema_decay=0.99)}
    return interleaved({name: batch_steps(t) for name, t in trainers.items()},
                       trainers['plain'].global_batch, device, opts['seconds'])


def baseline_speeds(waves, device, seconds, clips=3):
    """Clips per second of the obvious per-clip way to pitch-shift (torchaudio's
    functional.pitch_shift, random semitones) and time-stretch (torchaudio's TimeStretch on
    each clip's STFT), on a few clips: what the batched augmentations are compared with."""
    import torchaudio
    few, length = waves[:clips], waves.shape[1]
    generator = torch.Generator().manual_seed(0)
    semitones = augmentation.draw_pitch_shift(clips, length, 16000, generator)['semitones'].tolist()
    rates = augmentation.draw_time_stretch(clips, length, 16000, generator)['rate'].tolist()
    size, hop = augmentation.STFT_SIZE, augmentation.STFT_HOP
    window = torch.hann_window(size, device=device)
    stretcher = torchaudio.transforms.TimeStretch(hop_length=hop, n_freq=size // 2 + 1).to(device)

    def pitch_shift():
        return [torchaudio.functional.pitch_shift(clip, 16000, n) for clip, n in zip(few, semitones)]

    def time_stretch():
        out = []
        for clip, rate in zip(few, rates):
            spectrogram = torch.stft(clip, size, hop, window=window, return_complex=True)
            stretched = torch.istft(stretcher(spectrogram, rate), size, hop, window=window)
            out.append(torch.nn.functional.pad(stretched, (0, max(0, length - len(stretched))))[:length])
        return out
    # torchaudio builds a new resampling kernel for every semitone: each call is a cold one
    return {'pitch_shift': timed(pitch_shift, clips, device, seconds / 4),
            'time_stretch': timed(time_stretch, clips, device, seconds / 4)}


def onnx_speeds(cfg, clip_samples, opts, folder):
    """Speeds of a model built as `cfg` says (random weights, eval mode, float32, on the
    CPU) in PyTorch eager and, exported by export.py, in onnxruntime (and its int8
    quantisation with opts['onnx_int8']), called in turn on one clip and on batches of
    opts['onnx_batch_size']: {'latency' | 'batch': {name: clips per second}} and {name:
    file size in MiB}."""
    import export
    import model as model_module
    cpu = torch.device('cpu')
    model = model_module.build(cfg, 10, 'clar').eval()
    files = {'onnx': folder / 'model.onnx'}
    export.export_onnx(model, files['onnx'], clip_samples)
    if opts['onnx_int8']:
        files['onnx_int8'] = folder / 'model.int8.onnx'
        export.quantize(files['onnx'], files['onnx_int8'])
    sessions = {name: export.session(path) for name, path in files.items()}
    rng = np.random.default_rng(0)
    speeds = {}
    for case, batch in (('latency', 1), ('batch', opts['onnx_batch_size'])):
        waves = (0.1 * rng.standard_normal((batch, clip_samples))).astype(np.float32)
        tensor = torch.from_numpy(waves)

        def pytorch():
            with torch.no_grad():
                out = model(tensor)
                return torch.softmax(out['logits'], dim=1), out['h']
        runs = {'pytorch': pytorch, **{name: (lambda s=s: s.run(None, {'waveforms': waves}))
                                        for name, s in sessions.items()}}
        speeds[case] = interleaved(runs, batch, cpu, opts['seconds'])
    return speeds, {name: path.stat().st_size / 2 ** 20 for name, path in files.items()}


class FeaturesOnly(torch.nn.Module):
    """The model from its front end's output on: the model-only step feeds spectrograms."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, spectrograms):
        return self.model.features(spectrograms)


def main(argv):
    opts = config_module.parse_args(config_module.defaults_of(globals()), argv,
                                    sources=[__file__], program='bench.py')
    run_device = options.resolve_device(opts['device'])
    lines = []

    def report(name, clips_per_second, **extra):
        line = {'name': name, 'clips_per_second': round(clips_per_second, 1), **extra}
        lines.append(line)
        print(json.dumps(line), flush=True)

    clip_samples = int(opts['clip_seconds'] * 16000)
    scratch = tempfile.TemporaryDirectory(prefix='clar-bench-')
    data = synthetic_data(opts['cache_clips'], clip_samples, Path(scratch.name))
    rng = np.random.default_rng(0)
    report('cache_read', timed(lambda: data.batch(rng.choice(len(data.labels), 256, replace=False),
                                                  run_device), 256, run_device, opts['seconds']),
           batch_size=256)

    waves = data.batch(np.arange(opts['augment_batch']), run_device)[0]
    generator = torch.Generator().manual_seed(0)
    for name in augmentation.NAMES:
        report(f'augment/{name}', timed(lambda: augmentation.augment(waves, [name], 16000, generator),
                                        len(waves), run_device, opts['seconds']),
               batch_size=len(waves))

    regimes = {'clar': (train, 'all'), 'supervised': (supervised, 'labelled'),
               'selfsupervised': (selfsupervised, 'all')}
    timed_regimes = list(regimes) if opts['other_regimes'] else ['clar']
    batch = data.batch(np.arange(opts['batch_size']), run_device)
    labelled = torch.ones(opts['batch_size'], dtype=torch.bool, device=run_device)

    def config_of(regime, **overrides):
        cfg = config_module.script_defaults(vars(regimes[regime][0]))
        cfg.update({k: opts[k] for k in ('device', 'dtype', 'compile', 'encoder', 'encoder_width',
                                         'augmentations', 'batch_size', 'channels_last')},
                   **{'clip_seconds': opts['clip_seconds'], 'label_fraction': 1.0, **overrides})
        options.check(cfg)
        return cfg

    def make_trainer(regime, **overrides):
        script, train_on = regimes[regime]
        return Trainer(config_of(regime, **overrides), regime, script.loss, train_on, data,
                       run_device)

    def step_of(trainer):
        return lambda: trainer.optimise(trainer.make_views(batch[0]), batch[1], labelled)

    steps = {}
    for regime in timed_regimes:
        trainer = make_trainer(regime)
        if regime == 'clar':
            report('augment/configured', timed(lambda: trainer.make_views(batch[0]),
                                               opts['batch_size'], run_device, opts['seconds']),
                   augmentations=opts['augmentations'], views=2)
            frontend = trainer.model.frontend
            report('frontend', timed(lambda: frontend(batch[0]), opts['batch_size'],
                                     run_device, opts['seconds']), views=1)
            spectrograms = [frontend(v) for v in trainer.make_views(batch[0])]
            model_trainer = make_trainer(regime)
            model_trainer.forward = FeaturesOnly(model_trainer.model)
            if opts['compile']:
                model_trainer.forward = torch.compile(model_trainer.forward)
            both = interleaved({
                'model_step': lambda: model_trainer.optimise(spectrograms, batch[1], labelled),
                'clar': step_of(trainer)},
                opts['batch_size'], run_device, opts['seconds'])
            steps.update(both)
            report('model_step', steps['model_step'], views=2)
        else:
            steps[regime] = timed(step_of(trainer), opts['batch_size'], run_device,
                                  opts['seconds'])
        report(f'{regime}_step', steps[regime], views=1 if regime == 'supervised' else 2)

    if opts['compare_encoders']:
        encoders = interleaved({name: step_of(make_trainer('clar', encoder=name))
                                for name in ('resnet1d', 'resnet2d')},
                               opts['batch_size'], run_device, opts['seconds'])
        for name, speed in encoders.items():
            report(f'clar_step/{name}', speed, views=2)
        report('encoder_1d_over_2d', encoders['resnet1d'],
               ratio=round(encoders['resnet2d'] / encoders['resnet1d'], 3))
    report('clar_step_over_model_step', steps['clar'],
           ratio=round(steps['clar'] / steps['model_step'], 3))
    if opts['baselines']:
        for name, speed in baseline_speeds(waves, run_device, opts['seconds']).items():
            batched = next(l['clips_per_second'] for l in lines if l['name'] == f'augment/{name}')
            report(f'baseline/{name}', speed, ratio=round(batched / speed, 1))
    if opts['compare_pseudo']:
        speeds = pseudo_steps(make_trainer, opts, run_device)
        report('clar_step/pseudo_off', speeds['plain'], views=2, label_fraction=0.1)
        for name in ('pseudo', 'pseudo_ema'):
            report(f'clar_step/{name}', speeds[name], views=2, label_fraction=0.1,
                   ratio=round(speeds[name] / speeds['plain'], 3))
    if opts['pool_clips']:
        with_pool, plain = pool_steps(make_trainer, data, opts, Path(scratch.name))
        report('clar_step/pool', with_pool, pool_clips=opts['pool_clips'], views=2,
               ratio=round(with_pool / plain, 3))
    if opts['onnx']:
        speeds, sizes = onnx_speeds(config_of('clar'), clip_samples, opts, Path(scratch.name))
        for name in sizes:
            latency, batch = speeds['latency'], speeds['batch']
            over_float = {} if name == 'onnx' else {
                'over_float': {case: round(speeds[case][name] / speeds[case]['onnx'], 3)
                               for case in speeds}}
            report(f'{name}/latency', latency[name], batch_size=1, device='cpu',
                   latency_ms=round(1000 / latency[name], 2),
                   pytorch_latency_ms=round(1000 / latency['pytorch'], 2),
                   ratio=round(latency[name] / latency['pytorch'], 3),
                   **({'over_float': over_float['over_float']['latency']} if over_float else {}))
            report(f'{name}/batch', batch[name], batch_size=opts['onnx_batch_size'], device='cpu',
                   pytorch_clips_per_second=round(batch['pytorch'], 1),
                   ratio=round(batch[name] / batch['pytorch'], 3),
                   **({'over_float': over_float['over_float']['batch']} if over_float else {}))
            report(f'{name}/file', 0.0, size_mib=round(sizes[name], 2))
    memory = memory_mib() or {}
    memory['pool_clips'] = opts['pool_clips']
    if run_device.type == 'cuda':
        memory['cuda_peak_mib'] = torch.cuda.max_memory_allocated(run_device) / 2 ** 20
        memory['card'] = torch.cuda.get_device_name(run_device)
    report('memory', 0.0, batch_size=opts['batch_size'], **memory)

    print(f'\n{"name":34s} {"clips/s":>10s}  notes')
    step = steps['clar']
    for line in lines:
        note = ', '.join(f'{k}={v}' for k, v in line.items() if k not in ('name', 'clips_per_second'))
        if line['name'].startswith(('augment/', 'frontend')) and line['clips_per_second']:
            note = (note + ', ' if note else '') + f'{line["clips_per_second"] / step:.0f}x clar_step'
        print(f'{line["name"]:34s} {line["clips_per_second"]:10.1f}  {note}')
    print(f'\ndevice {run_device}{" (" + torch.cuda.get_device_name(run_device) + ")" if run_device.type == "cuda" else ""}, '
          f'torch {torch.__version__}, {torch.get_num_threads()} threads, batch {opts["batch_size"]}, '
          f'encoder {opts["encoder"]} width {opts["encoder_width"]}')
    scratch.cleanup()


if __name__ == '__main__':
    config_module.exit_on_user_error(lambda: main(sys.argv[1:]))
