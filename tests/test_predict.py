"""predict.py on the tiny trained run (the `trained` fixture, conftest.py): long files by
windows, per-window rows, unreadable files, head and probe, and the probe saved with runs."""
import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch

import audio
import config
import evaluate
import evaluation
import predict
from tests.conftest import ROOT, tone_clip


def read_csv(path):
    with open(path, newline='') as table:
        return list(csv.DictReader(table))


def write_long_and_short(folder):
    """long.wav: 3.3 s at 22.05 kHz (three tones one after another); short.flac: 0.6 s."""
    rng = np.random.default_rng(7)
    folder.mkdir(parents=True, exist_ok=True)
    long_clip = np.concatenate([tone_clip(c, rng, 22050, seconds=0.9) for c in (0, 2, 1)])
    soundfile.write(folder / 'long.wav', long_clip[:int(3.3 * 22050)], 22050, subtype='FLOAT')
    soundfile.write(folder / 'short.flac', tone_clip(1, rng, 16000, seconds=0.4), 16000,
                    subtype='PCM_16')
    return folder / 'long.wav', folder / 'short.flac'


def test_a_long_file_is_the_mean_of_its_windows(trained, tmp_path):
    root, run_dir, cfg = trained
    long_file, short_file = write_long_and_short(tmp_path / 'audio')
    out = tmp_path / 'predictions.csv'
    assert predict.main([str(run_dir), str(long_file), str(short_file), f'--out={out}',
                         '--hop=0.5', '--per_window=True', '--device=cpu', '--batch_size=4']) == 0
    rows = read_csv(out)
    # the probabilities computed directly, window by window, with the model's head
    classifier = predict.Classifier(run_dir, 'head', 'cpu')
    windows, starts = audio.file_windows(long_file, 16000, 16000, 8000)
    with torch.no_grad():
        direct = torch.softmax(classifier.model(windows)['logits'], 1)
    assert len(direct) == 6
    mean = direct.mean(0)
    file_row, window_rows = rows[0], rows[1:7]
    assert file_row['path'] == str(long_file) and file_row['status'] == 'ok'
    assert file_row['windows'] == '6' and file_row['window'] == '' and file_row['start_seconds'] == ''
    order = mean.argsort(descending=True)
    classes = ['no', 'up', 'yes']
    assert [file_row['class'], file_row['class_2'], file_row['class_3']] == [classes[i] for i in order]
    np.testing.assert_allclose([float(file_row[k]) for k in ('probability', 'probability_2',
                                                              'probability_3')],
                               mean[order].numpy(), atol=2e-6)
    assert [r['window'] for r in window_rows] == [str(i) for i in range(6)]
    assert [r['start_seconds'] for r in window_rows] == ['0.000', '0.500', '1.000', '1.500',
                                                         '2.000', '2.500']
    for row, probabilities in zip(window_rows, direct):
        assert row['class'] == classes[int(probabilities.argmax())]
        assert float(row['probability']) == pytest.approx(float(probabilities.max()), abs=2e-6)
    assert rows[7]['path'] == str(short_file) and rows[7]['windows'] == '1'
    assert rows[8]['window'] == '0' and rows[8]['class'] == rows[7]['class'] and len(rows) == 9


