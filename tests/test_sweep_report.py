"""sweep.py (matrix, names, skip / resume / move aside, signals) and report.py (table and
figures from results.json files)."""
import json
import signal
import sys
import threading
from pathlib import Path

import pytest

import report
import sweep
from config import UserError
from tests.conftest import ROOT, write_speechcommands


# ---------------------------------------------------------------- the plan

MATRIX = {'regimes': ['supervised', 'finetune', 'clar'], 'datasets': ['synth'],
          'label_fractions': [1.0, 0.1], 'augmentations': ['fade,time_mask', 'white_noise'],
          'seeds': [0, 1], 'options': {'epochs': 3, 'encoder_width': 0.25},
          'regime_options': {'finetune': {'epochs': 2}}}


def test_plan_names_order_and_two_stage_finetuning(tmp_path):
    runs = sweep.plan(MATRIX, sweep_dir=tmp_path)
    names = [r.name for r in runs]
    assert len(names) == len(set(names)) == 2 * 2 * 2 * 4     # seeds x augs x fractions x runs
    assert 'clar-synth-f0.1-fade+time_mask-resnet2d-s0' in names
    assert 'supervised-synth-f1-white_noise-resnet2d-s1' in names
    assert all(n.endswith('-s0') for n in names[:16])                  # seed by seed
    by_name = {r.name: r for r in runs}
    finetune = by_name['finetune-synth-f0.1-white_noise-resnet2d-s1']
    pretraining = by_name['selfsupervised-synth-f0.1-white_noise-resnet2d-s1']
    assert finetune.after == pretraining.name and names.index(pretraining.name) < names.index(finetune.name)
    assert finetune.script == 'supervised.py' and pretraining.script == 'selfsupervised.py'
    assert finetune.options['init_from'] == str(tmp_path / pretraining.name)
    assert finetune.options['epochs'] == 2 and pretraining.options['epochs'] == 3
    assert by_name['clar-synth-f0.1-fade+time_mask-resnet2d-s0'].options == {
        'epochs': 3, 'encoder_width': 0.25, 'dataset': 'synth', 'label_fraction': 0.1,
        'augmentations': 'fade,time_mask', 'encoder': 'resnet2d', 'seed': 0}
    # the same plan every time; --seeds replaces the seeds
    assert [r.name for r in sweep.plan(MATRIX, sweep_dir=tmp_path)] == names
    assert {r.options['seed'] for r in sweep.plan(MATRIX, seeds=[7], sweep_dir=tmp_path)} == {7}


def test_plan_extra_axes_overrides_and_refusals(tmp_path):
    cfg = {'regimes': ['clar'], 'datasets': ['esc50', 'fsdd'], 'augmentations': [''],
           'dataset_options': {'esc50': {'test_fold': [1, 2]}, 'fsdd': {'data_root': 'x'}}}
    runs = sweep.plan(cfg, extras={'epochs': '5'}, data_roots={'fsdd': '/data/fsdd'})
    assert [r.name for r in runs] == ['clar-esc50-f1-none-resnet2d-test_fold1-s0',
                                      'clar-esc50-f1-none-resnet2d-test_fold2-s0',
                                      'clar-fsdd-f1-none-resnet2d-s0']
    assert runs[1].options['test_fold'] == 2 and runs[2].options['data_root'] == '/data/fsdd'
    assert all(r.options['epochs'] == '5' for r in runs)
    assert sweep.command(runs[0], tmp_path, 'start')[2:] == [
        '--test_fold=1', '--dataset=esc50', '--label_fraction=1.0', '--augmentations=',
        '--encoder=resnet2d', '--seed=0', '--epochs=5', f'--out_dir={tmp_path}',
        '--run_name=clar-esc50-f1-none-resnet2d-test_fold1-s0']
    with pytest.raises(UserError, match='--seed is set by the sweep'):
        sweep.plan(cfg, extras={'seed': '3'})
    with pytest.raises(UserError, match='unknown regime'):
        sweep.plan({**cfg, 'regimes': ['simclr']})
    twice = {'regimes': ['clar'], 'datasets': ['synth'],
             'matrices': [{'options': {'epochs': 1}}, {'options': {'epochs': 2}}]}
    with pytest.raises(UserError, match='appears twice'):
        sweep.plan(twice)
    paired = sweep.plan({'regimes': ['clar'], 'datasets': ['synth'], 'seeds': [0, 1, 2],
                         'options': {'label_seed': 'seed'}})
    assert [(r.options['seed'], r.options['label_seed']) for r in paired] == [(0, 0), (1, 1), (2, 2)]


