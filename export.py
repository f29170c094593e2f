"""Export a trained run's classifier to one ONNX file that runs with onnxruntime alone.

    python export.py runs/x --out=model.onnx
    python export.py runs/x --out=deploy/model.onnx --classifier=probe --quantize=True --check=test
    options: --out=model.onnx --classifier=auto|head|probe --quantize=False
             --check= (val or test: also compare the file with PyTorch on that split of the
               run's dataset, and report both accuracies) --data_root= --cache_dir=

The file's input `waveforms` is float32 (batch, clip samples): mono windows of the run's
clip length at its sample rate, prepared as predict.py prepares them (samples in [-1, 1),
rounded to 16 bits: a 16-bit file read as float already is); the batch has any size. Its
outputs are `probabilities` (batch, classes), the softmax of the classifier's logits (the
model's head, or the probe saved with the run; --classifier as in predict.py), and
`embedding` (batch, 512 * encoder_width), the encoder's features h that embed.py writes.
The front end is inside: spectograms.ExportableSpectrogram computes the same magnitude,
phase and mel channels with operators that ONNX has (the STFTs as strided convolutions with
windowed cos and sin kernels, the phase by an atan2 made of atan), so a caller needs numpy
and onnxruntime only. Exported with torch.onnx.export(dynamo=True) at opset 18.

Beside it, a JSON file of the same name (model.json beside model.onnx, the sidecar): the
class names in output order, the sample rate, the clip length, the window and hop
predict.py uses for longer files, the classifier, the run's commit (source.json, written by
runs since export.py) and config hash. After writing, the file is run with onnxruntime on a
few generated clips and compared with the PyTorch model; --check=test does so on the run's
test clips and adds the accuracies to the sidecar.

--quantize=True also writes model.int8.onnx (and model.int8.json): onnxruntime's dynamic int8
quantisation of the encoder's convolutions and the heads' layers; the front end stays
float32 (its kernels in int8 would blur the quiet bins the log channels read).

docs/export.md shows how to classify a wav file with numpy, soundfile and onnxruntime.
"""
import contextlib
import hashlib
import io
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnxscript.optimizer
import torch

import config as config_module
import rundir
from config import UserError
from embed import hop_samples_of
from model import Waveform
from predict import Classifier
from spectograms import ExportableSpectrogram

DEFAULTS = {'out': 'model.onnx', 'classifier': 'auto', 'quantize': False, 'check': '',
            'data_root': '', 'cache_dir': ''}
OPSET = 18                      # the dynamo exporter's lowest (it writes 18 when asked for 17)
CHECK_SPLITS = ('val', 'test')
FORMAT = 'clar-onnx-1'          # what the sidecar's fields mean; a change of them changes it


class Deployed(torch.nn.Module):
    """What the ONNX file computes: waveforms (B, clip samples) -> (probabilities (B,
    classes), embedding h (B, features)), with the model's weights and the exportable front
    end in place of its torch.stft one; the classifier is the model's head, or `probe`."""

    def __init__(self, model, probe=None):
        super().__init__()
        self.model, self.probe = model, probe
        self.frontend = (model.frontend if isinstance(model.frontend, Waveform) else
                         ExportableSpectrogram(model.frontend.sample_rate, model.frontend.frontend))

    def forward(self, waveforms):
        out = self.model.features(self.frontend(waveforms))
        logits = out['logits'] if self.probe is None else self.probe(out['h'])
        return torch.softmax(logits.float(), dim=1), out['h'].float()


def check_output(out):
    """The output path, refused unless it is a .onnx file in a folder that can be written
    (made if missing): before the minute an export takes."""
    out = Path(out).expanduser()
    if out.suffix != '.onnx':
        raise UserError(f'--out={out}: the output is a .onnx file (its .json goes beside it)')
    if out.is_dir():
        raise UserError(f'--out={out} is a folder; give a file name such as {out / "model.onnx"}')
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        probe = out.parent / f'.write-test-{os.getpid()}'
        probe.write_text('')
        probe.unlink()
    except OSError as error:
        raise UserError(f'--out={out}: cannot write in {out.parent} ({error.strerror}); '
                        f'choose a writable folder') from None
    return out