def test_unreadable_files_get_a_row_and_the_others_are_predicted(trained, tmp_path):
    root, run_dir, cfg = trained
    long_file, short_file = write_long_and_short(tmp_path / 'audio')
    broken = tmp_path / 'audio' / 'broken.wav'
    broken.write_text('not audio')
    (tmp_path / 'empty').mkdir()
    out = tmp_path / 'predictions.csv'
    result = subprocess.run(
        [sys.executable, 'predict.py', str(run_dir), str(tmp_path / 'audio'),
         str(tmp_path / 'missing.wav'), str(tmp_path / 'empty'), f'--out={out}', '--device=cpu',
         '--top_k=2'], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert 'Traceback' not in result.stderr
    assert '2 files predicted, 3 could not be read' in result.stdout
    rows = {row['path']: row for row in read_csv(out)}
    assert list(read_csv(out)[0]) == ['path', 'status', 'window', 'start_seconds', 'windows',
                                      'class', 'probability', 'class_2', 'probability_2']
    assert rows[str(broken)]['status'].startswith('error: unreadable audio')
    assert rows[str(tmp_path / 'missing.wav')]['status'] == 'error: no such file or directory'
    assert rows[str(tmp_path / 'empty')]['status'].startswith('error: no audio files')
    for good in (long_file, short_file):
        assert rows[str(good)]['status'] == 'ok' and rows[str(good)]['class'] in ('no', 'up', 'yes')
    assert rows[str(broken)]['class'] == ''


def test_head_and_probe_give_the_accuracies_of_results_json(trained, tmp_path):
    """On the run's test clips (one window each, the clips evaluation reads) the head and
    the saved probe predict what results.json reports."""
    root, run_dir, cfg = trained
    results = json.loads((run_dir / 'results.json').read_text())
    saved = torch.load(run_dir / 'probe.pt', weights_only=True)
    assert saved['kind'] == 'linear' and saved['classes'] == ['no', 'up', 'yes']
    assert saved['mean'].shape == saved['std'].shape == (64,)
    assert saved['weight_decay'] == results['probe_weight_decay']
    assert saved['checkpoint'] == 'checkpoint_best.pt' and saved['epoch'] == results['best_epoch']
    sc = root / 'sc'
    tests = (sc / 'testing_list.txt').read_text().split()
    paths = [str(sc / t) for t in tests]
    accuracy = {}
    for classifier in ('auto', 'head', 'probe'):
        out = tmp_path / f'{classifier}.csv'
        assert predict.main([str(run_dir), *paths, f'--out={out}', '--device=cpu',
                             f'--classifier={classifier}']) == 0
        rows = read_csv(out)
        assert [r['path'] for r in rows] == paths
        accuracy[classifier] = np.mean([r['class'] == t.split('/')[0] for r, t in zip(rows, tests)])
    assert accuracy['auto'] == pytest.approx(results['test_accuracy'])
    assert accuracy['head'] == pytest.approx(results['test_accuracy'])
    assert accuracy['probe'] == pytest.approx(results['probe_test_accuracy'])
    assert predict.chosen_classifier('auto', 'clar') == 'head'
    assert predict.chosen_classifier('auto', 'selfsupervised') == 'probe'
    with pytest.raises(config.UserError, match='--classifier=best; valid: auto, head, probe'):
        predict.chosen_classifier('best', 'clar')


def test_evaluate_fits_and_saves_the_probe_of_an_older_run(trained, tmp_path):
    root, run_dir, cfg = trained
    old_run = tmp_path / 'old_run'
    shutil.copytree(run_dir, old_run)
    (old_run / 'probe.pt').unlink()
    with pytest.raises(config.UserError, match='no saved probe.*evaluate.py'):
        predict.Classifier(old_run, 'probe', 'cpu')
    evaluate.evaluate(old_run, ('test',), device='cpu', classifier='probe', out=tmp_path / 'eval',
                      verbose=False)
    refitted = evaluation.load_probe(old_run / 'probe.pt')
    original = evaluation.load_probe(run_dir / 'probe.pt')
    assert refitted.epoch == original.epoch and refitted.kind == 'linear'
    assert refitted.weight_decay == original.weight_decay
    # the same fit on the same features; L-BFGS with almost no weight decay carries the
    # features' float rounding (1e-7 here) into the weights at about 1e-2
    sc = root / 'sc'
    model = predict.Classifier(run_dir, 'head', 'cpu').model
    waves = torch.stack([audio.quantize(audio.read_clip(str(sc / t), 16000, 16000))
                         for t in (sc / 'testing_list.txt').read_text().split()])
    with torch.no_grad():
        features = model.embed(waves)
        again, before = torch.softmax(refitted(features), 1), torch.softmax(original(features), 1)
    np.testing.assert_allclose(again.numpy(), before.numpy(), atol=0.05)
    assert torch.equal(again.argmax(1), before.argmax(1))
    assert predict.Classifier(old_run, 'probe', 'cpu').probe is not None
    # a probe fitted on other weights than the checkpoint's is refused
    state = torch.load(old_run / 'probe.pt', weights_only=True)
    torch.save({**state, 'epoch': state['epoch'] + 5}, old_run / 'probe.pt')
    with pytest.raises(config.UserError, match='fitted on the weights of epoch'):
        predict.Classifier(old_run, 'probe', 'cpu')


def test_bad_options_are_one_line_errors(trained, tmp_path):
    root, run_dir, cfg = trained
    with pytest.raises(config.UserError, match='usage: python predict.py'):
        predict.main([str(run_dir)])
    with pytest.raises(config.UserError, match='--top_k must be at least 1'):
        predict.main([str(run_dir), 'a.wav', '--top_k=0'])
    with pytest.raises(config.UserError, match='unknown argument'):
        predict.main([str(run_dir), 'a.wav', '--windows=3'])