def test_named_configurations_all_plan():
    for path in sorted(sweep.CONFIG_DIR.glob('*.json')):
        runs = sweep.plan(sweep.read_config(path))
        assert runs, path
    quick = sweep.plan(sweep.read_config(sweep.find_config('quick')))
    assert len(quick) <= 20 and {r.options['encoder_width'] for r in quick} == {0.25}
    assert {r.options['seed'] for r in quick} == {0}


# ---------------------------------------------------------------- what each run needs

def write_run(run_dir, run, files=('config.json',), **config_changes):
    run_dir.mkdir(parents=True)
    for name in files:
        if name == 'config.json':
            content = {'regime': run.regime, **run.options, **config_changes}
        else:
            content = {'test_accuracy': 0.5} if name == 'results.json' else {}
        (run_dir / name).write_text(json.dumps(content))


class FakeLauncher:
    """Stands in for the subprocess: records each command, writes what the script would."""

    def __init__(self, fail=()):
        self.commands, self.stop, self.fail = [], None, set(fail)

    def __call__(self, command, log_path):
        self.commands.append((command, log_path))
        arguments = dict(a[2:].split('=', 1) for a in command[2:])
        run_dir = (Path(arguments['resume']) if 'resume' in arguments else
                   Path(arguments['out_dir']) / arguments['run_name'])
        run_dir.mkdir(exist_ok=True)
        if run_dir.name in self.fail:
            (run_dir / 'status.json').write_text('{"status": "failed", "error": "boom"}')
            return 1
        (run_dir / 'results.json').write_text('{"test_accuracy": 0.75, "probe_test_accuracy": 0.5,'
                                              ' "test_accuracy_from": "model classification head"}')
        return 0


def test_skip_resume_move_aside_start_and_conflict(tmp_path):
    cfg = {'regimes': ['supervised', 'clar'], 'datasets': ['synth'],
           'label_fractions': [1.0, 0.1], 'options': {'epochs': 3}}
    runs = sweep.plan(cfg, extras={'device': 'cpu'}, sweep_dir=tmp_path)
    done, resumable, broken, new = runs
    write_run(tmp_path / done.name, done, ('config.json', 'results.json'))
    write_run(tmp_path / resumable.name, resumable, ('config.json', 'checkpoint_last.pt'))
    write_run(tmp_path / broken.name, broken, ('config.json', 'metrics.jsonl'))
    assert [sweep.action_for(tmp_path / r.name) for r in runs] == ['skip', 'resume', 'restart', 'start']

    lines = []
    launch = FakeLauncher()
    outcomes = sweep.execute(runs, tmp_path, launch, out=lines.append)
    assert outcomes == {done.name: 'skipped', resumable.name: 'finished',
                        broken.name: 'finished', new.name: 'finished'}
    (resume_command, log), (restart_command, _), (start_command, _) = launch.commands
    assert resume_command[1].endswith('/train.py')
    assert resume_command[2:] == [f'--resume={tmp_path / resumable.name}', '--device=cpu']
    assert log == tmp_path / f'{resumable.name}.log'
    assert f'--run_name={new.name}' in start_command and f'--out_dir={tmp_path}' in start_command
    assert '--epochs=3' in start_command and '--device=cpu' in start_command
    moved = [p for p in tmp_path.iterdir() if p.name.startswith(f'{broken.name}.failed-')]
    assert len(moved) == 1 and (moved[0] / 'metrics.jsonl').exists()      # kept, not deleted
    assert any('done already, test 0.5000' in line for line in lines)
    assert any('finished in' in line and 'test 0.7500 (head)' in line for line in lines)

    # a second pass skips everything; a finished run with other settings is left alone
    assert set(sweep.execute(runs, tmp_path, FakeLauncher(), out=lambda *a: None).values()) == {'skipped'}
    changed = sweep.plan({**cfg, 'options': {'epochs': 4}}, sweep_dir=tmp_path)
    launch, lines = FakeLauncher(), []
    outcomes = sweep.execute(changed[:1], tmp_path, launch, out=lines.append)
    assert outcomes == {changed[0].name: 'conflict'} and not launch.commands
    assert 'epochs 3!=4' in lines[0]


