"""export.py on the tiny trained run (the `trained` fixture, conftest.py): the ONNX file
against the PyTorch model (head, probe, a 1D encoder; batches of 1 and 17; the fixture's
clips and, when ../shared/data/fsdd is there, 100 real recordings), its sidecar, bad input,
and the numpy-only example of the README, run where torch cannot be imported."""
import hashlib
import importlib.metadata
import json
import re
import subprocess
import sys

import numpy as np
import onnx
import pytest
import soundfile
import torch

import audio
import checkpoint
import config
import export
import model as model_module
import predict
from tests.conftest import ROOT, tone_clip

# The ONNX front end rounds differently from torch.stft (a direct sum, not an FFT). Where a
# bin's phase is within rounding of +-pi it may land on the other side (a 2 pi jump at that
# one point, as between a CPU and a GPU); a barely trained model is most sensitive to that.
# Measured (docs/export.md): probabilities differ by up to 0.010 and a clip's embedding by up
# to 8.6 % (|h_onnx - h| / |h|) with this file's 1-epoch fixture model on 100 FSDD clips; with
# a trained FSDD run on its 300 test clips by 0.007 (head; 0.028 with its probe, whose
# standardisation scales some features up) and 1.1 %; the median clip's embedding by under
# 1e-3. Where the PyTorch model's two most probable classes are closer than CLOSE_CALL,
# rounding anywhere can swap them: the classes must agree elsewhere.
PROBABILITY_ATOL = 0.05
EMBEDDING_MAX_RELATIVE, EMBEDDING_MEDIAN_RELATIVE = 0.2, 1e-3
CLOSE_CALL = 0.02
FSDD = next((p / 'shared' / 'data' / 'fsdd' for p in ROOT.parents
             if (p / 'shared' / 'data' / 'fsdd' / 'recordings').is_dir()), None)


@pytest.fixture(scope='module')
def exported(trained, tmp_path_factory):
    """The head of the trained run exported, with --check=test."""
    root, run_dir, cfg = trained
    out = tmp_path_factory.mktemp('export') / 'deploy' / 'model.onnx'
    assert export.main([str(run_dir), f'--out={out}', '--check=test']) == 0
    return out


def prepared(paths):
    """The first window of each file, as predict.py and embed.py prepare it."""
    return np.stack([audio.file_windows(p, 16000, 16000, 8000)[0][0].numpy() for p in paths])


def assert_agrees(onnx_outputs, torch_outputs, every_class=True):
    """The tolerances above; every clip's class the same (every_class) or every clip's whose
    top two classes are at least CLOSE_CALL apart, which must then be most clips."""
    (p_onnx, h_onnx), (p_torch, h_torch) = onnx_outputs, torch_outputs
    assert p_onnx.shape == p_torch.shape and h_onnx.shape == h_torch.shape
    np.testing.assert_allclose(p_onnx, p_torch, atol=PROBABILITY_ATOL, rtol=0)
    relative = np.linalg.norm(h_onnx - h_torch, axis=1) / np.linalg.norm(h_torch, axis=1)
    assert relative.max() < EMBEDDING_MAX_RELATIVE and np.median(relative) < EMBEDDING_MEDIAN_RELATIVE
    top_two = np.sort(p_torch, axis=1)[:, -2:]
    decided = (np.ones(len(p_torch), bool) if every_class else
               top_two[:, 1] - top_two[:, 0] >= CLOSE_CALL)
    assert decided.mean() > 0.5
    assert (p_onnx.argmax(1) == p_torch.argmax(1))[decided].all()


