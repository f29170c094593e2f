"""evaluate.py and embed.py on a tiny trained run (the `trained` fixture, conftest.py)."""
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch
import torchaudio

import audio
import config
import dataset
import embed
import evaluate
from tests.conftest import ROOT, tone_clip, write_class_folders


def test_evaluate_matches_results_and_writes_confusion(trained):
    root, run_dir, cfg = trained
    report = evaluate.evaluate(run_dir, ('val', 'test'), device='cpu', verbose=False)
    results = json.loads((run_dir / 'results.json').read_text())
    assert report['classifier'] == 'head'
    assert report['test_accuracy'] == pytest.approx(results['test_accuracy'], abs=1e-6)
    assert report['val_accuracy'] == pytest.approx(results['val_accuracy'], abs=1e-6)
    for split, clips in (('val', 6), ('test', 6)):
        saved = json.loads((run_dir / f'confusion_{split}.json').read_text())
        matrix = np.array(saved['matrix'])
        assert saved['classes'] == ['no', 'up', 'yes'] and matrix.shape == (3, 3)
        assert matrix.sum() == clips
        assert np.trace(matrix) / clips == pytest.approx(report[f'{split}_accuracy'])
        assert (run_dir / f'confusion_{split}.png').stat().st_size > 1000
    written = json.loads((run_dir / 'evaluation.json').read_text())
    assert set(written['splits']['test']['per_class_accuracy']) == {'no', 'up', 'yes'}
    assert written['results_json'] == {'test_accuracy': results['test_accuracy']}


def test_evaluate_probe_and_out_folder(trained, tmp_path):
    root, run_dir, cfg = trained
    out = tmp_path / 'eval'
    assert evaluate.main([str(run_dir / 'checkpoint_last.pt'), '--split=test', '--device=cpu',
                          '--classifier=probe', f'--out={out}', f'--data_root={root / "sc"}']) == 0
    written = json.loads((out / 'checkpoint_last-evaluation.json').read_text())
    assert written['classifier'] == 'probe' and 'linear classifier' in written['accuracy_from']
    assert 0 <= written['test_accuracy'] <= 1 and 'val' not in written['splits']
    assert (out / 'checkpoint_last-confusion_test.png').exists()
    # the best checkpoint's probe is the one results.json reports
    best = evaluate.evaluate(run_dir, ('test',), device='cpu', classifier='probe',
                             out=tmp_path / 'best', verbose=False)
    results = json.loads((run_dir / 'results.json').read_text())
    assert best['results_json'] == {'probe_test_accuracy': results['probe_test_accuracy']}
    assert best['test_accuracy'] == pytest.approx(results['probe_test_accuracy'], abs=1e-6)