def test_failures_block_fine_tuning_and_max_runs(tmp_path):
    cfg = {'regimes': ['finetune', 'clar'], 'datasets': ['synth'], 'label_fractions': [0.1, 0.01]}
    runs = sweep.plan(cfg, sweep_dir=tmp_path)
    assert [r.regime for r in runs] == ['selfsupervised', 'finetune', 'clar'] * 2
    launch = FakeLauncher(fail={runs[0].name})
    outcomes = sweep.execute(runs, tmp_path, launch, max_runs=3, out=lambda *a: None)
    assert list(outcomes.values()) == ['failed', 'blocked', 'finished', 'finished', 'not run',
                                       'not run']
    assert len(launch.commands) == 3
    fine_tuning = [c for c, _ in launch.commands if Path(c[1]).name == 'supervised.py']
    assert fine_tuning == []        # the second fine-tuning run was not reached (max_runs)


def test_dry_run_changes_nothing(tmp_path, capsys):
    path = tmp_path / 'mine.json'
    path.write_text(json.dumps(MATRIX))
    out = tmp_path / 'sweeps'
    assert sweep.main([str(path), '--dry_run=True', f'--out_dir={out}', '--only=clar-*-s1',
                       '--epochs=2']) == 0
    printed = capsys.readouterr().out
    assert not out.exists()
    assert printed.count(': would start') == 4 and 'clar-synth-f1-white_noise-resnet2d-s1' in printed
    assert '--epochs=2' in printed and 'dry run: 4 would start' in printed


def test_a_signal_is_passed_to_the_run_and_stops_the_sweep(tmp_path):
    child = ('import signal, sys, time\n'
             'signal.signal(signal.SIGINT, lambda *a: sys.exit(3))\n'
             'print("ready", flush=True)\n'
             'time.sleep(30)\n')
    launch = sweep.Launcher()
    timer = threading.Timer(1.0, launch.forward, (signal.SIGINT, None))
    timer.start()
    code = launch([sys.executable, '-c', child], tmp_path / 'x.log')
    timer.join()
    assert code == 3 and launch.stop == 'SIGINT'
    assert 'ready' in (tmp_path / 'x.log').read_text()


def test_a_real_sweep_of_two_runs_then_its_report(tmp_path, capsys):
    write_speechcommands(tmp_path / 'sc', speakers=6, takes=2)
    cfg = {'regimes': ['supervised', 'clar'], 'datasets': ['speechcommands'],
           'label_fractions': [0.5],
           'options': {'encoder_width': 0.125, 'batch_size': 8, 'epochs': 1, 'warmup_epochs': 0,
                       'batchnorm_batches': 2, 'data_root': str(tmp_path / 'sc'),
                       'cache_dir': str(tmp_path / 'cache')}}
    path = tmp_path / 'tiny.json'
    path.write_text(json.dumps(cfg))
    out = tmp_path / 'sweeps'
    assert sweep.main([str(path), f'--out_dir={out}', '--device=cpu']) == 0
    sweep_dir = out / 'tiny'
    for name in ('supervised-speechcommands-f0.5-fade+time_mask-resnet2d-s0',
                 'clar-speechcommands-f0.5-fade+time_mask-resnet2d-s0'):
        assert (sweep_dir / name / 'results.json').exists()
        assert 'test accuracy' in (sweep_dir / f'{name}.log').read_text()
    assert capsys.readouterr().out.count('finished in') == 2
    assert sweep.main([str(path), f'--out_dir={out}', '--device=cpu']) == 0
    assert capsys.readouterr().out.count('done already') == 2
    assert len((sweep_dir / 'sweeps.jsonl').read_text().splitlines()) == 2

    table = tmp_path / 'table.md'
    assert report.main([str(sweep_dir), f'--out={tmp_path / "img"}', f'--table={table}']) == 0
    text = table.read_text()
    assert '| speechcommands | supervised |' in text and '| speechcommands | clar |' in text
    assert 'label_efficiency.png skipped' in capsys.readouterr().out