def test_the_file_agrees_with_pytorch_on_the_fixture_clips_in_batches_of_1_and_17(trained,
                                                                                   exported):
    root, run_dir, cfg = trained
    paths = sorted((root / 'sc').glob('*/*.wav'))
    clips = np.concatenate([prepared(paths), export.generated_clips(16000, 16000)])
    assert len(clips) == 41     # 36 clips, the fixture's background noise, 4 generated (1 silent)
    classifier = predict.Classifier(run_dir, 'head', 'cpu')
    reference = export.run_pytorch(classifier, clips)
    session = export.session(exported)
    assert_agrees(export.run_session(session, clips, batch_size=64), reference)
    for batch in (1, 17):
        probabilities, embeddings = session.run(None, {'waveforms': clips[:batch]})
        assert probabilities.shape == (batch, 3) and embeddings.shape == (batch, 64)
        assert_agrees((probabilities, embeddings), (reference[0][:batch], reference[1][:batch]))
    # the embedding is embed.py's
    import embed
    np.testing.assert_allclose(embed.embed_waves(classifier.model, torch.from_numpy(clips)),
                               reference[1], atol=1e-5)


def test_the_sidecar_says_what_a_caller_needs(trained, exported):
    root, run_dir, cfg = trained
    info = json.loads(exported.with_suffix('.json').read_text())
    saved = checkpoint.load(run_dir / 'checkpoint_best.pt')
    assert info['classes'] == ['no', 'up', 'yes'] == list(saved['classes'])
    assert (info['sample_rate'], info['clip_samples'], info['window_samples'],
            info['hop_samples']) == (16000, 16000, 16000, 8000)
    assert info['classifier'] == 'head' and info['epoch'] == saved['epoch']
    canonical = json.dumps(saved['config'], sort_keys=True, separators=(',', ':'))
    assert info['config_sha256'] == hashlib.sha256(canonical.encode()).hexdigest()
    head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT, capture_output=True, text=True)
    if head.returncode == 0:            # the run recorded the commit it started from
        assert info['commit'] == head.stdout.strip()
        assert json.loads((run_dir / 'source.json').read_text())['commit'] == info['commit']
    assert info['onnx_sha256'] == hashlib.sha256(exported.read_bytes()).hexdigest()
    graph = onnx.load(str(exported))
    assert [o.version for o in graph.opset_import if o.domain == ''] == [info['opset']] == [18]
    (given,) = graph.graph.input
    assert given.name == 'waveforms'
    assert [d.dim_param or d.dim_value for d in given.type.tensor_type.shape.dim] == ['batch', 16000]
    assert [o.name for o in graph.graph.output] == ['probabilities', 'embedding']
    # --check=test: the run's test clips, with the accuracy results.json reports
    results = json.loads((run_dir / 'results.json').read_text())
    checked = info['agreement_with_pytorch']['test']
    assert checked['clips'] == 6 and checked['same_class'] == 1.0
    assert checked['accuracy_onnx'] == checked['accuracy_pytorch'] == pytest.approx(
        results['test_accuracy'])
    assert info['agreement_with_pytorch']['generated']['clips'] == 4


def test_the_probe_exports_and_agrees(trained, tmp_path):
    root, run_dir, cfg = trained
    out = tmp_path / 'probe.onnx'
    assert export.main([str(run_dir), f'--out={out}', '--classifier=probe']) == 0
    assert json.loads(out.with_suffix('.json').read_text())['classifier'] == 'probe'
    clips = prepared(sorted((root / 'sc').glob('*/*.wav')))
    classifier = predict.Classifier(run_dir, 'probe', 'cpu')
    reference = export.run_pytorch(classifier, clips)
    head = export.run_pytorch(predict.Classifier(run_dir, 'head', 'cpu'), clips)
    assert np.abs(reference[0] - head[0]).max() > 0.05     # another classifier than the head
    assert_agrees(export.run_session(export.session(out), clips), reference)


