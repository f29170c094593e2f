import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def test_bench_prints_every_line_as_json():
    result = subprocess.run(
        [sys.executable, 'bench.py', '--seconds=0.01', '--encoder_width=0.125', '--batch_size=4',
         '--augment_batch=4', '--cache_clips=300', '--baselines=False', '--pool_clips=500',
         '--onnx_batch_size=4'],
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
                'clar_step/resnet1d', 'clar_step/resnet2d', 'encoder_1d_over_2d', 'clar_step/pool',
                'clar_step/pseudo_off', 'clar_step/pseudo', 'clar_step/pseudo_ema',
                *(f'augment/{name}' for name in augmentation.NAMES),
                *(f'{file}/{what}' for file in ('onnx', 'onnx_int8')
                  for what in ('latency', 'batch', 'file'))}
    assert expected <= set(lines)
    files = {'onnx/file', 'onnx_int8/file'}
    assert all(lines[name]['clips_per_second'] > 0 for name in expected - {'memory'} - files)

    def close(ratio, fast, slow):
        """ratio == fast / slow, given speeds printed to 0.1 clips/s and ratios to 3 decimals."""
        return abs(ratio - fast / slow) <= ratio * (0.05 / fast + 0.05 / slow) + 0.001
    speeds = {name: lines[name]['clips_per_second'] for name in
              ('clar_step', 'model_step', 'clar_step/resnet1d', 'clar_step/resnet2d')}
    assert close(lines['clar_step_over_model_step']['ratio'], speeds['clar_step'], speeds['model_step'])
    assert close(lines['encoder_1d_over_2d']['ratio'], speeds['clar_step/resnet2d'],
                 speeds['clar_step/resnet1d'])
    for name in ('clar_step/pseudo', 'clar_step/pseudo_ema'):
        assert close(lines[name]['ratio'], lines[name]['clips_per_second'],
                     lines['clar_step/pseudo_off']['clips_per_second'])
    assert lines['memory']['rssanon_mib'] > 0 and lines['memory']['pool_clips'] == 500
    # onnxruntime against PyTorch eager: speeds over speeds, latencies printed to 0.01 ms
    for file in ('onnx', 'onnx_int8'):
        latency, batch = lines[f'{file}/latency'], lines[f'{file}/batch']
        assert latency['batch_size'] == 1 and batch['batch_size'] == 4
        assert latency['latency_ms'] == pytest.approx(1000 / latency['clips_per_second'], rel=0.003,
                                                      abs=0.01)
        assert latency['ratio'] == pytest.approx(
            latency['pytorch_latency_ms'] / latency['latency_ms'], rel=0.01, abs=0.002)
        assert close(batch['ratio'], batch['clips_per_second'], batch['pytorch_clips_per_second'])
    for case in ('latency', 'batch'):
        assert lines[f'onnx_int8/{case}']['over_float'] == pytest.approx(
            lines[f'onnx_int8/{case}']['clips_per_second'] / lines[f'onnx/{case}']['clips_per_second'],
            rel=0.01, abs=0.002)
    assert 0 < lines['onnx_int8/file']['size_mib'] < lines['onnx/file']['size_mib']
    assert 'clar_step' in result.stdout.split('name ')[-1]        # the readable table


def test_per_clip_baselines_are_timed(monkeypatch):
    import torch
    import torchaudio  # its per-clip pitch shift takes seconds: stand in a cheap one
    import bench
    monkeypatch.setattr(torchaudio.functional, 'pitch_shift', lambda clip, rate, steps: clip.clone())
    speeds = bench.baseline_speeds(0.1 * torch.randn(4, 16000), torch.device('cpu'), 0.05)
    assert set(speeds) == {'pitch_shift', 'time_stretch'} and min(speeds.values()) > 0