# ---------------------------------------------------------------- report

def fabricate(root, regime, dataset, fraction, seed, test, probe, augmentations='fade,time_mask',
              encoder='resnet2d', init_from='', curve=None):
    name = f'{regime}-{dataset}-{fraction}-{augmentations}-{encoder}-{seed}'
    run_dir = root / name
    run_dir.mkdir(parents=True)
    script_regime = 'supervised' if regime == 'finetune' else regime
    source = ('linear classifier on frozen 512-d features, trained on the labelled clips'
              if regime == 'selfsupervised' else 'model classification head')
    (run_dir / 'results.json').write_text(json.dumps({
        'regime': script_regime, 'dataset': dataset, 'label_fraction': fraction, 'seed': seed,
        'test_accuracy': test, 'probe_test_accuracy': probe, 'test_accuracy_from': source}))
    (run_dir / 'config.json').write_text(json.dumps({
        'regime': script_regime, 'dataset': dataset, 'label_fraction': fraction, 'seed': seed,
        'augmentations': augmentations, 'encoder': encoder, 'init_from': init_from,
        'epochs': 3, 'run_name': name, 'data_root': f'/somewhere/{seed}'}))
    if curve:
        (run_dir / 'metrics.jsonl').write_text(''.join(
            json.dumps({'epoch': e + 1, 'loss': 1.0, 'val_accuracy': v}) + '\n'
            for e, v in enumerate(curve)))


@pytest.fixture
def fabricated(tmp_path):
    root = tmp_path / 'runs'
    for seed, shift in ((0, 0.0), (1, 0.1)):
        fabricate(root, 'supervised', 'synth', 1.0, seed, 0.90 + shift, 0.80)
        fabricate(root, 'supervised', 'synth', 0.1, seed, 0.50 + shift, 0.40)
        fabricate(root, 'selfsupervised', 'synth', 1.0, seed, 0.70 + shift, 0.70 + shift,
                  curve=[0.3, 0.5, 0.6])
        fabricate(root, 'selfsupervised', 'synth', 0.1, seed, 0.60 + shift, 0.60 + shift,
                  curve=[0.2, 0.4, 0.5])
        fabricate(root, 'clar', 'synth', 1.0, seed, 0.85 + shift, 0.75, curve=[0.5, 0.7, 0.8])
        fabricate(root, 'clar', 'synth', 0.1, seed, 0.80 + shift, 0.70, curve=[0.4, 0.6, 0.7])
        fabricate(root, 'selfsupervised', 'synth', 1.0, seed, 0.55, 0.55, augmentations='fade')
        fabricate(root, 'finetune', 'synth', 0.1, seed, 0.65, 0.60, init_from='/pre')
    fabricate(root, 'clar', 'fsdd', 0.1, 0, 0.9, 0.85)
    (root / 'broken').mkdir()
    (root / 'broken' / 'results.json').write_text('{"oops": 1}')
    return root