def test_a_run_with_the_1d_encoder_exports(trained, tmp_path):
    """A run directory whose checkpoint holds a resnet1d model (its weights as initialised:
    what is tested is the export, not the training)."""
    root, run_dir, cfg = trained
    run_1d = tmp_path / 'run_1d'
    run_1d.mkdir()
    saved = checkpoint.load(run_dir / 'checkpoint_best.pt')
    saved['config'] = {**saved['config'], 'encoder': 'resnet1d'}
    torch.manual_seed(0)
    saved['model'] = model_module.build(saved['config'], 3, saved['regime']).state_dict()
    torch.save(saved, run_1d / 'checkpoint_best.pt')
    out = tmp_path / 'one_d.onnx'
    assert export.main([str(run_1d), f'--out={out}', '--classifier=head']) == 0
    assert json.loads(out.with_suffix('.json').read_text())['encoder'] == 'resnet1d'
    assert json.loads(out.with_suffix('.json').read_text())['commit'] is None   # no source.json
    clips = prepared(sorted((root / 'sc').glob('*/*.wav'))[:5])
    assert_agrees(export.run_session(export.session(out), clips),
                  export.run_pytorch(predict.Classifier(run_1d, 'head', 'cpu'), clips))


@pytest.mark.skipif(FSDD is None, reason='no ../shared/data/fsdd')
def test_the_file_agrees_with_pytorch_on_100_fsdd_recordings(trained, exported):
    """Real speech, 8 kHz resampled, with its silences: the fixture model's classes (tones)
    mean nothing there, and a third of its probabilities are near ties; the numbers must
    still agree."""
    root, run_dir, cfg = trained
    paths = sorted((FSDD / 'recordings').glob('*.wav'))[::30][:100]
    assert len(paths) == 100
    clips = prepared(paths)
    assert_agrees(export.run_session(export.session(exported), clips),
                  export.run_pytorch(predict.Classifier(run_dir, 'head', 'cpu'), clips),
                  every_class=False)


