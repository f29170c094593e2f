"""The parts of tools/gpu_check.sh, and the CUDA checks that tests/test_cuda.py runs.

    python tools/gpu_check.py checks --out=DIR [--device=cuda]   CUDA against the CPU
    python tools/gpu_check.py curves --out=DIR                    200 steps, bf16 and float32
    python tools/gpu_check.py profile --out=DIR                   where a CLAR step's time goes
    torchrun --nproc_per_node=2 tools/gpu_check.py ddp --out=DIR  2 epochs, SyncBatchNorm on CUDA
    python tools/gpu_check.py bench_summary --out=DIR --log=FILE --name=NAME
    python tools/gpu_check.py env --out=DIR                       versions, GPU, packages
    python tools/gpu_check.py pytest --out=DIR                    tests/test_cuda.py, when pytest is there
    python tools/gpu_check.py missing                             the optional packages not installed
    python tools/gpu_check.py line --out=DIR --name=NAME (--error=TEXT [--log=FILE] | --skipped=TEXT)
    python tools/gpu_check.py summary --out=DIR                   the results; exit status 1 if any failed

Every result is one JSON line appended to DIR/gpu_check.jsonl as soon as it is known
(`part`, `ok`, `time`, `device`, then the figures), so a run that is cut off still reports
what it finished. This file imports only torch, torchaudio, numpy and the project's modules
that need nothing more (the GPU machine has no soundfile, tqdm or pytest).

--device=cpu is the dry run: the same code at toy sizes, in seconds, with the CPU as both the
device under test and the reference (so the agreement figures are trivially zero).

Tolerances (CUDA against the CPU, float32, TF32 off):
  front end       log magnitude and log mel within 0.05 dB, phase within 1e-3 rad (wrapped),
                  wherever the CPU's log magnitude is above -80 dB (the floor is -100 dB)
  augmentations   every sample within 1e-4 (clips of RMS 0.1), from the same seed
  CLAR step       loss within 1e-4 relative; the gradient of all weights within 5e-2 relative
                  (L2): ResNet-18's ReLUs and max-pooling make it that sensitive, a 1e-6
                  relative change of the spectrograms moves it by 3e-3 on the CPU alone
  bf16 autocast   every loss finite over the steps; the first step's loss within 5e-2
                  relative of float32 from the same weights and views
  pinned batches  int16 rows gathered into pinned memory arrive bit-exact
  no host sync    training steps make the host wait for the GPU nowhere (sync debug mode)
"""
import contextlib
import copy
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import augmentation  # noqa: E402
import checkpoint  # noqa: E402
import config as config_module  # noqa: E402
import dataset  # noqa: E402
import distributed  # noqa: E402
import engine  # noqa: E402
import model as model_module  # noqa: E402
import options  # noqa: E402
import rundir  # noqa: E402
import train  # noqa: E402
from spectograms import Spectrogram  # noqa: E402
from trainer import Trainer  # noqa: E402

FRONTEND_DB, FRONTEND_PHASE, FRONTEND_ABOVE_DB = 0.05, 1e-3, -80.0
AUGMENT_ATOL = 1e-4
STEP_LOSS_RTOL, STEP_GRAD_RTOL = 1e-4, 5e-2
BF16_LOSS_RTOL = 5e-2
OPTIONAL = ('soundfile', 'tqdm', 'pytest', 'matplotlib', 'wandb', 'espeakng_loader')
# bench.py's targets on one H100/H200-class GPU, batch 256, bf16
TARGET_CLIPS_PER_SECOND, TARGET_RATIO = 10_000, 0.9


# ------------------------------------------------------------------ output

def device_name(device):
    device = torch.device(device)
    if device.type == 'cuda':
        try:
            return torch.cuda.get_device_name(device)
        except Exception as error:      # a broken CUDA set-up is a finding too
            return f'cuda (unavailable: {type(error).__name__})'
    return f'cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)'