def test_report_table_numbers(fabricated):
    records = report.collect(fabricated)
    assert len(records) == 17
    table = report.markdown_table(records)
    lines = {tuple(c.strip() for c in line.strip('|').split('|')[:4]): line
             for line in table.splitlines() if line.startswith('| ')}
    header = table.splitlines()[2]
    assert header.startswith('| dataset | regime | augmentations | test accuracy from | runs | '
                             '100 % labels | 10 % labels |')
    clar = lines[('synth', 'clar', 'fade+time_mask', 'head')]
    # seeds 0.80 and 0.90: mean 85.0, sample std 7.1; probe 70.0 both times
    assert '| 90.0 ± 7.1 / 75.0 ± 0.0 | 85.0 ± 7.1 / 70.0 ± 0.0 |' in clar
    selfsupervised = lines[('synth', 'selfsupervised', 'fade+time_mask', 'linear probe')]
    assert '| 75.0 ± 7.1 / 75.0 ± 7.1 | 65.0 ± 7.1 / 65.0 ± 7.1 |' in selfsupervised
    assert '| 55.0 ± 0.0 / 55.0 ± 0.0 |  |' in lines[('synth', 'selfsupervised', 'fade', 'linear probe')]
    assert '|  | 65.0 ± 0.0 / 60.0 ± 0.0 |' in lines[('synth', 'finetune', 'fade+time_mask', 'head')]
    assert '| 1 |  | 90.0 / 85.0 |' in lines[('fsdd', 'clar', 'fade+time_mask', 'head')]
    order = [key[:2] for key in lines if key[0] == 'synth']
    assert order.index(('synth', 'supervised')) < order.index(('synth', 'selfsupervised')) \
        < order.index(('synth', 'finetune')) < order.index(('synth', 'clar'))


def test_report_writes_figures_and_table(fabricated, tmp_path, capsys):
    out = tmp_path / 'img'
    assert report.main([str(fabricated), f'--out={out}', f'--table={tmp_path / "t.md"}']) == 0
    for name in ('label_efficiency.png', 'convergence.png', 'augmentation_ablation.png'):
        assert (out / name).stat().st_size > 5000, name
    printed = capsys.readouterr().out
    assert '17 finished runs' in printed and 'is not a results.json' in printed
    assert (tmp_path / 't.md').read_text().startswith(f'# Results: {fabricated}')


def test_report_draws_each_run_with_its_probe_diagnostics(tmp_path):
    fabricate(tmp_path / 'runs', 'clar', 'fsdd', 0.1, 0, 0.8, 0.7, curve=[0.4, 0.6])
    fabricate(tmp_path / 'runs', 'supervised', 'fsdd', 1.0, 0, 0.9, 0.9, curve=[0.5, 0.9])
    with open(tmp_path / 'runs' / 'clar-fsdd-0.1-fade,time_mask-resnet2d-0' / 'metrics.jsonl', 'w') as out:
        for epoch, (head, h, p) in enumerate([(0.4, 0.6, 0.5), (0.6, 0.7, 0.7)]):
            pseudo = {'pseudo_accuracy': 0.9, 'pseudo_share_confident': 0.25} if epoch else {}
            out.write(json.dumps({'epoch': epoch + 1, 'val_accuracy': head, **pseudo,
                                  'probe_h_val_accuracy': h, 'probe_p_val_accuracy': p}) + '\n')
    lines = report.curve_lines(report.collect(tmp_path / 'runs'))
    assert [(label, epochs, values, style) for _, label, epochs, values, style in lines] == [
        ('clar fsdd, 10 % labels, seed 0: head', [1, 2], [40.0, 60.0], '-'),
        ('clar fsdd, 10 % labels, seed 0: linear probe on h', [1, 2], [60.0, 70.0], '--'),
        ('clar fsdd, 10 % labels, seed 0: linear probe on p', [1, 2], [50.0, 70.0], ':'),
        ('clar fsdd, 10 % labels, seed 0: pseudo-labels right', [2], [90.0], '-.'),
        ('clar fsdd, 10 % labels, seed 0: share above the threshold', [2], [25.0], (0, (1, 3))),
        ('supervised fsdd, 100 % labels, seed 0: head', [1, 2], [50.0, 90.0], '-')]
    assert report.main([str(tmp_path / 'runs'), f'--out={tmp_path / "img"}',
                        f'--curves={tmp_path / "curves.png"}']) == 0
    assert (tmp_path / 'curves.png').stat().st_size > 5000