def test_a_bad_run_or_output_is_refused_with_a_message(trained, tmp_path):
    root, run_dir, cfg = trained
    with pytest.raises(config.UserError, match='no such file or directory'):
        export.main([str(tmp_path / 'no_run'), f'--out={tmp_path}/m.onnx'])
    (tmp_path / 'empty').mkdir()
    with pytest.raises(config.UserError, match='no checkpoint_best.pt'):
        export.main([str(tmp_path / 'empty'), f'--out={tmp_path}/m.onnx'])
    (tmp_path / 'a_file').write_text('')
    with pytest.raises(config.UserError, match='cannot write in'):
        export.main([str(run_dir), f'--out={tmp_path}/a_file/m.onnx'])
    with pytest.raises(config.UserError, match='is a .onnx file'):
        export.main([str(run_dir), f'--out={tmp_path}/m.txt'])
    with pytest.raises(config.UserError, match='--check=train; valid: val, test'):
        export.main([str(run_dir), f'--out={tmp_path}/m.onnx', '--check=train'])
    with pytest.raises(config.UserError, match='--classifier=best'):
        export.main([str(run_dir), f'--out={tmp_path}/m.onnx', '--classifier=best'])
    assert not list(tmp_path.glob('*.onnx'))
    # from the command line: one line, exit status 2, no traceback
    result = subprocess.run([sys.executable, 'export.py', str(tmp_path / 'no_run')], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert 'no such file or directory' in result.stderr


def site_without_torch(folder):
    """A folder of links to numpy, soundfile, onnxruntime and what they need, and nothing
    else from the environment: with `python -S` (no site-packages) it is the whole path."""
    folder.mkdir()
    names, wanted = set(), ['numpy', 'soundfile', 'onnxruntime']
    while wanted:
        name = re.split(r'[\s<>=!~;\[(]', wanted.pop(), maxsplit=1)[0].lower().replace('_', '-')
        if name in names:
            continue
        names.add(name)
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:    # for another Python or platform
            continue
        wanted += [r for r in distribution.requires or [] if 'extra ==' not in r]
        for file in distribution.files or []:
            top = file.parts[0]
            source = distribution.locate_file(top)
            if top != '..' and not (folder / top).exists() and source.exists():
                (folder / top).symlink_to(source)
    assert 'torch' not in names
    return folder


def docs_example():
    """The fenced Python block of the README (docs/export.md explains it)."""
    text = (ROOT / 'README.md').read_text()
    (block,) = re.findall(r'```python\n(.*?)```', text, re.S)
    return block


def test_the_docs_example_classifies_a_long_file_as_predict_does_without_torch(trained, exported,
                                                                             tmp_path):
    root, run_dir, cfg = trained
    code = docs_example()
    assert len(code.strip().splitlines()) <= 20
    (tmp_path / 'example.py').write_text(code)
    rng = np.random.default_rng(3)
    long_file, short_file = tmp_path / 'long.wav', tmp_path / 'short.wav'
    soundfile.write(long_file, np.concatenate([tone_clip(c, rng, seconds=0.9) for c in (2, 0, 2)])
                    [:int(3.3 * 16000)], 16000, subtype='PCM_16')
    soundfile.write(short_file, tone_clip(1, rng, seconds=0.4), 16000, subtype='PCM_16')
    environment = {'PYTHONPATH': str(site_without_torch(tmp_path / 'site')), 'PATH': '/usr/bin:/bin'}
    no_torch = subprocess.run([sys.executable, '-S', '-c', 'import torch'], cwd=tmp_path,
                              env=environment, capture_output=True, text=True, timeout=60)
    assert "No module named 'torch'" in no_torch.stderr
    classifier = predict.Classifier(run_dir, 'head', 'cpu')
    expected = predict.predict(classifier, [(str(long_file), None), (str(short_file), None)], 8000)
    for wav, result in zip((long_file, short_file), expected):
        ran = subprocess.run([sys.executable, '-S', 'example.py', str(exported), str(wav)],
                             cwd=tmp_path, env=environment, capture_output=True, text=True,
                             timeout=120)
        assert ran.returncode == 0, ran.stderr[-2000:]
        name, probability, windows = ran.stdout.split(maxsplit=2)
        mean = result['probabilities']
        assert name == classifier.classes[int(mean.argmax())]
        assert float(probability) == pytest.approx(float(mean.max()), abs=PROBABILITY_ATOL)
        assert windows.strip() == f'({len(result["starts"])} windows)'
    assert len(expected[0]['starts']) == 6 and len(expected[1]['starts']) == 1
    # a file at another rate is refused with a message
    soundfile.write(tmp_path / 'slow.wav', tone_clip(0, rng, 8000), 8000, subtype='PCM_16')
    ran = subprocess.run([sys.executable, '-S', 'example.py', str(exported), 'slow.wav'],
                         cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 1 and 'resample it to 16000 Hz' in ran.stderr


def test_int8_quantisation_writes_a_smaller_file_that_still_classifies(trained, tmp_path):
    root, run_dir, cfg = trained
    out = tmp_path / 'model.onnx'
    assert export.main([str(run_dir), f'--out={out}', '--quantize=True']) == 0
    small = out.with_suffix('.int8.onnx')
    info = json.loads(small.with_suffix('.json').read_text())
    assert info['quantized'] and info['onnx'] == 'model.int8.onnx'
    nodes = onnx.load(str(small)).graph.node
    assert sum(n.op_type == 'ConvInteger' for n in nodes) == 20        # the encoder's
    front_end = {n.op_type for n in nodes if {'frontend.fourier_kernel', 'frontend.mel_kernel'}
                 & set(n.input)}
    assert front_end == {'Conv'} and 'MatMul' in {n.op_type for n in nodes}   # and mel, float
    assert small.stat().st_size < out.stat().st_size
    clips = prepared(sorted((root / 'sc').glob('*/*.wav')))
    probabilities, _ = export.run_session(export.session(small), clips)
    reference, _ = export.run_pytorch(predict.Classifier(run_dir, 'head', 'cpu'), clips)
    assert (probabilities.argmax(1) == reference.argmax(1)).mean() >= 0.9
    assert np.abs(probabilities - reference).max() < 0.1
