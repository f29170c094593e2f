"""Embeddings (the encoder's features h) of audio files or waveforms, from a trained run.

    python embed.py runs/x audio_folder/ embeddings.npy    # + embeddings.paths.txt
    python embed.py runs/x audio_folder/ embeddings.npz    # arrays 'embeddings' and 'paths'
    python embed.py runs/x audio_folder/ windows.npz --pool=none --hop=0.25   # + 'starts'
    python embed.py runs/x audio_folder/ embeddings.npy --map=map.png         # + a t-SNE map
    options: --device=auto --batch_size=64 --clip_seconds=0 (0 = the model's)
             --hop=0 (seconds between windows; 0 = half a clip)
             --pool=mean (one row per file: the mean over its windows) | none (one row
               per window, with its start time)
             --map= (a PNG: a 2-D t-SNE map of the rows, coloured by class folder)
             --skip_bad_files=False (True: leave unreadable files out, and list them)

Every .wav/.flac/.ogg/.mp3 file under the folder (recursively, in sorted order) is prepared as
the training data was: mono, resampled to the model's sample rate, rounded to 16 bits like
the waveform cache (audio.file_windows, the path predict.py shares), and cut into windows
of the model's clip length, `--hop` apart: a file shorter than a clip is one zero-padded
window (exactly the clip training would read from it), and a tail shorter than half a clip
is dropped (audio.windows). The output holds float32 rows of 512 * encoder_width features,
in the order of the paths listed beside it (relative to the folder, one per row); with
--pool=none also the start of each row's window in seconds (`starts` in the .npz, or
<out>.starts.npy beside a .npy).

--map colours each point by the first folder under the given folder (the class folders of
a dataset laid out one sub-folder per class); a flat folder gives uncoloured points.

From Python:
    from embed import load_model, embed, embed_files
    vectors = embed('runs/x', waveform, 44100)           # any rate; (T,) or (B, T); the first clip
    model, checkpoint = load_model('runs/x')
    vectors = embed_files(model, paths, 16000, 16000)    # the first clip of each file
    vectors, kept, starts = embed_recordings(model, paths, 16000, 16000, 8000, pool='none')
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

DEFAULTS = {'device': 'auto', 'batch_size': 64, 'clip_seconds': 0.0, 'hop': 0.0,
            'pool': 'mean', 'map': '', 'skip_bad_files': False}
POOLS = ('mean', 'none')
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


def read_windows(path, sample_rate, clip_samples, hop_samples, skipped=None):
    """audio.file_windows of `path`; when it cannot be read, a UserError, or with a list
    `skipped` None and 'path: reason' appended there."""
    try:
        return audio.file_windows(path, sample_rate, clip_samples, hop_samples)
    except ValueError as error:
        if skipped is None:
            raise UserError(f'{path}: {error}; fix or remove the file, or use '
                            f'--skip_bad_files=True') from None
        skipped.append(f'{path}: {error}')
        return None


def _read(paths, sample_rate, clip_samples, skipped=None):
    """The clip training reads from each file (its first window), and the files read."""
    clips, kept = [], []
    for path in paths:
        read = read_windows(path, sample_rate, clip_samples, clip_samples, skipped)
        if read is not None:
            clips.append(read[0][0])
            kept.append(path)
    return (torch.stack(clips) if clips else torch.zeros(0, clip_samples)), kept


def embed_files(model, paths, sample_rate, clip_samples, device='cpu', batch_size=64,
                skipped=None):
    """Embeddings (N, 512 * encoder_width) float32 of audio files (wav, flac, ogg, mp3; any rate
    and channel count), decoded like the training data at `sample_rate` and `clip_samples`
    (the model's). With a list `skipped`, unreadable files are left out and listed there
    ('path: reason'); otherwise the first raises UserError."""
    return _embed_paths(model, paths, sample_rate, clip_samples, device, batch_size, skipped)[0]


def run_in_batches(compute, sources, batch_size):
    """`compute` (a batch of windows (B, clip) -> rows (B, ...)) over the windows of many
    sources, batch_size windows at a time gathered across sources, so that short files
    share batches and a long one is split over several. `sources` yields (key, windows
    (n, clip), a view); yields (key, its n rows) in the order of the sources, each as soon
    as its last window has been computed. Holds one batch and the sources it draws from,
    never every window of a long recording at once. The batches are gathered into one
    buffer, reused (a fresh one per batch lets the C allocator's free lists grow, on a
    CPU, by the size of every window ever cut); `compute` must not keep or return it."""
    waiting = []                        # (key, row pieces) of sources not yet yielded
    batch, owners, size = [], [], 0     # window slices of the next batch, whose rows they are
    buffer = None

    def run():
        nonlocal buffer
        rows = sum(len(b) for b in batch)
        if buffer is None:
            buffer = batch[0].new_empty((batch_size, *batch[0].shape[1:]))
        computed = compute(torch.cat(batch, out=buffer[:rows]))
        for pieces, part in zip(owners, computed.split([len(b) for b in batch])):
            pieces.append(part)
        batch.clear()
        owners.clear()

    for key, windows in sources:
        pieces = []
        waiting.append((key, pieces))
        start = 0
        while start < len(windows):
            take = min(batch_size - size, len(windows) - start)
            batch.append(windows[start:start + take])
            owners.append(pieces)
            size, start = size + take, start + take
            if size == batch_size:
                run()
                size = 0
                complete = len(waiting) if start == len(windows) else len(waiting) - 1
                for done_key, done in waiting[:complete]:
                    yield done_key, torch.cat(done)
                del waiting[:complete]
    if batch:
        run()
    for done_key, done in waiting:
        yield done_key, torch.cat(done)


def embed_recordings(model, paths, sample_rate, clip_samples, hop_samples, pool='mean',
                     device='cpu', batch_size=64, skipped=None):
    """Embeddings of recordings of any length, through clip-length windows `hop_samples`
    apart. pool='mean': one row per file, the mean of its windows' embeddings; 'none': one
    row per window. Returns (rows (N, 512 * encoder_width) float32, the path of each row,
    the start of each row's window in samples (0 for pooled rows)). Unreadable files raise
    UserError, or with a list `skipped` are left out and listed there ('path: reason')."""
    if pool not in POOLS:
        raise UserError(f'--pool={pool}; valid: {", ".join(POOLS)}')
    device = torch.device(device)
    model.eval()
    starts_of = {}

    def sources():
        for number, path in enumerate(paths):
            read = read_windows(path, sample_rate, clip_samples, hop_samples, skipped)
            if read is not None:
                windows, starts_of[number] = read
                yield number, windows

    rows, row_paths, row_starts = [], [], []
    with torch.no_grad():
        for number, vectors in run_in_batches(
                lambda windows: model.embed(windows.to(device)).float().cpu(), sources(),
                max(1, batch_size)):
            starts = starts_of.pop(number)
            if pool == 'mean':
                vectors, starts = vectors.mean(0, keepdim=True), starts[:1] * 0
            rows.append(vectors)
            row_paths += [paths[number]] * len(vectors)
            row_starts.append(starts)
    if not rows:
        return np.zeros((0, model.encoder.out_dim), dtype=np.float32), [], np.zeros(0, dtype=np.int64)
    return (torch.cat(rows).numpy().astype(np.float32, copy=False), row_paths,
            torch.cat(row_starts).numpy())


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
    """Every .wav/.flac/.ogg/.mp3 file under `folder`, recursively, sorted; UserError when none."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UserError(f'{folder}: no such folder')
    files = audio.audio_files(folder)
    if not files:
        raise UserError(f'{folder}: no audio files ({", ".join(audio.AUDIO_EXTENSIONS)}) in it '
                        f'or its sub-folders')
    return files


def class_of(relative_path):
    """The class folder of a path relative to the embedded folder (its first folder), or
    None for a file at the top."""
    parts = Path(relative_path).parts
    return parts[0] if len(parts) > 1 else None


def plot_map(vectors, labels, path, title='', seed=0):
    """A 2-D t-SNE map of the rows of `vectors`, each point coloured by its label (None:
    unlabelled, grey), with a legend of the labels; written as a PNG to `path`. Returns
    the legend's labels (none when every label is None)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE
    vectors = np.asarray(vectors, dtype=np.float32)
    if len(vectors) < 3:
        raise UserError(f'a map needs at least 3 embeddings, got {len(vectors)}')
    # perplexity must stay below the number of points; 30 is t-SNE's usual value. The exact
    # gradient is faster than Barnes-Hut's approximation up to a thousand points or so (and
    # needs memory in their square)
    perplexity = min(30.0, (len(vectors) - 1) / 3)
    points = TSNE(2, perplexity=perplexity, init='pca', learning_rate='auto', random_state=seed,
                  method='exact' if len(vectors) <= 1000 else 'barnes_hut').fit_transform(vectors)
    classes = sorted({label for label in labels if label is not None})
    colours = plt.get_cmap('tab10' if len(classes) <= 10 else 'tab20' if len(classes) <= 20
                           else 'turbo')
    figure, axis = plt.subplots(figsize=(7.5 if classes else 6, 6))
    unlabelled = np.array([label is None for label in labels])
    if unlabelled.any():
        axis.scatter(*points[unlabelled].T, s=10, color='0.45', alpha=0.7,
                     label='(no class folder)' if classes else None)
    for i, name in enumerate(classes):
        mine = np.array([label == name for label in labels])
        axis.scatter(*points[mine].T, s=10, alpha=0.8, label=name,
                     color=colours(i if len(classes) <= 20 else i / max(1, len(classes) - 1)))
    legend = None
    if classes:
        legend = axis.legend(title='class folder', fontsize=7, markerscale=1.5, loc='upper left',
                             bbox_to_anchor=(1.01, 1), ncol=1 if len(classes) <= 25 else 2)
    axis.set_xticks([])
    axis.set_yticks([])
    axis.set_title(title or f't-SNE of {len(vectors)} embeddings', fontsize=9)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return [text.get_text() for text in legend.get_texts()] if legend else []


def write_embeddings(out, vectors, relative, starts=None):
    """The rows as out.npz (embeddings, paths[, starts]) or out.npy beside out.paths.txt
    (and out.starts.npy); returns where they went, in words."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == '.npz':
        arrays = {'embeddings': vectors, 'paths': np.array(relative)}
        if starts is not None:
            arrays['starts'] = starts
        np.savez(out, **arrays)
        return f'{out} (arrays {", ".join(arrays)})'
    np.save(out, vectors)
    listing = out.with_suffix('.paths.txt')
    listing.write_text(''.join(p + '\n' for p in relative))
    if starts is None:
        return f'{out} and {listing}'
    np.save(out.with_suffix('.starts.npy'), starts)
    return f'{out}, {listing} and {out.with_suffix(".starts.npy")}'


def parse_command_line(argv):
    return config_module.parse_command(
        argv, DEFAULTS, 3, 'python embed.py <checkpoint or run directory> <audio folder> '
        '<out.npy or out.npz> [--device=auto] [--batch_size=64] [--clip_seconds=0] [--hop=0] '
        '[--pool=mean|none] [--map=map.png] [--skip_bad_files=False]', __doc__)


def hop_samples_of(hop_seconds, sample_rate, clip_samples):
    """The hop in samples: `hop_seconds`, or half a clip when 0."""
    if hop_seconds < 0:
        raise UserError(f'--hop must be positive (seconds), got {hop_seconds:g}')
    hop = int(round(hop_seconds * sample_rate)) if hop_seconds else clip_samples // 2
    if hop < 1:
        raise UserError(f'--hop={hop_seconds:g} is under one sample at {sample_rate} Hz')
    return hop


def main(argv=None):
    (checkpoint_arg, folder, out), options = parse_command_line(
        sys.argv[1:] if argv is None else argv)
    out = Path(out).expanduser()
    if out.suffix not in ('.npy', '.npz'):
        raise UserError(f'{out}: the output is a .npy (with a .paths.txt beside it) or a .npz file')
    if options['map'] and not options['map'].lower().endswith('.png'):
        raise UserError(f'--map={options["map"]}: the map is a .png file')
    if options['pool'] not in POOLS:
        raise UserError(f'--pool={options["pool"]}; valid: {", ".join(POOLS)}')
    device = resolve_device(options['device'])
    if options['batch_size'] < 1:
        raise UserError('--batch_size must be at least 1')
    files = audio_files(folder)
    model, checkpoint = load_model(checkpoint_arg, device)
    sample_rate = checkpoint['config']['sample_rate']
    clip_samples = clip_samples_of(checkpoint, options['clip_seconds'])
    hop = hop_samples_of(options['hop'], sample_rate, clip_samples)
    skipped = [] if options['skip_bad_files'] else None
    print(f'embedding {len(files)} files from {folder} ({clip_samples / sample_rate:g} s windows '
          f'{hop / sample_rate:g} s apart at {sample_rate} Hz, pool {options["pool"]}) with '
          f'{checkpoint.get("regime")} model {checkpoint_arg}')
    vectors, kept, starts = embed_recordings(model, files, sample_rate, clip_samples, hop,
                                             options['pool'], device, options['batch_size'],
                                             skipped)
    if not kept:
        raise UserError(f'none of the {len(files)} files in {folder} could be read')
    relative = [Path(p).relative_to(Path(folder).expanduser()).as_posix() for p in kept]
    seconds = starts / sample_rate if options['pool'] == 'none' else None
    where = write_embeddings(out, vectors, relative, seconds)
    print(f'wrote {vectors.shape[0]} x {vectors.shape[1]} float32 embeddings to {where}')
    if options['map']:
        what = 'windows' if options['pool'] == 'none' else 'files'
        legend = plot_map(vectors, [class_of(p) for p in relative], options['map'],
                          f'{checkpoint.get("regime")} {Path(checkpoint_arg).name}: t-SNE of '
                          f'{len(vectors)} {what} in {Path(folder).name}')
        print(f'wrote the map to {options["map"]}'
              + (f' ({len(legend)} class folders)' if legend else ' (no class folders)'))
    if skipped:
        print(f'skipped {len(skipped)} unreadable files:\n  ' + '\n  '.join(skipped))
    return 0


if __name__ == '__main__':
    sys.exit(config_module.exit_on_user_error(main))