def test_report_skips_figures_it_cannot_draw(tmp_path, capsys):
    fabricate(tmp_path / 'runs', 'clar', 'synth', 0.1, 0, 0.8, 0.7)
    assert report.main([str(tmp_path / 'runs'), f'--out={tmp_path / "img"}']) == 0
    printed = capsys.readouterr().out
    for name in ('label_efficiency.png', 'convergence.png', 'augmentation_ablation.png'):
        assert f'{name} skipped' in printed
        assert not (tmp_path / 'img' / name).exists()
    with pytest.raises(UserError, match='no such folder'):
        report.collect(tmp_path / 'nowhere')


def test_keep_results_copies_the_small_files_only(tmp_path):
    sys.path.insert(0, str(ROOT / 'tools'))
    import keep_results
    run = tmp_path / 'runs' / 'sweep' / 'clar-x-s0'
    run.mkdir(parents=True)
    for name in ('config.json', 'results.json', 'metrics.jsonl', 'checkpoint_best.pt', 'x.log'):
        (run / name).write_text(name)
    (tmp_path / 'runs' / 'sweep' / 'unfinished').mkdir()
    (tmp_path / 'runs' / 'sweep' / 'unfinished' / 'config.json').write_text('{}')
    (tmp_path / 'runs' / 'sweep' / 'choice.md').write_text('| rank |')   # choose_augmentations.py
    (tmp_path / 'runs' / 'sweep' / '.sweep.lock').write_text('')
    assert keep_results.keep(tmp_path / 'runs', tmp_path / 'kept') == 1
    kept = tmp_path / 'kept' / 'sweep' / 'clar-x-s0'
    assert sorted(p.name for p in kept.iterdir()) == ['config.json', 'metrics.jsonl', 'results.json']
    assert not (tmp_path / 'kept' / 'sweep' / 'unfinished').exists()
    assert sorted(p.name for p in kept.parent.iterdir()) == ['choice.md', 'clar-x-s0']


def test_paired_differences_by_seed(tmp_path):
    root = tmp_path / 'runs'
    for seed, (a, b) in enumerate([(0.70, 0.74), (0.60, 0.70), (0.80, 0.80)]):
        fabricate(root, 'clar', 'fsdd', 0.1, seed, a, a - 0.1)
        fabricate(root, 'clar', 'folder', 1.0, seed, b, b)
    fabricate(root, 'clar', 'folder', 1.0, 7, 0.5, 0.5)          # no partner: left out
    table = report.paired_differences(report.collect(root), 'clar-fsdd-*', 'clar-folder-*')
    rows = table.splitlines()
    assert rows[2] == '| 0 | 70.0 / 60.0 | 74.0 / 74.0 | +4.0 / +14.0 |'
    assert len(rows) == 6 and rows[-1].startswith('| mean ± std (3 pairs) | | | +4.7 ± 5.0 / ')
    with pytest.raises(UserError, match='no seed has a run matching'):
        report.paired_differences(report.collect(root), 'clar-esc*', 'clar-folder-*')


def test_report_reads_several_folders_as_one(tmp_path, capsys):
    # a new comparison kept in its own folder, paired with baselines kept in another
    for seed, (a, b) in enumerate([(0.70, 0.74), (0.60, 0.70)]):
        fabricate(tmp_path / 'old', 'clar', 'fsdd', 0.1, seed, a, a)
        fabricate(tmp_path / 'new', 'clar', 'folder', 1.0, seed, b, b)
    assert report.main([str(tmp_path / 'old'), str(tmp_path / 'new'), f'--out={tmp_path / "img"}',
                        '--paired=clar-fsdd-*,clar-folder-*']) == 0
    out = capsys.readouterr().out
    assert '4 finished runs under' in out
    assert '| mean ± std (2 pairs) | | | +7.0 ± 4.2 / +7.0 ± 4.2 |' in out
    with pytest.raises(UserError, match='nowhere: no such folder'):
        report.main([str(tmp_path / 'old'), str(tmp_path / 'nowhere')])


