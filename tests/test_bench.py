import json
import subprocess
import sys

from tests.conftest import ROOT


def test_bench_prints_every_line_as_json():
    result = subprocess.run(
        [sys.executable, 'bench.py', '--seconds=0.01', '--encoder_width=0.125', '--batch_size=4',
         '--augment_batch=4', '--cache_clips=300', '--baselines=False'],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = {}
    for text in result.stdout.splitlines():
        if text.startswith('{'):
            line = json.loads(text)
            lines[line['name']] = line
    import augmentation
    expected = {'cache_read', 'augment/configured', 'frontend', 'model_step', 'clar_step',
                'supervised_step', 'selfsupervised_step', 'clar_step_over_model_step', 'memory',
                'clar_step/resnet1d', 'clar_step/resnet2d', 'encoder_1d_over_2d',
                *(f'augment/{name}' for name in augmentation.NAMES)}
    assert expected <= set(lines)
    assert all(lines[name]['clips_per_second'] > 0 for name in expected - {'memory'})
    ratio = lines['clar_step_over_model_step']['ratio']
    assert ratio == round(lines['clar_step']['clips_per_second'] / lines['model_step']['clips_per_second'], 3) or abs(
        ratio - lines['clar_step']['clips_per_second'] / lines['model_step']['clips_per_second']) < 0.01
    encoders = {name: lines[f'clar_step/{name}']['clips_per_second'] for name in ('resnet1d', 'resnet2d')}
    assert abs(lines['encoder_1d_over_2d']['ratio'] - encoders['resnet2d'] / encoders['resnet1d']) < 0.01 * max(
        1, encoders['resnet2d'] / encoders['resnet1d'])
    assert lines['memory']['rssanon_mib'] > 0
    assert 'clar_step' in result.stdout.split('name ')[-1]        # the readable table


def test_per_clip_baselines_are_timed(monkeypatch):
    import torch
    import torchaudio  # its per-clip pitch shift takes seconds: stand in a cheap one
    import bench
    monkeypatch.setattr(torchaudio.functional, 'pitch_shift', lambda clip, rate, steps: clip.clone())
    speeds = bench.baseline_speeds(0.1 * torch.randn(4, 16000), torch.device('cpu'), 0.05)
    assert set(speeds) == {'pitch_shift', 'time_stretch'} and min(speeds.values()) > 0
