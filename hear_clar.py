"""The HEAR 2021 API for an encoder trained here, so that hear-eval-kit (and any tool that
speaks the API) can evaluate it on its tasks:

    import hear_clar
    model = hear_clar.load_model('runs/x')              # or runs/x/checkpoint_best.pt
    embeddings, timestamps = hear_clar.get_timestamp_embeddings(audio, model)
    scenes = hear_clar.get_scene_embeddings(audio, model)

`audio` is (n_sounds, n_samples), float in [-1, 1], at model.sample_rate (the rate the run
trained at, 16 kHz by default), on the model's device. The embedding is the encoder's
feature h (512 * encoder_width values), of clip-length windows (the run's clip, 1 s for
speech) prepared as training prepared its clips: rounded to 16 bits like the waveform cache.

Timestamp embeddings: one window centred on each timestamp, `hop_ms` apart (50 ms, at most
50), the first at 0 ms and the last within one hop of the end (never past it); a window
reaching past either end of the sound is zero-padded there. Timestamps are the windows'
centres in milliseconds, exact multiples of the hop (which is a whole number of samples).

Scene embeddings: the mean of the embeddings of clip-length windows half a clip apart from
the start (audio.windows: the same windows, and the same vector, as `embed.py --pool=mean`).

Memory: windows are cut from one zero-padded copy of the audio as views and sent through
the encoder `batch_size` (128) at a time, so that any length (20 minutes and more) needs
the audio, one batch and the embeddings, never every window at once. Both options go to
load_model (hear-eval-kit: --model-options '{"hop_ms": 25, "batch_size": 64}').
"""
import torch

from audio import quantize, windows
from checkpoint import load_model as load_checkpoint_model
from config import UserError
from embed import clip_samples_of, run_in_batches
from rundir import checkpoint_path

HOP_MS = 50.0           # HEAR asks for timestamps at most 50 ms apart
BATCH_SIZE = 128        # windows per pass through the encoder


class HearModel(torch.nn.Module):
    """A run's front end and encoder with what the HEAR API asks of a model: sample_rate,
    scene_embedding_size and timestamp_embedding_size; and how it cuts windows."""

    def __init__(self, frontend, encoder, sample_rate, clip_samples, hop_ms=HOP_MS,
                 batch_size=BATCH_SIZE):
        super().__init__()
        if not 0 < hop_ms <= HOP_MS:
            raise ValueError(f'hop_ms must be in (0, {HOP_MS:g}], got {hop_ms}')
        if batch_size < 1:
            raise ValueError(f'batch_size must be at least 1, got {batch_size}')
        self.frontend, self.encoder = frontend, encoder
        self.sample_rate = int(sample_rate)
        self.scene_embedding_size = self.timestamp_embedding_size = int(encoder.out_dim)
        self.clip_samples = int(clip_samples)
        # a whole number of samples, so that timestamps never drift from the windows
        self.hop_samples = max(1, round(hop_ms * sample_rate / 1000))
        self.batch_size = int(batch_size)

    @property
    def device(self):
        return next(self.encoder.parameters()).device

    @torch.no_grad()
    def embed(self, windows):
        """h of a batch of prepared windows (B, clip_samples), float32."""
        return self.encoder(self.frontend(windows)).float()


def load_model(model_file_path='', hop_ms=HOP_MS, batch_size=BATCH_SIZE):
    """A HearModel (eval mode, on the CPU) from a run directory of this project (its
    checkpoint_best.pt) or a checkpoint file. No weights ship with the repository: train a
    run first (train.py, selfsupervised.py or supervised.py) and pass its directory."""
    if not model_file_path:
        raise ValueError('hear_clar.load_model needs a trained run: pass a run directory of this '
                         'project (e.g. runs/clar-sc09-0.1-...) or its checkpoint_best.pt; no '
                         'weights ship with the repository (train one with train.py)')
    file = checkpoint_path(model_file_path)
    try:
        model, checkpoint = load_checkpoint_model(file, 'cpu')
    except Exception as error:          # torch.load and a foreign file: many types
        raise UserError(f'{file}: cannot load it as a checkpoint of this project '
                        f'({type(error).__name__}: {error})') from None
    hear = HearModel(model.frontend, model.encoder, checkpoint['config']['sample_rate'],
                     clip_samples_of(checkpoint), hop_ms, batch_size)
    return hear.eval()


def _prepared(audio, model):
    """The batch checked, as float32 on the model's device, rounded to 16 bits."""
    audio = torch.as_tensor(audio)
    if audio.dim() != 2 or audio.shape[1] < 1:
        raise ValueError(f'audio must be (n_sounds, n_samples) with n_samples >= 1, got shape '
                         f'{tuple(audio.shape)}')
    return quantize(audio.to(model.device))


def timestamps_of(n_samples, model):
    """The centres (samples) of the timestamp windows of a sound: 0, hop, 2 hop, ... up to
    the last sample."""
    return torch.arange(0, n_samples, model.hop_samples)


def get_timestamp_embeddings(audio, model):
    """((n_sounds, n_timestamps, timestamp_embedding_size) float32 embeddings,
    (n_sounds, n_timestamps) timestamps in ms): one clip-length window centred on each
    timestamp, zero-padded past the ends of the sound."""
    waves = _prepared(audio, model)
    n_sounds, n_samples = waves.shape
    centres = timestamps_of(n_samples, model)
    half = model.clip_samples // 2
    # window k spans [centre_k - half, centre_k - half + clip): views of one padded copy
    padded = torch.nn.functional.pad(waves, (half, model.clip_samples - half))
    frames = padded.unfold(1, model.clip_samples, model.hop_samples)[:, :len(centres)]
    rows = run_in_batches(model.embed, ((i, frames[i]) for i in range(n_sounds)),
                          model.batch_size)
    embeddings = torch.stack([vectors for _, vectors in rows])
    milliseconds = (centres.double() * 1000 / model.sample_rate).float().to(waves.device)
    return embeddings, milliseconds.expand(n_sounds, -1).contiguous()


def get_scene_embeddings(audio, model):
    """(n_sounds, scene_embedding_size) float32: the mean embedding of clip-length windows
    half a clip apart (a sound shorter than a clip is one zero-padded window)."""
    waves = _prepared(audio, model)
    hop = max(1, model.clip_samples // 2)
    sources = ((i, windows(wave, model.clip_samples, hop)[0]) for i, wave in enumerate(waves))
    return torch.stack([vectors.mean(0) for _, vectors in
                        run_in_batches(model.embed, sources, model.batch_size)])