def test_evaluate_errors_are_one_line(tmp_path):
    missing = tmp_path / 'no_such_run'
    result = subprocess.run([sys.executable, 'evaluate.py', str(missing)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert 'no such file or directory' in result.stderr
    (tmp_path / 'empty').mkdir()
    with pytest.raises(config.UserError, match='no checkpoint_best.pt'):
        evaluate.checkpoint_path(tmp_path / 'empty')
    with pytest.raises(config.UserError, match='unknown split'):
        evaluate.evaluate(tmp_path / 'empty', ('train', 'tset'))


def test_embed_command_writes_every_file_in_order(trained, tmp_path):
    root, run_dir, cfg = trained
    folder = write_class_folders(tmp_path / 'audio', per_class=2)      # wav, flac at 44.1/22 kHz
    (folder / 'notes.txt').write_text('not audio')
    out = tmp_path / 'out' / 'vectors.npy'
    assert embed.main([str(run_dir), str(folder), str(out), '--device=cpu', '--batch_size=4']) == 0
    vectors = np.load(out)
    paths = (tmp_path / 'out' / 'vectors.paths.txt').read_text().splitlines()
    expected = sorted(p.relative_to(folder).as_posix() for p in folder.rglob('*')
                      if p.suffix in ('.wav', '.flac', '.ogg'))
    assert paths == expected and len(paths) == 6
    assert vectors.shape == (6, 64) and vectors.dtype == np.float32   # 512 * 0.125
    assert np.isfinite(vectors).all()
    assert embed.main([str(run_dir), str(folder), str(tmp_path / 'v.npz'), '--device=cpu']) == 0
    archive = np.load(tmp_path / 'v.npz')
    np.testing.assert_allclose(archive['embeddings'], vectors, rtol=1e-5, atol=1e-5)
    assert list(archive['paths']) == paths


def test_embed_files_equals_the_training_data(trained):
    """Files embedded through embed_files get the features of the same clips as training
    read them from the waveform cache."""
    root, run_dir, cfg = trained
    model, checkpoint = embed.load_model(run_dir)
    data = dataset.load('speechcommands', cfg['data_root'], cfg['cache_dir'], 16000)
    indices = np.sort(data.splits['test'])[:4]
    waves, _, _ = data.batch(indices)
    expected = model.embed(waves).numpy()
    paths = [data.paths[i] for i in indices]
    clip_samples = embed.clip_samples_of(checkpoint)
    assert clip_samples == data.clip_samples == 16000
    got = embed.embed_files(model, paths, 16000, clip_samples, 'cpu', batch_size=3)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_embedding_at_another_rate_equals_the_resampled_clip(trained, tmp_path):
    root, run_dir, cfg = trained
    loaded = embed.load_model(run_dir)
    rng = np.random.default_rng(3)
    at_22k = np.stack([tone_clip(c, rng, 22050, seconds=1.3) for c in (0, 2)]).astype(np.float32)
    resampled = torchaudio.transforms.Resample(22050, 16000)(torch.from_numpy(at_22k))
    direct = embed.embed(loaded, at_22k, 22050)
    reference = embed.embed(loaded, resampled, 16000)
    assert direct.shape == (2, 64)
    np.testing.assert_allclose(direct, reference, rtol=1e-5, atol=1e-6)
    # cropped to the model's 1 s on the right: the tail does not matter
    cropped = embed.embed(loaded, [resampled[0, :16000].numpy()], 16000)
    np.testing.assert_allclose(cropped[0], reference[0], rtol=1e-5, atol=1e-6)
    # and the same clip read from a file at that rate
    soundfile.write(tmp_path / 'clip.wav', at_22k[0], 22050, subtype='FLOAT')
    from_file = embed.embed_files(loaded[0], [tmp_path / 'clip.wav'], 16000, 16000)
    np.testing.assert_allclose(from_file[0], reference[0], rtol=1e-5, atol=1e-6)


def test_run_in_batches_keeps_order_and_batch_size():
    """Windows of sources of any length are computed batch_size at a time, across sources,
    and each source gets back its own rows in order."""
    sizes = []

    def compute(batch):
        sizes.append(len(batch))
        return batch.sum(1, keepdim=True)

    lengths = [1, 7, 2, 1, 12, 3]
    sources = [(f's{i}', torch.arange(n * 5, dtype=torch.float32).reshape(n, 5) + 100 * i)
               for i, n in enumerate(lengths)]
    got = list(embed.run_in_batches(compute, iter(sources), 4))
    assert [key for key, _ in got] == [key for key, _ in sources]
    for (_, rows), (_, windows) in zip(got, sources):
        assert torch.equal(rows, windows.sum(1, keepdim=True))
    assert max(sizes) == 4 and sum(sizes) == sum(lengths) and sizes[:-1] == [4] * (len(sizes) - 1)


def _long_and_short_files(folder):
    """folder/long/speech.wav (3.3 s at 22.05 kHz) and folder/short/beep.flac (0.6 s)."""
    rng = np.random.default_rng(5)
    (folder / 'long').mkdir(parents=True)
    (folder / 'short').mkdir()
    long_clip = np.concatenate([tone_clip(c, rng, 22050, seconds=0.9) for c in (0, 1, 2)])
    soundfile.write(folder / 'long' / 'speech.wav', long_clip[:int(3.3 * 22050)], 22050,
                    subtype='FLOAT')
    soundfile.write(folder / 'short' / 'beep.flac', tone_clip(1, rng, 16000, seconds=0.4),
                    16000, subtype='PCM_16')
    return folder


def test_embed_windows_of_a_long_file(trained, tmp_path):
    """--pool=none: one row per window with its start; the rows are the model's features
    of the windows audio.file_windows cuts; --pool=mean: one row per file, their mean."""
    root, run_dir, cfg = trained
    folder = _long_and_short_files(tmp_path / 'audio')
    model, _ = embed.load_model(run_dir)
    assert embed.main([str(run_dir), str(folder), str(tmp_path / 'w.npz'), '--device=cpu',
                       '--pool=none', '--hop=0.5', '--batch_size=3']) == 0
    windows = np.load(tmp_path / 'w.npz')
    assert list(windows['paths']) == ['long/speech.wav'] * 6 + ['short/beep.flac']
    np.testing.assert_allclose(windows['starts'], [0, 0.5, 1.0, 1.5, 2.0, 2.5, 0])
    views, starts = audio.file_windows(folder / 'long' / 'speech.wav', 16000, 16000, 8000)
    assert starts.tolist() == [0, 8000, 16000, 24000, 32000, 40000]
    np.testing.assert_allclose(windows['embeddings'][:6], model.embed(views).numpy(),
                               rtol=1e-4, atol=1e-5)
    assert embed.main([str(run_dir), str(folder), str(tmp_path / 'm.npy'), '--device=cpu',
                       '--hop=0.5']) == 0
    pooled = np.load(tmp_path / 'm.npy')
    assert (tmp_path / 'm.paths.txt').read_text().splitlines() == ['long/speech.wav',
                                                                   'short/beep.flac']
    assert not (tmp_path / 'm.starts.npy').exists()
    np.testing.assert_allclose(pooled[0], windows['embeddings'][:6].mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pooled[1], windows['embeddings'][6], rtol=1e-4, atol=1e-5)
    # a file of one clip or less: the same row as the first clip training reads
    first = embed.embed_files(model, [folder / 'short' / 'beep.flac'], 16000, 16000)
    np.testing.assert_allclose(pooled[1], first[0], rtol=1e-4, atol=1e-5)
    assert embed.main([str(run_dir), str(folder), str(tmp_path / 'n.npy'), '--device=cpu',
                       '--pool=none']) == 0            # default hop: half a clip
    np.testing.assert_allclose(np.load(tmp_path / 'n.starts.npy'), windows['starts'])
    with pytest.raises(config.UserError, match='--pool=max; valid: mean, none'):
        embed.main([str(run_dir), str(folder), str(tmp_path / 'x.npy'), '--pool=max'])


def test_map_colours_points_by_class_folder(trained, tmp_path):
    rng = np.random.default_rng(0)
    vectors = np.concatenate([rng.normal(c * 3, 1, (8, 16)) for c in range(3)])
    labels = ['dog'] * 8 + ['cat'] * 8 + ['rain'] * 8
    assert embed.plot_map(vectors, labels, tmp_path / 'map.png') == ['cat', 'dog', 'rain']
    assert (tmp_path / 'map.png').stat().st_size > 5000
    assert embed.plot_map(vectors, [None] * 24, tmp_path / 'flat.png') == []
    assert (tmp_path / 'flat.png').exists()
    assert embed.class_of('dog/a.wav') == 'dog' and embed.class_of('a.wav') is None
    with pytest.raises(config.UserError, match='at least 3'):
        embed.plot_map(vectors[:2], ['a', 'b'], tmp_path / 'two.png')
    # from the command line, on class folders
    root, run_dir, cfg = trained
    folder = write_class_folders(tmp_path / 'audio', per_class=3)
    assert embed.main([str(run_dir), str(folder), str(tmp_path / 'v.npy'), '--device=cpu',
                       f'--map={tmp_path / "cli.png"}']) == 0
    assert (tmp_path / 'cli.png').stat().st_size > 5000


def test_probe_fitting_is_seeded_and_leaves_the_callers_random_state_alone():
    # the probes are fitted at every validation; they must not reseed the training's RNG
    import evaluation
    features = torch.randn(40, 8)
    labels = torch.arange(40) % 4
    for fit in (evaluation.fit_linear, evaluation.fit_mlp):
        torch.manual_seed(123)
        before = torch.get_rng_state()
        first = fit(features, labels, 4, 1e-3)
        assert torch.equal(torch.get_rng_state(), before)
        second = fit(features, labels, 4, 1e-3)
        assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(),
                                                     second.state_dict().values()))
