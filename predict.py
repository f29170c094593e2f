"""Predict the class of audio files with a trained run.

    python predict.py runs/x clip.wav more_clips/ --out=predictions.csv
    python predict.py runs/x long_recording.flac --per_window=True --hop=0.25
    options: --out=predictions.csv --classifier=auto|head|probe --top_k=3
             --hop=0 (seconds between windows; 0 = half a clip) --per_window=False
             --device=auto --batch_size=64

Every file given, and every .wav/.flac/.ogg/.mp3 file under a folder given (recursively, sorted),
is prepared as the training clips were (decoded, mono, resampled to the model's rate,
rounded to 16 bits: audio.file_windows, the path embed.py shares) and cut into windows of
the model's clip length `--hop` apart. A file no longer than a clip is one window, the clip
training would read from it; a longer one is scored window by window, and its prediction
is the mean of its windows' class probabilities.

The classifier is the one results.json reports (--classifier=auto): the model's own head,
or for a self-supervised run the probe fitted on frozen features of its labelled clips,
saved with the run as probe.pt (`python evaluate.py <run> --classifier=probe` fits and
saves it for runs made before runs saved it). --classifier=head or probe overrides that.

The CSV has one row per file: path, status (ok, or why the file could not be read), window
(empty), start_seconds (empty), windows (how many were averaged), class, probability, and
the top-k classes and their probabilities (class_2, probability_2, ...). --per_window=True
adds after each file a row per window: its number, its start in seconds and its own top-k.
A file that cannot be read gets a row saying why; the others are still predicted, and the
exit status is then 1.
"""
import csv
import sys
from pathlib import Path

import torch

import audio
import config as config_module
import evaluation
import options
from config import UserError
from embed import clip_samples_of, hop_samples_of, run_in_batches
from evaluate import load as load_checkpoint

DEFAULTS = {'out': 'predictions.csv', 'classifier': 'auto', 'top_k': 3, 'hop': 0.0,
            'per_window': False, 'device': 'auto', 'batch_size': 64}
CLASSIFIERS = ('auto', 'head', 'probe')


def chosen_classifier(requested, regime):
    """'head' or 'probe': the one results.json reports (auto), or the one asked for."""
    if requested not in CLASSIFIERS:
        raise UserError(f'--classifier={requested}; valid: {", ".join(CLASSIFIERS)}')
    if requested == 'auto':
        return 'probe' if regime == 'selfsupervised' else 'head'
    return requested


def load_probe(checkpoint_file, epoch, device):
    """The probe saved with the run for this checkpoint; UserError when it has none or it
    was fitted on another epoch's weights."""
    path = evaluation.probe_path(checkpoint_file)
    if not path.exists():
        raise UserError(f'{path}: the run has no saved probe (runs made before probes were '
                        f'saved); fit and save it with: python evaluate.py {checkpoint_file} '
                        f'--classifier=probe')
    probe = evaluation.load_probe(path, device)
    if None not in (probe.epoch, epoch) and probe.epoch != epoch:
        raise UserError(f'{path} was fitted on the weights of epoch {probe.epoch}, but '
                        f'{checkpoint_file} holds epoch {epoch}; refit it with: python '
                        f'evaluate.py {checkpoint_file} --classifier=probe')
    return probe


class Classifier:
    """A run's model and the classifier that scores its windows: probabilities (B, classes)
    of a batch of prepared windows (B, clip)."""

    def __init__(self, run, classifier='auto', device='cpu'):
        self.device = torch.device(device)
        self.model, checkpoint, self.file = load_checkpoint(run, self.device)
        self.regime, self.config = checkpoint['regime'], checkpoint['config']
        self.epoch = checkpoint.get('epoch')
        self.kind = chosen_classifier(classifier, self.regime)
        self.classes = list(checkpoint['classes'])
        self.sample_rate = checkpoint['config']['sample_rate']
        self.clip_samples = clip_samples_of(checkpoint)
        self.amp_dtype = options.autocast_dtype(checkpoint['config'], self.device)
        self.probe = (load_probe(self.file, checkpoint.get('epoch'), self.device)
                      if self.kind == 'probe' else None)
        if self.probe is not None and self.probe.classes != self.classes:
            raise UserError(f'{evaluation.probe_path(self.file)}: its classes are not the '
                            f'model\'s; refit it with evaluate.py --classifier=probe')
        self.name = (evaluation.PROBE_NAMES[self.probe.kind] if self.probe is not None
                     else evaluation.head_name(self.regime))

    @torch.no_grad()
    def probabilities(self, windows):
        windows = windows.to(self.device)
        with torch.autocast(self.device.type, dtype=self.amp_dtype,
                            enabled=self.amp_dtype != torch.float32):
            if self.probe is None:
                logits = self.model(windows)['logits']
            else:
                logits = self.probe(self.model.embed(windows).float())
        return torch.softmax(logits.float(), dim=1).cpu()