def write_line(out, part, ok, device, **figures):
    """Append one result to out/gpu_check.jsonl at once (and print it)."""
    line = {'part': part, 'ok': ok, 'time': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
            'device': device_name(device) if device is not None else None, **figures}
    text = json.dumps(line, default=float)
    print(text, flush=True)
    with open(Path(out) / 'gpu_check.jsonl', 'a') as lines:
        lines.write(text + '\n')
    return line


@contextlib.contextmanager
def exact_float32():
    """float32 arithmetic as written: no TF32 in matmuls and convolutions."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def synchronize(device):
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------ test data

def test_waves(clips, samples=16000, seed=0):
    """Clips like speech-command recordings at RMS about 0.1: noise, tones, and a fade
    into silence (where a front end's low-power bins are)."""
    generator = torch.Generator().manual_seed(seed)
    time_axis = torch.arange(samples) / 16000
    frequency = 200 + 1800 * torch.rand(clips, 1, generator=generator)
    waves = 0.1 * torch.sin(2 * math.pi * frequency * time_axis)
    waves += 0.05 * torch.randn(clips, samples, generator=generator)
    fade = samples // 4
    waves[:, -fade:] *= torch.linspace(1, 0, fade) ** 3
    return waves


def tone_data(clips, folder, classes=10, clip_samples=16000, seed=0):
    """A waveform cache (int16, on disk, memory-mapped) of `clips` tones whose pitch says
    their class, at random levels and onsets, with noise: NT-Xent and the cross-entropy
    both have something to learn. 80/10/10 train/val/test."""
    waves = np.lib.format.open_memmap(Path(folder) / 'waves.npy', mode='w+', dtype=np.int16,
                                      shape=(clips, clip_samples))
    rng = np.random.default_rng(seed)
    labels = np.arange(clips) % classes
    time_axis = np.arange(clip_samples) / 16000
    for start in range(0, clips, 256):
        rows = np.arange(start, min(start + 256, clips))
        pitch = 220 * 2 ** (labels[rows, None] * 4 / 12) * rng.uniform(0.98, 1.02, (len(rows), 1))
        phase = rng.uniform(0, 2 * np.pi, (len(rows), 1))
        tone = sum(np.sin(2 * np.pi * k * pitch * time_axis + k * phase) / k for k in (1, 2, 3))
        onset = rng.integers(0, clip_samples // 4, len(rows))
        envelope = (np.arange(clip_samples) >= onset[:, None]).astype(np.float32)
        level = rng.uniform(0.05, 0.3, (len(rows), 1))
        clip = level * tone * envelope + rng.normal(0, 0.01, (len(rows), clip_samples))
        waves[rows] = np.clip(clip * 32767, -32768, 32767).astype(np.int16)
    waves.flush()
    order = rng.permutation(clips)
    train_end, val_end = int(0.8 * clips), int(0.9 * clips)
    splits = {'train': np.sort(order[:train_end]), 'val': np.sort(order[train_end:val_end]),
              'test': np.sort(order[val_end:])}
    return dataset.AudioData('tones', [f'tone{i}' for i in range(classes)], 16000, clip_samples,
                             np.load(Path(folder) / 'waves.npy', mmap_mode='r'), labels,
                             splits, [], [])


def clar_config(device, dtype, batch_size, width, **overrides):
    """train.py's configuration for a run on tone_data."""
    cfg = config_module.script_defaults(vars(train))
    cfg.update(device=str(device), dtype=dtype, batch_size=batch_size, encoder_width=width,
               label_fraction=0.1, learning_rate=1e-3, warmup_epochs=1, batchnorm_batches=2,
               **overrides)
    options.check(cfg)
    return cfg


def make_trainer(cfg, data, device, rank=0, world_size=1):
    engine.seed_everything(cfg['seed'] + rank)        # the same weights for the same seed
    return Trainer(cfg, 'clar', train.loss, 'all', data, torch.device(device), rank, world_size)


def run_steps(trainer, steps):
    """`steps` training steps as the loop takes them; returns the losses (one read of the
    device at the end) and the seconds of the steps after the first five."""
    losses, started, epoch = [], None, 0
    while len(losses) < steps:
        for batch in trainer.epoch_batches(epoch):
            if len(losses) == 5:
                synchronize(trainer.device)
                started = time.perf_counter()
            waves, labels, labelled = trainer.load_batch(batch)
            _, logs = trainer.optimise(trainer.make_views(waves), labels, labelled)
            losses.append(logs['loss'])
            if len(losses) == steps:
                break
        epoch += 1
    synchronize(trainer.device)
    seconds = time.perf_counter() - started if started else float('nan')
    return torch.stack(losses).float().cpu().tolist(), seconds


# ------------------------------------------------------------------ checks: CUDA against the CPU

def frontend_agreement(device, toy=False):
    """Both front ends on the device against the CPU, on the same clips."""
    waves = test_waves(2 if toy else 8)
    figures, ok = {}, True
    with exact_float32():
        for frontend in ('paper', 'released'):
            front = Spectrogram(16000, frontend)
            cpu = front(waves)
            other = copy.deepcopy(front).to(device)(waves.to(device)).cpu()
            heard = cpu[:, 0] > FRONTEND_ABOVE_DB
            magnitude = (other[:, 0] - cpu[:, 0]).abs()[heard].max().item()
            mel = (other[:, 2] - cpu[:, 2]).abs()[cpu[:, 2] > FRONTEND_ABOVE_DB].max().item()
            wrapped = torch.remainder(other[:, 1] - cpu[:, 1] + math.pi, 2 * math.pi) - math.pi
            phase = wrapped.abs()[heard].max().item()
            figures[frontend] = {'magnitude_db': magnitude, 'log_mel_db': mel, 'phase_rad': phase,
                                 'phase_2pi_jumps': int(((other[:, 1] - cpu[:, 1]).abs() > math.pi).sum())}
            ok = ok and magnitude <= FRONTEND_DB and mel <= FRONTEND_DB and phase <= FRONTEND_PHASE
    return {'ok': ok, 'max_error': figures,
            'tolerance': {'db': FRONTEND_DB, 'phase_rad': FRONTEND_PHASE,
                          'where_above_db': FRONTEND_ABOVE_DB}}


def augmentation_agreement(device, toy=False):
    """Every augmentation on the device against the CPU, parameters from the same seed."""
    waves = 0.1 * torch.randn(2 if toy else 8, 8000, generator=torch.Generator().manual_seed(0))
    errors = {}
    with exact_float32():
        for name in augmentation.NAMES:
            cpu = augmentation.augment(waves, [name], 16000, torch.Generator().manual_seed(5))
            other = augmentation.augment(waves.to(device), [name], 16000,
                                         torch.Generator().manual_seed(5))
            errors[name] = (other.cpu() - cpu).abs().max().item()
    return {'ok': max(errors.values()) <= AUGMENT_ATOL, 'max_error': errors,
            'tolerance': AUGMENT_ATOL}


def clar_step_agreement(device, toy=False):
    """One CLAR step (augmentation of two views, front end, ResNet-18, NT-Xent and the
    cross-entropy, backward, fused Adam) on the device against the same step on the CPU,
    from the same weights and seeds, in float32; then the loss after the update."""
    width, clips = (0.125, 4) if toy else (1.0, 8)
    torch.manual_seed(0)
    model = model_module.ClarModel(10, 'clar', encoder_width=width).to(memory_format=torch.channels_last)
    waves = test_waves(clips)
    labels = torch.arange(clips) % 10
    labelled = torch.arange(clips) % 2 == 0
    cfg = {'temperature': 0.5, 'ce_weight': 1.0}
    results = []
    with exact_float32():
        for where in ('cpu', device):
            net = copy.deepcopy(model).to(where)
            optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True)
            generator = torch.Generator().manual_seed(1)
            views = [augmentation.augment(waves.to(where), ['fade', 'time_mask'], 16000, generator)
                     for _ in range(2)]
            loss, _ = train.loss(net, views, labels.to(where), labelled.to(where), cfg)
            loss.backward()
            grads = {name: p.grad.detach().double().cpu() for name, p in net.named_parameters()}
            optimizer.step()
            after, _ = train.loss(net, views, labels.to(where), labelled.to(where), cfg)
            results.append((loss.item(), grads, after.item()))
    (loss_cpu, grads_cpu, after_cpu), (loss_dev, grads_dev, after_dev) = results

    def relative(names):
        a = torch.cat([grads_dev[n].flatten() for n in names])
        b = torch.cat([grads_cpu[n].flatten() for n in names])
        return ((a - b).norm() / b.norm().clamp(min=1e-30)).item()
    names = list(grads_cpu)
    blocks = {'all': names, 'stem': [n for n in names if '.stem.' in n],
              'layers': [n for n in names if '.layers.' in n],
              'heads': [n for n in names if not n.startswith('encoder.')]}
    gradient = {block: relative(members) for block, members in blocks.items()}
    loss_error = abs(loss_dev - loss_cpu) / abs(loss_cpu)
    after_error = abs(after_dev - after_cpu) / abs(after_cpu)
    return {'ok': loss_error <= STEP_LOSS_RTOL and gradient['all'] <= STEP_GRAD_RTOL
            and after_error <= 10 * STEP_LOSS_RTOL,
            'loss': {'cpu': loss_cpu, 'device': loss_dev, 'relative_error': loss_error},
            'loss_after_update': {'cpu': after_cpu, 'device': after_dev, 'relative_error': after_error},
            'gradient_relative_error': gradient, 'encoder_width': width, 'clips': clips,
            'tolerance': {'loss': STEP_LOSS_RTOL, 'gradient': STEP_GRAD_RTOL,
                          'loss_after_update': 10 * STEP_LOSS_RTOL}}


def bfloat16_losses(device, toy=False):
    """Steps of the real training code under bf16 autocast: every loss finite; the first
    step's loss against float32 from the same weights and views."""
    clips, batch, width, steps = (32, 8, 0.125, 3) if toy else (1024, 128, 1.0, 20)
    with tempfile.TemporaryDirectory(prefix='clar-gpu-check-') as folder:
        data = tone_data(clips, folder)
        first = {}
        for dtype in ('float32', 'bfloat16'):
            trainer = make_trainer(clar_config(device, dtype, batch, width, epochs=10), data, device)
            losses, _ = run_steps(trainer, 1 if dtype == 'float32' else steps)
            first[dtype] = losses[0]
    error = abs(first['bfloat16'] - first['float32']) / abs(first['float32'])
    finite = all(math.isfinite(value) for value in losses)
    return {'ok': finite and error <= BF16_LOSS_RTOL, 'all_finite': finite, 'steps': steps,
            'first_loss': first, 'relative_difference': error, 'last_loss': losses[-1],
            'batch_size': batch, 'encoder_width': width, 'tolerance': BF16_LOSS_RTOL}


def pinned_batches(device, toy=False):
    """Many batches in a row through AudioData.batch (int16 rows gathered into pinned
    memory, copied without waiting, converted on the device), compared afterwards with the
    cache's rows: a reused staging buffer would show here."""
    clips, batch, count = (64, 8, 4) if toy else (4096, 256, 40)
    with tempfile.TemporaryDirectory(prefix='clar-gpu-check-') as folder:
        data = tone_data(clips, folder)
        rng = np.random.default_rng(0)
        picks = [rng.choice(clips, batch, replace=False) for _ in range(count)]
        arrived = [data.batch(indices, device) for indices in picks]   # no synchronisation between
        synchronize(device)
        exact = True
        for indices, (waves, labels, order) in zip(picks, arrived):
            expected = torch.from_numpy(np.asarray(data.waves[np.sort(indices)], dtype=np.float32) / 32768)
            exact = exact and torch.equal(waves.cpu(), expected) and torch.equal(
                labels.cpu(), torch.from_numpy(data.labels[np.sort(indices)]))
    return {'ok': exact, 'batches': count, 'batch_size': batch,
            'pinned': torch.device(device).type == 'cuda'}


def rng_round_trip(device, toy=False):
    """checkpoint.rng_states / set_rng_states on this device: the draws after a restore
    repeat; a checkpoint of the older kind (every visible GPU's state in a list) restores
    the device's own entry, and one with fewer entries than this device's index is skipped."""
    device = torch.device(device)
    generator = torch.Generator().manual_seed(3)
    states = checkpoint.rng_states(generator, device)
    first = torch.rand(4, device=device).cpu(), torch.rand(4, generator=generator)
    checkpoint.set_rng_states(states, generator, device)
    again = torch.rand(4, device=device).cpu(), torch.rand(4, generator=generator)
    ok = all(torch.equal(a, b) for a, b in zip(first, again))
    if device.type == 'cuda':
        index = device.index if device.index is not None else torch.cuda.current_device()
        older = {**states, 'cuda': [states['cuda']] * (index + 1)}
        checkpoint.set_rng_states(older, generator, device)
        ok = ok and torch.equal(torch.rand(4, device=device).cpu(), first[0])
        checkpoint.set_rng_states({**states, 'cuda': []}, generator, device)   # fewer GPUs
    return {'ok': ok}


def no_host_sync(device, toy=False):
    """Training steps as the loop takes them (load a batch, augment two views, the step,
    the epoch's running sums) under torch.cuda.set_sync_debug_mode('error'): an operation
    that makes the host wait for the GPU raises, and is named. Without such waits the host
    prepares the next step while the GPU runs this one."""
    if torch.device(device).type != 'cuda':
        return {'ok': True, 'not_applicable': 'no host-device synchronisation on the CPU'}
    clips, batch, width = (256, 32, 0.25)
    with tempfile.TemporaryDirectory(prefix='clar-gpu-check-') as folder:
        data = tone_data(clips, folder)
        trainer = make_trainer(clar_config(device, 'auto', batch, width, epochs=10), data, device)
        run_steps(trainer, 2)                       # first calls: allocations, cuDNN, cuFFT plans
        progress = checkpoint.Progress()
        batches = trainer.epoch_batches(1)[:3]
        torch.cuda.set_sync_debug_mode('error')
        try:
            for batch_indices in batches:
                waves, labels, labelled = trainer.load_batch(batch_indices)
                finite, logs = trainer.optimise(trainer.make_views(waves), labels, labelled)
                progress.count(finite, logs, len(batch_indices), 0.0)
        except RuntimeError as error:
            return {'ok': False, 'waited_at': str(error).splitlines()[0]}
        finally:
            torch.cuda.set_sync_debug_mode('default')
    return {'ok': True, 'steps': len(batches), 'batch_size': batch}


CHECKS = {'frontend': frontend_agreement, 'augmentations': augmentation_agreement,
          'clar_step': clar_step_agreement, 'bfloat16': bfloat16_losses,
          'pinned_batches': pinned_batches, 'rng_states': rng_round_trip,
          'no_host_sync': no_host_sync}


def run_checks(out, device, toy):
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            result = check(device, toy)
        except Exception as error:      # one failing check must not hide the others
            result = {'ok': False, 'error': f'{type(error).__name__}: {error}'}
        write_line(out, f'check/{name}', result.pop('ok'), device,
                   seconds=round(time.perf_counter() - started, 2), **result)


# ------------------------------------------------------------------ curves, profile, ddp

def curves(out, device, toy, steps=0, batch_size=0, width=0.0):
    """The same CLAR run (weights, batches, augmentations from one seed) in bf16 and in
    float32: the loss curves side by side, and the whole loop's clips per second."""
    steps = steps or (8 if toy else 200)
    batch_size = batch_size or (8 if toy else 256)
    width = width or (0.125 if toy else 1.0)
    clips = 64 if toy else 4096
    runs = {}
    with tempfile.TemporaryDirectory(prefix='clar-gpu-check-') as folder:
        data = tone_data(clips, folder)
        per_epoch = int(0.8 * clips) // batch_size
        for dtype in ('bfloat16', 'float32'):
            cfg = clar_config(device, dtype, batch_size, width, epochs=math.ceil(steps / per_epoch))
            losses, seconds = run_steps(make_trainer(cfg, data, device), steps)
            tail = min(10, len(losses))
            runs[dtype] = {'first': losses[0], 'last': losses[-1],
                           'mean_first_10': float(np.mean(losses[:tail])),
                           'mean_last_10': float(np.mean(losses[-tail:])),
                           'every_20': losses[::20], 'all_finite': all(map(math.isfinite, losses)),
                           'clips_per_second': (steps - 5) * batch_size / seconds if steps > 5 else None}
    # a few toy steps show that the code runs, not that it learns
    learned = all(run['all_finite'] and (steps < 50 or run['mean_last_10'] < run['mean_first_10'])
                  for run in runs.values())
    side_by_side = {key: [runs['bfloat16'][key], runs['float32'][key]]
                    for key in ('first', 'last', 'mean_first_10', 'mean_last_10')}
    write_line(out, 'curves', learned, device, steps=steps, batch_size=batch_size,
               encoder_width=width, clips=clips, columns=['bfloat16', 'float32'],
               **side_by_side, runs=runs)


def profile(out, device, toy, batch_size=0, width=0.0):
    """torch.profiler over a few CLAR steps (bf16 on CUDA): the device time of loading,
    augmenting and the step (front end, forward, losses, backward, optimiser), the device's
    busy share of the wall time, and the kernels that take most; the full table goes to
    out/profile.txt."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, record_function
    batch_size = batch_size or (8 if toy else 256)
    width = width or (0.125 if toy else 1.0)
    device = torch.device(device)
    on_cuda = device.type == 'cuda'
    steps = 3 if toy else 10
    with tempfile.TemporaryDirectory(prefix='clar-gpu-check-') as folder:
        data = tone_data(64 if toy else 4096, folder)
        trainer = make_trainer(clar_config(device, 'auto', batch_size, width, epochs=10), data, device)
        batches = trainer.epoch_batches(0)

        def step(batch):
            with record_function('load_batch'):
                waves, labels, labelled = trainer.load_batch(batch)
            with record_function('augment'):
                views = trainer.make_views(waves)
            with record_function('optimise'):
                trainer.optimise(views, labels, labelled)
        for batch in batches[:3]:                   # warm-up (cuDNN picks its algorithms)
            step(batch)
        synchronize(device)
        started = time.perf_counter()
        for batch in batches[3:3 + steps]:
            step(batch)
        synchronize(device)
        wall = (time.perf_counter() - started) / steps
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
        with torch.profiler.profile(activities=activities) as prof:
            for batch in batches[3:3 + steps]:
                step(batch)
            synchronize(device)
    events = prof.key_averages()
    sort = 'self_device_time_total' if on_cuda else 'self_cpu_time_total'
    (Path(out) / 'profile.txt').write_text(events.table(sort_by=sort, row_limit=40))
    # device-side rows (kernels, copies), as the table's own "Self CUDA time total" counts them
    on_device = [e for e in events if e.device_type != DeviceType.CPU and not e.is_user_annotation]
    kernels = sorted(on_device, key=lambda e: -e.self_device_time_total)
    busy = sum(e.self_device_time_total for e in on_device) / 1000 / steps
    ranges = {}
    for e in events:
        if e.key in ('load_batch', 'augment', 'optimise'):
            entry = ranges.setdefault(e.key, {'device_ms_per_step': 0.0, 'cpu_ms_per_step': 0.0})
            entry['device_ms_per_step'] = max(entry['device_ms_per_step'], e.device_time_total / 1000 / steps)
            if e.device_type == DeviceType.CPU:
                entry['cpu_ms_per_step'] = e.cpu_time_total / 1000 / steps
    write_line(out, 'profile', True, device, batch_size=batch_size, encoder_width=width,
               dtype=str(trainer.amp_dtype).replace('torch.', ''),
               wall_ms_per_step=wall * 1000, clips_per_second=batch_size / wall,
               device_busy_ms_per_step=busy if on_cuda else None,
               device_busy_share=busy / (wall * 1000) if on_cuda else None, ranges=ranges,
               top_kernels=[{'name': e.key[:80], 'ms_per_step': e.self_device_time_total / 1000 / steps,
                             'calls_per_step': e.count / steps} for e in kernels[:12]],
               table='profile.txt')


def ddp(out, device, toy, batch_size=0, width=0.0):
    """Under torchrun: two epochs of the real loop (engine.train) on tone clips, with
    SyncBatchNorm on CUDA: the end of each epoch (BatchNorm re-estimation on every process,
    validation on the first, checkpoint with every process's random states) must not hang."""
    if 'tqdm' in missing_packages():            # engine.train's progress bar
        write_line(out, 'ddp', None, device, skipped='needs tqdm (see tools/gpu_check.sh on carrying wheels)')
        return
    rank_device, rank, world_size = distributed.init(str(device))
    run_device = rank_device or torch.device(device)
    batch_size = batch_size or (4 if toy else 64)
    width = width or (0.125 if toy else 0.5)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix='clar-gpu-check-') as folder:
        data = tone_data(96 if toy else 4096, folder)
        cfg = clar_config(run_device, 'auto', batch_size, width, epochs=2,
                          sync_batchnorm=run_device.type == 'cuda', run_name='ddp')
        trainer = make_trainer(cfg, data, run_device, rank, world_size)
        run_dir = Path(folder) / 'run'
        run_dir.mkdir()
        progress = checkpoint.Progress()
        with rundir.Logger(run_dir, cfg, 'clar', enabled=rank == 0) as logger:
            engine.train(trainer, progress, logger, run_dir, SimpleNamespace(received=None))
        if rank == 0:
            metrics = [json.loads(line) for line in (run_dir / 'metrics.jsonl').read_text().splitlines()]
            saved = checkpoint.load(run_dir / 'checkpoint_last.pt')
            ok = len(metrics) == 2 and len(saved['rng']) == world_size
            write_line(out, 'ddp', ok, run_device, processes=world_size,
                       sync_batchnorm=cfg['sync_batchnorm'], epochs=len(metrics),
                       val_accuracy=[m['val_accuracy'] for m in metrics],
                       loss=[m['loss'] for m in metrics], seconds=time.perf_counter() - started,
                       rng_states_saved=len(saved['rng']))
    distributed.shutdown()


# ------------------------------------------------------------------ bench, environment

def bench_summary(out, device, log, name):
    """The figures of a bench.py run (its JSON lines in `log`) that the targets are about."""
    lines = {}
    for text in Path(log).read_text().splitlines():
        if text.startswith('{'):
            line = json.loads(text)
            lines[line['name']] = line
    speed = {key: lines[key]['clips_per_second'] for key in lines
             if key.endswith('_step') or key.startswith(('frontend', 'augment/configured', 'cache_read'))}
    if 'clar_step' not in lines:
        write_line(out, name, False, device, error='bench.py wrote no clar_step line', log=Path(log).name)
        return
    ratio = lines['clar_step_over_model_step']['ratio']
    on_cuda = torch.device(device).type == 'cuda'
    write_line(out, name, True, device, clips_per_second=speed, clar_over_model=ratio,
               memory=lines.get('memory'), log=Path(log).name,
               targets={'clar_step_clips_per_second': TARGET_CLIPS_PER_SECOND,
                        'clar_over_model': TARGET_RATIO,
                        'met': ({'clips_per_second': speed['clar_step'] >= TARGET_CLIPS_PER_SECOND,
                                 'ratio': ratio >= TARGET_RATIO} if on_cuda else 'not on a GPU')})


def missing_packages():
    import importlib.util
    return [name for name in OPTIONAL if importlib.util.find_spec(name) is None]


def environment(out, device):
    import torchaudio
    cuda = torch.cuda.is_available()
    write_line(out, 'env', cuda or torch.device(device).type == 'cpu', device,
               python=platform.python_version(), torch=torch.__version__,
               torchaudio=torchaudio.__version__, numpy=np.__version__,
               cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version() if cuda else None,
               gpus=[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
               capability=list(torch.cuda.get_device_capability()) if cuda else None,
               cpu_cores=os.cpu_count(), missing_packages=missing_packages())


def run_pytest(out, device):
    """tests/test_cuda.py and the augmentation test's CUDA case under pytest, when pytest
    and the test suite's own imports (soundfile) are there."""
    absent = [name for name in ('pytest', 'soundfile') if name in missing_packages()]
    if absent:
        write_line(out, 'pytest', None, device, skipped=f'needs {", ".join(absent)} (see '
                   f'tools/gpu_check.sh on carrying wheels); the same checks ran as check/*')
        return
    command = [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', 'tests/test_cuda.py',
               'tests/test_augmentation.py::test_cpu_and_cuda_agree']
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    (Path(out) / 'pytest.log').write_text(result.stdout + result.stderr)
    summary = (result.stdout.strip().splitlines() or [''])[-1]
    write_line(out, 'pytest', result.returncode == 0, device, summary=summary, log='pytest.log')


def failure_line(out, device, name, error='', log='', skipped=''):
    """What gpu_check.sh writes for a part that failed or was cut off without writing its
    line (with the end of its log), or that it skipped (`ok` null)."""
    if skipped:
        write_line(out, name, None, device, skipped=skipped)
        return
    tail = []
    if log and (Path(out) / log).exists():
        tail = (Path(out) / log).read_text(errors='replace').splitlines()[-8:]
    write_line(out, name, False, device, error=error, log=log or None, log_tail=tail)


def summary(out):
    """A line per result of out/gpu_check.jsonl; false when any is not ok."""
    lines = [json.loads(text) for text in (Path(out) / 'gpu_check.jsonl').read_text().splitlines()]
    for line in lines:
        state = {True: 'ok', False: 'FAILED', None: 'skipped'}[line['ok']]
        note = line.get('error') or line.get('skipped') or ''
        print(f'{line["part"]:24s} {state:8s} {note}')
    return all(line['ok'] is not False for line in lines)


def main(argv):
    defaults = {'out': '', 'device': 'cuda', 'steps': 0, 'batch_size': 0, 'width': 0.0,
                'log': '', 'name': '', 'error': '', 'skipped': ''}
    (part,), opts = config_module.parse_command(
        argv, defaults, 1, 'python tools/gpu_check.py PART --out=DIR [--device=cuda|cpu]', __doc__)
    if part == 'missing':
        print(' '.join(missing_packages()))
        return 0
    if not opts['out']:
        raise config_module.UserError('--out=DIR is needed: the folder the JSON lines go to')
    Path(opts['out']).mkdir(parents=True, exist_ok=True)
    out, device = opts['out'], opts['device']
    toy = torch.device(device).type == 'cpu'
    sizes = {k: opts[k] for k in ('batch_size', 'width')}
    parts = {
        'env': lambda: environment(out, device),
        'checks': lambda: run_checks(out, device, toy),
        'curves': lambda: curves(out, device, toy, opts['steps'], **sizes),
        'profile': lambda: profile(out, device, toy, **sizes),
        'ddp': lambda: ddp(out, device, toy, **sizes),
        'bench_summary': lambda: bench_summary(out, device, opts['log'], opts['name']),
        'pytest': lambda: run_pytest(out, device),
        'line': lambda: failure_line(out, device, opts['name'], opts['error'], opts['log'],
                                     opts['skipped']),
    }
    if part == 'summary':
        return 0 if summary(out) else 1
    if part not in parts:
        raise config_module.UserError(f'unknown part {part!r}; parts: {", ".join(parts)}, '
                                      f'missing, summary')
    parts[part]()       # it writes its own lines, `ok` true or false; a crash exits non-zero
    return 0


if __name__ == '__main__':
    sys.exit(config_module.exit_on_user_error(lambda: main(sys.argv[1:])))