def config_hash(cfg):
    """sha256 of the run's configuration as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(cfg, sort_keys=True, separators=(',', ':'), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def file_hash(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def sidecar(classifier, onnx_file, quantized=False):
    """The JSON written beside the .onnx file: what a caller needs to use it."""
    cfg = classifier.config
    clip, rate = classifier.clip_samples, classifier.sample_rate
    source = rundir.read_json(classifier.file.parent / 'source.json') or {}
    return {
        'format': FORMAT, 'onnx': Path(onnx_file).name, 'onnx_sha256': file_hash(onnx_file),
        'input': {'name': 'waveforms', 'shape': ['batch', clip], 'dtype': 'float32',
                  'what': f'mono windows of {clip} samples at {rate} Hz, samples in [-1, 1) '
                          f'rounded to 16 bits'},
        'outputs': {'probabilities': {'shape': ['batch', len(classifier.classes)],
                                      'what': 'class probabilities, in the order of classes'},
                    'embedding': {'shape': ['batch', classifier.model.encoder.out_dim],
                                  'what': "the encoder's features h (embed.py's)"}},
        'classes': classifier.classes, 'sample_rate': rate, 'clip_samples': clip,
        'clip_seconds': clip / rate, 'window_samples': clip,
        'hop_samples': hop_samples_of(0, rate, clip),
        'windows': 'a file no longer than a clip is one window, zero-padded on the right; a '
                   'longer one is cut into whole windows hop_samples apart, and where audio is '
                   'left after them, one more window hop_samples on, zero-padded, if it holds '
                   "at least half a clip of audio; the file's probabilities are the mean of "
                   "its windows' (predict.py, audio.windows)",
        'classifier': classifier.kind, 'classifier_name': classifier.name,
        'quantized': 'int8 dynamic (onnxruntime), front end float32' if quantized else None,
        'regime': classifier.regime, 'encoder': cfg.get('encoder', 'resnet2d'),
        'frontend': cfg['frontend'], 'encoder_width': cfg['encoder_width'],
        'dataset': cfg['dataset'], 'run': str(classifier.file.parent),
        'checkpoint': classifier.file.name, 'epoch': classifier.epoch,
        'commit': source.get('commit'), 'commit_dirty': source.get('dirty'),
        'config_sha256': config_hash(cfg),
        'exporter': f'torch.onnx.export(dynamo=True), torch {torch.__version__}',
        'opset': OPSET, 'exported': time.strftime('%Y-%m-%d %H:%M:%S'),
    }


@contextlib.contextmanager
def quiet():
    """Neither the exporter's progress lines and warnings nor the quantiser's advice: the
    messages a user of export.py needs are its own."""
    level = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter('ignore')
            yield
    finally:
        logging.disable(level)


def export_onnx(model, out, clip_samples, probe=None):
    """Write the ONNX file of `model` (in eval mode, float32) with its head or `probe` to
    `out`, atomically: a file there is replaced only by a complete one."""
    example = torch.zeros(2, clip_samples)  # 2: a batch of 1 would fix the axis at 1
    example[:, ::7] = 0.1
    partial = out.with_name(f'.{out.name}.partial-{os.getpid()}')
    try:
        # the exporter's own optimiser is left out: its rewrite rules take x + 1e-10 (the
        # power floor) for x + 0 and drop it (onnxscript 0.7), so silence gave log(0);
        # constant folding alone keeps it
        with quiet():
            program = torch.onnx.export(
                Deployed(model, probe).eval(), (example,), input_names=['waveforms'],
                output_names=['probabilities', 'embedding'],
                dynamic_shapes={'waveforms': {0: torch.export.Dim('batch')}},
                opset_version=OPSET, dynamo=True, optimize=False, verbose=False)
        onnxscript.optimizer.fold_constants(program.model)
        onnxscript.optimizer.remove_unused_nodes(program.model)
        program.save(str(partial), external_data=False)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)


def quantize(onnx_file, out):
    """onnxruntime's dynamic int8 quantisation of `onnx_file` into `out`: the encoder's
    convolutions and the heads' layers. The front end (every node the encoder's input
    depends on) stays float32: its kernels in int8 would blur the quiet bins."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    graph = onnx.load(str(onnx_file)).graph
    producer = {output: node for node in graph.node for output in node.output}
    first = [n for n in graph.node if 'model.encoder.input_norm.running_mean' in n.input]
    front, wanted = set(), [first[0].input[0]] if first else []
    while wanted:
        node = producer.get(wanted.pop())
        if node is not None and node.name not in front:
            front.add(node.name)
            wanted += list(node.input)
    with quiet():       # it advises a pre-processing step that changed nothing here
        # unsigned weights: onnxruntime's CPU ConvInteger takes uint8 ones
        quantize_dynamic(str(onnx_file), str(out), weight_type=QuantType.QUInt8,
                         op_types_to_quantize=['Conv', 'MatMul', 'Gemm'],
                         nodes_to_exclude=sorted(front))


def session(onnx_file, threads=None):
    """An onnxruntime session on the CPU, with `threads` (default torch's) intra-op threads."""
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(onnx_file), options,
                                        providers=['CPUExecutionProvider'])