def expand(arguments):
    """(path, None) for each file named and each audio file under each folder named, or
    (argument, why) for one that is neither."""
    found = []
    for argument in arguments:
        path = Path(argument).expanduser()
        if path.is_dir():
            files = audio.audio_files(path)
            found += [(str(f), None) for f in files] or [
                (argument, f'no audio files ({", ".join(audio.AUDIO_EXTENSIONS)}) in this folder')]
        elif path.exists():
            found.append((str(path), None))
        else:
            found.append((argument, 'no such file or directory'))
    return found


def predict(classifier, inputs, hop_samples, batch_size=64):
    """For each (path, error) of `inputs`, in order, a dict: path, error (None when read),
    and for a read file its windows' probabilities (n, classes), their starts (samples)
    and their mean (the file's prediction)."""
    results = [{'path': path, 'error': error} for path, error in inputs]
    starts = {}

    def sources():
        for number, result in enumerate(results):
            if result['error']:
                continue
            try:
                windows, starts[number] = audio.file_windows(
                    result['path'], classifier.sample_rate, classifier.clip_samples, hop_samples)
            except ValueError as error:
                result['error'] = str(error)
                continue
            yield number, windows

    for number, probabilities in run_in_batches(classifier.probabilities, sources(), batch_size):
        results[number].update(window_probabilities=probabilities, starts=starts.pop(number),
                               probabilities=probabilities.mean(0))
    return results


def top(probabilities, classes, k):
    """The columns class, probability, class_2, probability_2, ... of the k most probable."""
    values, indices = probabilities.topk(min(k, len(classes)))
    row = {}
    for rank, (value, index) in enumerate(zip(values.tolist(), indices.tolist()), 1):
        suffix = '' if rank == 1 else f'_{rank}'
        row[f'class{suffix}'] = classes[index]
        row[f'probability{suffix}'] = f'{value:.6f}'
    return row


def columns(top_k):
    ranked = [name for rank in range(2, top_k + 1) for name in (f'class_{rank}', f'probability_{rank}')]
    return ['path', 'status', 'window', 'start_seconds', 'windows', 'class', 'probability'] + ranked


def rows(result, classes, top_k, per_window, sample_rate):
    """The CSV rows of one file: its own, then (per_window) one per window."""
    if result['error']:
        return [{'path': result['path'], 'status': f'error: {result["error"]}'}]
    count = len(result['window_probabilities'])
    out = [{'path': result['path'], 'status': 'ok', 'windows': count,
            **top(result['probabilities'], classes, top_k)}]
    if per_window:
        for number, (probabilities, start) in enumerate(zip(result['window_probabilities'],
                                                            result['starts'].tolist())):
            out.append({'path': result['path'], 'status': 'ok', 'window': number,
                        'start_seconds': f'{start / sample_rate:.3f}',
                        **top(probabilities, classes, top_k)})
    return out


def parse_command_line(argv):
    usage = ('python predict.py <checkpoint or run directory> <audio files or folders>... '
             '[--out=predictions.csv] [--classifier=auto|head|probe] [--top_k=3] [--hop=0] '
             '[--per_window=False] [--device=auto] [--batch_size=64]')
    given = [a for a in argv if not a.startswith('--')]
    # a run, then any number (at least one) of files and folders
    plain, parsed = config_module.parse_command(argv, DEFAULTS, max(2, len(given)), usage, __doc__)
    return plain[0], plain[1:], parsed


def main(argv=None):
    run, arguments, opts = parse_command_line(sys.argv[1:] if argv is None else argv)
    if opts['top_k'] < 1:
        raise UserError('--top_k must be at least 1')
    if opts['batch_size'] < 1:
        raise UserError('--batch_size must be at least 1')
    classifier = Classifier(run, opts['classifier'], options.resolve_device(opts['device']))
    hop = hop_samples_of(opts['hop'], classifier.sample_rate, classifier.clip_samples)
    inputs = expand(arguments)
    print(f'predicting {len(inputs)} files with the {classifier.name} of {classifier.file} '
          f'({classifier.clip_samples / classifier.sample_rate:g} s windows '
          f'{hop / classifier.sample_rate:g} s apart)')
    results = predict(classifier, inputs, hop, opts['batch_size'])
    out = Path(opts['out']).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, 'w', newline='') as table:
        writer = csv.DictWriter(table, columns(min(opts['top_k'], len(classifier.classes))))
        writer.writeheader()
        for result in results:
            writer.writerows(rows(result, classifier.classes, opts['top_k'], opts['per_window'],
                                  classifier.sample_rate))
    failed = [r for r in results if r['error']]
    for result in results[:20]:
        print(f'  {result["path"]}: ' + (f'error: {result["error"]}' if result['error'] else
              f'{top(result["probabilities"], classifier.classes, 1)["class"]} '
              f'({result["probabilities"].max():.3f}, {len(result["starts"])} windows)'))
    if len(results) > 20:
        print(f'  ... and {len(results) - 20} more')
    print(f'wrote {out}: {len(results) - len(failed)} files predicted, {len(failed)} could not be read')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(config_module.exit_on_user_error(main))
