"""Embeddings (the encoder's features h) of audio files or waveforms, from a trained run.

    python embed.py runs/x audio_folder/ embeddings.npy    # + embeddings.paths.txt
    python embed.py runs/x audio_folder/ embeddings.npz    # arrays 'embeddings' and 'paths'
    options: --device=auto --batch_size=64 --clip_seconds=0 (0 = the model's)
             --skip_bad_files=False (True: leave unreadable files out, and list them)

Every .wav/.flac/.ogg file under the folder (recursively, in sorted order) is prepared as
the training data was: mono, resampled to the model's sample rate, cropped or zero-padded
on the right to its clip length, rounded to 16 bits like the waveform cache. The output
holds one float32 row of 512 * encoder_width features per file, in the order of the paths
listed beside it (relative to the folder, one per line).

From Python:
    from embed import load_model, embed, embed_files
    vectors = embed('runs/x', waveform, 44100)           # any rate; (T,) or (B, T)
    model, checkpoint = load_model('runs/x')
    vectors = embed_files(model, paths, 16000, 16000)
"""
import sys
from pathlib import Path

import numpy as np
import torch

import config as config_module
import audio
from config import UserError
from options import resolve_device
from evaluate import load as load_checkpoint

DEFAULTS = {'device': 'auto', 'batch_size': 64, 'clip_seconds': 0.0, 'skip_bad_files': False}
# audio.read_clip's resampler: the same samples for a waveform given in memory as for
# that waveform read from a file (the quiet bins of a log spectrogram notice even float
# rounding, through the 16-bit rounding)
resampler = audio.resampler


def load_model(path, device='cpu'):
    """(model in eval mode, checkpoint dict) from a run directory or checkpoint file."""
    model, checkpoint, _ = load_checkpoint(path, torch.device(device) if isinstance(device, str) else device)
    return model, checkpoint


def clip_samples_of(checkpoint, clip_seconds=0.0):
    """The clip length (samples) the model was trained on, or `clip_seconds` when given."""
    cfg = checkpoint['config']
    if clip_seconds:
        return int(round(clip_seconds * cfg['sample_rate']))
    if checkpoint.get('clip_samples'):
        return int(checkpoint['clip_samples'])
    raise UserError('the checkpoint does not record its clip length; give --clip_seconds')


@torch.no_grad()
def embed_waves(model, waves, device='cpu', batch_size=64):
    """Features h of prepared clips (B, clip_samples) at the model's rate, float32 numpy."""
    device = torch.device(device)
    model.eval()
    parts = [model.embed(waves[start:start + batch_size].to(device)).float().cpu()
             for start in range(0, len(waves), batch_size)]
    if not parts:
        return np.zeros((0, model.encoder.out_dim), dtype=np.float32)
    return torch.cat(parts).numpy().astype(np.float32, copy=False)


def embed(checkpoint, waveforms, sample_rate, device='cpu', batch_size=64, clip_seconds=0.0):
    """Embeddings of waveforms recorded at `sample_rate`, resampled to the model's rate and
    cropped or padded to its clip length (see the module docstring).

    checkpoint: a run directory, a checkpoint file, or a (model, checkpoint dict) pair from
    load_model. waveforms: one mono clip (T,), a batch (B, T), or a list of clips of any
    lengths; numpy or torch. Returns (B, 512 * encoder_width) float32 numpy."""
    if isinstance(checkpoint, (str, Path)):
        model, checkpoint = load_model(checkpoint, device)
    else:
        model, checkpoint = checkpoint
    model_rate = checkpoint['config']['sample_rate']
    clip_samples = clip_samples_of(checkpoint, clip_seconds)
    if isinstance(waveforms, (list, tuple)):
        clips = [torch.as_tensor(np.asarray(w), dtype=torch.float32) for w in waveforms]
    else:
        array = torch.as_tensor(np.asarray(waveforms), dtype=torch.float32)
        if array.dim() not in (1, 2):
            raise ValueError(f'waveforms must be (T,) or (B, T), got shape {tuple(array.shape)}')
        clips = list(array.reshape(-1, array.shape[-1]))
    prepared = []
    for clip in clips:
        if clip.dim() != 1:
            raise ValueError(f'each waveform must be one mono channel (T,), got {tuple(clip.shape)}')
        if sample_rate != model_rate:
            clip = resampler(sample_rate, model_rate)(clip)
        prepared.append(audio.fit_length(clip, clip_samples))
    waves = audio.quantize(torch.stack(prepared)) if prepared else torch.zeros(0, clip_samples)
    return embed_waves(model, waves, device, batch_size)