def test_report_of_the_runs_that_match(tmp_path, capsys):
    for seed in (0, 1):
        fabricate(tmp_path / 'runs', 'clar', 'fsdd', 0.1, seed, 0.7, 0.7)
        fabricate(tmp_path / 'runs', 'clar', 'synth', 0.1, seed, 0.9, 0.9)
    table = tmp_path / 'table.md'
    assert report.main([str(tmp_path / 'runs'), f'--out={tmp_path / "img"}', f'--table={table}',
                        '--runs=clar-synth-*-0, clar-synth-*-1']) == 0
    assert '2 finished runs under' in capsys.readouterr().out
    rows = [line for line in table.read_text().splitlines() if '| clar |' in line]
    assert len(rows) == 1 and rows[0].startswith('| synth |')
    # one run's curves: its name once, in the title
    fabricate(tmp_path / 'one', 'clar', 'fsdd', 0.1, 0, 0.7, 0.7, curve=[0.4, 0.6])
    records = report.collect(tmp_path / 'one')
    assert report.plot_curves(records, tmp_path / 'curves.png') is None
    assert (tmp_path / 'curves.png').stat().st_size > 5000
    with pytest.raises(UserError, match='--runs=clar-esc10-\\*: no finished run'):
        report.main([str(tmp_path / 'runs'), f'--out={tmp_path / "img"}', '--runs=clar-esc10-*'])


def test_named_lines_across_settings_and_folders(tmp_path, capsys):
    # one line from runs of other settings (CLAR at 10 % and, in its own folder, with other
    # augmentations at 1 %), and a kept folder that holds runs of the same name as another
    for seed, shift in ((0, 0.0), (1, 0.1)):
        fabricate(tmp_path / 'a', 'supervised', 'fsdd', 1.0, seed, 0.95, 0.95)
        fabricate(tmp_path / 'a', 'clar', 'fsdd', 0.1, seed, 0.80 + shift, 0.8)
        fabricate(tmp_path / 'b', 'clar', 'fsdd', 0.01, seed, 0.40 + shift, 0.4,
                  augmentations='brown_noise')
        fabricate(tmp_path / 'old', 'clar', 'fsdd', 0.1, seed, 0.10, 0.1)   # same names as a's
    records = report.collect([tmp_path / 'a', tmp_path / 'b', tmp_path / 'old'])
    spec = 'every label=supervised-*-1.0-*; CLAR=a/clar-fsdd-0.1-*,clar-fsdd-0.01-*'
    lines = report.named_lines(records, spec)
    assert list(lines) == ['fsdd'] and [name for name, _ in lines['fsdd']] == ['every label', 'CLAR']
    clar = dict(lines['fsdd'])['CLAR']
    assert sorted(clar) == [0.01, 0.1]
    assert sorted(r['test'] for r in clar[0.1]) == [0.8, 0.9]       # a's runs, not old's
    assert sorted(r['test'] for r in clar[0.01]) == [0.4, 0.5]
    assert report.main([str(tmp_path / d) for d in ('a', 'b', 'old')] +
                       [f'--out={tmp_path / "img"}', f'--lines={spec}',
                        f'--lines_figure={tmp_path / "few.png"}']) == 0
    assert (tmp_path / 'few.png').stat().st_size > 5000
    # a pattern that matches two runs of one seed and fraction would average them: refused
    with pytest.raises(UserError, match="--lines: 'CLAR' matches two runs of fsdd at 10 % labels with seed 0"):
        report.named_lines(records, 'CLAR=clar-fsdd-0.1-*')
    for bad, message in (('CLAR', 'is not NAME=PATTERN'), ('CLAR=', 'is not NAME=PATTERN'),
                         ('CLAR=clar-esc10-*', "no finished run matches 'CLAR'"),
                         (' ; ', 'no lines given')):
        with pytest.raises(UserError, match=message):
            report.named_lines(records, bad)