def run_session(onnx_session, waves, batch_size=64):
    """(probabilities, embeddings) as numpy of prepared windows (N, clip), in batches."""
    parts = [onnx_session.run(None, {'waveforms': np.ascontiguousarray(
        waves[start:start + batch_size], dtype=np.float32)})
        for start in range(0, len(waves), batch_size)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


@torch.no_grad()
def run_pytorch(classifier, waves, batch_size=64):
    """(probabilities, embeddings) as numpy from the PyTorch model, as predict.py and
    embed.py compute them."""
    waves = torch.as_tensor(waves)
    parts = [(classifier.probabilities(w), classifier.model.embed(w))
             for w in waves.split(batch_size)]
    return (torch.cat([p for p, _ in parts]).numpy(),
            torch.cat([h for _, h in parts]).float().numpy())


def agreement(onnx_outputs, torch_outputs, labels=None):
    """How the ONNX outputs agree with PyTorch's: the largest differences of probabilities
    and of embeddings, the largest embedding error relative to the clip's embedding
    (|h_onnx - h| / |h|, Euclidean), the fraction of clips given the same class; with
    labels, both accuracies."""
    (p_onnx, h_onnx), (p_torch, h_torch) = onnx_outputs, torch_outputs
    relative = np.linalg.norm(h_onnx - h_torch, axis=1) / np.maximum(
        np.linalg.norm(h_torch, axis=1), 1e-12)
    found = {'clips': len(p_onnx),
             'max_probability_difference': float(np.abs(p_onnx - p_torch).max()),
             'max_embedding_difference': float(np.abs(h_onnx - h_torch).max()),
             'max_embedding_relative_error': float(relative.max()),
             'same_class': float((p_onnx.argmax(1) == p_torch.argmax(1)).mean())}
    if labels is not None:
        found['accuracy_onnx'] = float((p_onnx.argmax(1) == labels).mean())
        found['accuracy_pytorch'] = float((p_torch.argmax(1) == labels).mean())
    return found


def generated_clips(clip_samples, sample_rate, count=4, seed=0):
    """A few prepared windows to compare the file with PyTorch on any run: tones, noise,
    a fade into silence, and silence."""
    rng = np.random.default_rng(seed)
    t = np.arange(clip_samples) / sample_rate
    clips = [0.3 * np.sin(2 * np.pi * f * t) + rng.normal(0, 0.01, clip_samples)
             for f in rng.uniform(100, 3000, max(1, count - 3))]
    fade = rng.normal(0, 0.1, clip_samples) * np.linspace(1, 0, clip_samples) ** 4
    clips += [rng.normal(0, 0.1, clip_samples), fade, np.zeros(clip_samples)]
    clips = np.stack(clips[:count]).astype(np.float32)
    return np.round(np.clip(clips, -1, 32767 / 32768) * 32768).astype(np.float32) / 32768


def split_clips(classifier, split, data_root='', cache_dir=''):
    """(windows (N, clip), labels (N,)) of a split of the run's dataset, as evaluate.py reads it."""
    from evaluate import load_data
    data = load_data(classifier.config, data_root, cache_dir)
    if list(data.classes) != classifier.classes:
        raise UserError(f'--check: the dataset\'s classes ({", ".join(data.classes[:5])}...) are '
                        f'not the model\'s; is --data_root the same dataset?')
    waves, labels, _ = data.batch(data.splits[split])
    return waves.numpy(), labels.numpy()


def main(argv=None):
    (run,), opts = config_module.parse_command(
        sys.argv[1:] if argv is None else argv, DEFAULTS, 1,
        'python export.py <run directory or checkpoint> [--out=model.onnx] '
        '[--classifier=auto|head|probe] [--quantize=False] [--check=|val|test] '
        '[--data_root=] [--cache_dir=]', __doc__)
    if opts['check'] and opts['check'] not in CHECK_SPLITS:
        raise UserError(f'--check={opts["check"]}; valid: {", ".join(CHECK_SPLITS)} (or empty: none)')
    out = check_output(opts['out'])
    classifier = Classifier(run, opts['classifier'], 'cpu')
    tests = {'generated': (generated_clips(classifier.clip_samples, classifier.sample_rate), None)}
    if opts['check']:           # read before the export: a dataset not found stops it
        tests[opts['check']] = split_clips(classifier, opts['check'], opts['data_root'],
                                           opts['cache_dir'])
    print(f'exporting the {classifier.name} of {classifier.file} ({len(classifier.classes)} '
          f'classes, {classifier.clip_samples} samples at {classifier.sample_rate} Hz) to {out}')
    export_onnx(classifier.model, out, classifier.clip_samples, classifier.probe)
    files = [(out, False)]
    if opts['quantize']:
        files.append((out.with_suffix('.int8.onnx'), True))
        quantize(out, files[-1][0])
    reference = {name: run_pytorch(classifier, waves) for name, (waves, _) in tests.items()}
    for path, quantized in files:
        onnx_session = session(path)
        found = {name: agreement(run_session(onnx_session, waves), reference[name], labels)
                 for name, (waves, labels) in tests.items()}
        info = sidecar(classifier, path, quantized)
        info['agreement_with_pytorch'] = found
        rundir.write_json(path.with_suffix('.json'), info)
        print(f'wrote {path} ({path.stat().st_size / 2**20:.2f} MiB) and '
              f'{path.with_suffix(".json").name}')
        for name, figures in found.items():
            accuracy = (f'; accuracy {figures["accuracy_onnx"]:.4f} (PyTorch '
                        f'{figures["accuracy_pytorch"]:.4f})' if 'accuracy_onnx' in figures else '')
            print(f'  {name} clips ({figures["clips"]}): same class {figures["same_class"]:.4f}, '
                  f'largest difference of probabilities {figures["max_probability_difference"]:.2e}, '
                  f'of embeddings {figures["max_embedding_difference"]:.2e} (relative '
                  f'{figures["max_embedding_relative_error"]:.1e}){accuracy}')
    return 0


if __name__ == '__main__':
    sys.exit(config_module.exit_on_user_error(main))
