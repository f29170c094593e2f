"""tools/gpu_check.sh's dry run on the CPU: every part runs at toy sizes and writes its JSON
line (with a time and the device) to the folder it is given."""
import importlib
import json
import os
import subprocess
import sys

from tests.conftest import ROOT

gpu_check = importlib.import_module('tools.gpu_check')


def test_gpu_check_dry_run_writes_a_line_per_part(tmp_path):
    out = tmp_path / 'out'
    result = subprocess.run(['bash', 'tools/gpu_check.sh', str(out), '--device=cpu'], cwd=ROOT,
                            capture_output=True, text=True, timeout=900,
                            env={**os.environ, 'PYTHON': sys.executable,
                                 'WHEELS': str(tmp_path / 'no-wheels')})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = [json.loads(text) for text in (out / 'gpu_check.jsonl').read_text().splitlines()]
    parts = {line['part']: line for line in lines}
    assert len(parts) == len(lines)
    assert list(parts) == ['env', *(f'check/{name}' for name in gpu_check.CHECKS), 'curves',
                           'bench_eager', 'profile', 'bench_compile', 'ddp', 'pytest']
    assert all(line['time'] and line['device'].startswith('cpu') for line in lines)
    assert parts['bench_compile']['ok'] is None and 'dry run' in parts['bench_compile']['skipped']
    assert all(line['ok'] for name, line in parts.items() if name != 'bench_compile'), lines
    assert parts['check/clar_step']['gradient_relative_error']['all'] == 0.0   # the CPU against itself
    assert len(parts['curves']['first']) == len(parts['curves']['last']) == 2   # bf16, float32
    assert parts['bench_eager']['clips_per_second']['clar_step'] > 0
    assert parts['ddp']['processes'] == 2 and parts['ddp']['rng_states_saved'] == 2
    assert 'skipped' in parts['pytest']['summary']
    assert (out / 'profile.txt').exists() and (out / 'bench_eager.log').exists()