def _read(paths, sample_rate, clip_samples, skipped=None):
    """Prepared clips of the files; unreadable ones raise UserError, or are appended to
    `skipped` (a list) as 'path: reason' when it is given."""
    clips, kept = [], []
    for path in paths:
        try:
            clip = audio.read_clip(str(path), sample_rate, clip_samples)
        except ValueError as error:
            if skipped is None:
                raise UserError(f'{path}: {error}; fix or remove the file, or use '
                                f'--skip_bad_files=True') from None
            skipped.append(f'{path}: {error}')
            continue
        clips.append(torch.from_numpy(clip))
        kept.append(path)
    waves = audio.quantize(torch.stack(clips)) if clips else torch.zeros(0, clip_samples)
    return waves, kept


def embed_files(model, paths, sample_rate, clip_samples, device='cpu', batch_size=64,
                skipped=None):
    """Embeddings (N, 512 * encoder_width) float32 of audio files (wav, flac, ogg; any rate
    and channel count), decoded like the training data at `sample_rate` and `clip_samples`
    (the model's). With a list `skipped`, unreadable files are left out and listed there
    ('path: reason'); otherwise the first raises UserError."""
    return _embed_paths(model, paths, sample_rate, clip_samples, device, batch_size, skipped)[0]


def _embed_paths(model, paths, sample_rate, clip_samples, device, batch_size, skipped):
    """(embeddings, the paths that were read), a batch of files at a time."""
    rows, kept, batch = [], [], max(1, batch_size)
    for start in range(0, len(paths), batch):
        waves, read = _read(paths[start:start + batch], sample_rate, clip_samples, skipped)
        rows.append(embed_waves(model, waves, device, batch))
        kept += read
    if not rows:
        return np.zeros((0, model.encoder.out_dim), dtype=np.float32), kept
    return np.concatenate(rows), kept


def audio_files(folder):
    """Every .wav/.flac/.ogg file under `folder`, recursively, sorted; UserError when none."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UserError(f'{folder}: no such folder')
    files = audio.audio_files(folder)
    if not files:
        raise UserError(f'{folder}: no audio files ({", ".join(audio.AUDIO_EXTENSIONS)}) in it '
                        f'or its sub-folders')
    return files


def parse_command_line(argv):
    return config_module.parse_command(
        argv, DEFAULTS, 3, 'python embed.py <checkpoint or run directory> <audio folder> '
        '<out.npy or out.npz> [--device=auto] [--batch_size=64] [--clip_seconds=0] '
        '[--skip_bad_files=False]', __doc__)


def main(argv=None):
    (checkpoint_arg, folder, out), options = parse_command_line(
        sys.argv[1:] if argv is None else argv)
    out = Path(out).expanduser()
    if out.suffix not in ('.npy', '.npz'):
        raise UserError(f'{out}: the output is a .npy (with a .paths.txt beside it) or a .npz file')
    device = resolve_device(options['device'])
    if options['batch_size'] < 1:
        raise UserError('--batch_size must be at least 1')
    files = audio_files(folder)
    model, checkpoint = load_model(checkpoint_arg, device)
    sample_rate = checkpoint['config']['sample_rate']
    clip_samples = clip_samples_of(checkpoint, options['clip_seconds'])
    skipped = [] if options['skip_bad_files'] else None
    print(f'embedding {len(files)} files from {folder} ({clip_samples / sample_rate:g} s clips at '
          f'{sample_rate} Hz) with {checkpoint.get("regime")} model {checkpoint_arg}')
    vectors, kept = _embed_paths(model, files, sample_rate, clip_samples, device,
                                 options['batch_size'], skipped)
    if not kept:
        raise UserError(f'none of the {len(files)} files in {folder} could be read')
    relative = [Path(p).relative_to(Path(folder).expanduser()).as_posix() for p in kept]
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == '.npz':
        np.savez(out, embeddings=vectors, paths=np.array(relative))
        where = f'{out} (arrays embeddings, paths)'
    else:
        np.save(out, vectors)
        listing = out.with_suffix('.paths.txt')
        listing.write_text(''.join(p + '\n' for p in relative))
        where = f'{out} and {listing}'
    print(f'wrote {vectors.shape[0]} x {vectors.shape[1]} float32 embeddings to {where}')
    if skipped:
        print(f'skipped {len(skipped)} unreadable files:\n  ' + '\n  '.join(skipped))
    return 0


if __name__ == '__main__':
    sys.exit(config_module.exit_on_user_error(main))