def test_label_seed_drawn_with_the_seed_is_a_replicate(tmp_path):
    # a sweep's "label_seed": "seed" gives every seed its own labelled subset: still one
    # experiment, one row of three runs; a fixed label_seed other than the seed stays apart
    root = tmp_path / 'runs'
    for seed in (0, 1, 2):
        fabricate(root, 'clar', 'fsdd', 0.1, seed, 0.5 + 0.1 * seed, 0.5)
        config = root / f'clar-fsdd-0.1-fade,time_mask-resnet2d-{seed}' / 'config.json'
        config.write_text(json.dumps({**json.loads(config.read_text()), 'label_seed': seed}))
    fabricate(root, 'clar', 'fsdd', 1.0, 0, 0.9, 0.9)
    config = root / 'clar-fsdd-1.0-fade,time_mask-resnet2d-0' / 'config.json'
    config.write_text(json.dumps({**json.loads(config.read_text()), 'label_seed': 5}))
    records = report.collect(root)
    assert {r['variant'] for r in records if r['fraction'] == 0.1} == {(('label_seed', 'seed'),)}
    rows = [line for line in report.markdown_table(records).splitlines() if '| clar |' in line]
    assert len(rows) == 2 and any('| 3 |' in row and '60.0 ± 10.0 / 50.0 ± 0.0' in row for row in rows)


def test_convergence_compares_the_fitted_probes_where_every_run_has_them(tmp_path):
    root = tmp_path / 'runs'
    fabricate(root, 'clar', 'synth', 0.1, 0, 0.8, 0.7, curve=[0.4, 0.6])
    fabricate(root, 'selfsupervised', 'synth', 0.1, 0, 0.6, 0.6, curve=[0.2, 0.4])
    records = report.collect(root)
    assert report.convergence_metric(records) == 'val_accuracy'      # runs without the probes
    for record in records:
        for epoch in record['metrics']:
            epoch['probe_h_val_accuracy'] = epoch['val_accuracy'] + 0.1
    assert report.convergence_metric(records) == 'probe_h_val_accuracy'
    records[0]['metrics'][1].pop('probe_h_val_accuracy')
    assert report.convergence_metric(records) == 'val_accuracy'      # one epoch without: both regimes alike
    assert report.plot_convergence(records, tmp_path / 'c.png') is None
    assert (tmp_path / 'c.png').stat().st_size > 5000


def test_paired_on_validation_and_the_pseudo_label_table(tmp_path):
    root = tmp_path / 'runs'
    for seed, (a, b) in enumerate([(0.70, 0.78), (0.60, 0.62), (0.80, 0.84)]):
        fabricate(root, 'clar', 'fsdd', 0.1, seed, 0.5, 0.5)
        fabricate(root, 'clar', 'folder', 0.1, seed, 0.5, 0.5)
        for dataset, val in (('fsdd', a), ('folder', b)):
            results = root / f'clar-{dataset}-0.1-fade,time_mask-resnet2d-{seed}' / 'results.json'
            saved = json.loads(results.read_text())
            saved.update(val_accuracy=val, probe_val_accuracy=val - 0.1)
            if dataset == 'folder':     # a pseudo-label run
                saved.update(pseudo_share_confident=0.2 * (seed + 1), pseudo_accuracy=0.9)
            results.write_text(json.dumps(saved))
    records = report.collect(root)
    table = report.paired_differences(records, 'clar-fsdd-*', 'clar-folder-*', split='val')
    rows = table.splitlines()
    assert 'validation' in rows[0] and rows[2] == '| 0 | 70.0 / 60.0 | 78.0 / 68.0 | +8.0 / +8.0 |'
    assert rows[-1].startswith('| mean ± std (3 pairs) | | | +4.7 ± 3.1 / ')
    pseudo = report.pseudo_label_table(records)
    assert '| folder |  | 10 % | 3 | 74.7 ± 11.4 | 40.0 ± 20.0 | 90.0 ± 0.0 |' in pseudo
    assert 'fsdd' not in pseudo.split('|---|')[-1]       # runs without pseudo-labels left out
    assert report.pseudo_label_table([r for r in records if r['dataset'] == 'fsdd']) == ''
