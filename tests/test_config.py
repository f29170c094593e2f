"""Options: the hyperparameter block at the top of each script, the shared ones in config.py,
their types, --help and the per-script table of docs/options.md."""
import json
import re
import subprocess
import sys

import pytest

import augmentation
import config
from config import UserError, parse_args
from tests.conftest import ROOT, write_speechcommands

SCRIPTS = ('train.py', 'selfsupervised.py', 'supervised.py')
DEFAULTS = {'epochs': 10, 'learning_rate': 0.1, 'download': False, 'dataset': 'synth'}


def test_overrides_are_converted_to_the_option_type():
    cfg = parse_args(DEFAULTS, ['--epochs=3', '--learning_rate=1e-3', '--download=True',
                                '--dataset=sc09'])
    assert cfg == {'epochs': 3, 'learning_rate': 1e-3, 'download': True, 'dataset': 'sc09'}
    assert parse_args(DEFAULTS, ['--learning_rate=2'])['learning_rate'] == 2.0


def test_an_option_type_comes_from_its_meaning_not_its_literal():
    # a user writes learning_rate = 1 at the top of a script: still a float option
    defaults = config.script_defaults({'learning_rate': 1, 'epochs': 5.0, '__file__': 'x.py'})
    assert defaults['learning_rate'] == 1.0 and type(defaults['learning_rate']) is float
    assert defaults['epochs'] == 5 and type(defaults['epochs']) is int
    assert parse_args(defaults, ['--learning_rate=3e-4'])['learning_rate'] == 3e-4
    with pytest.raises(UserError, match='epochs = 2.5 in x.py'):
        config.script_defaults({'epochs': 2.5, '__file__': 'x.py'})


@pytest.mark.parametrize('argument,message', [
    ('--epoch=3', 'unknown option --epoch; did you mean --epochs'),
    ('--epochs=three', 'option --epochs expects an integer'),
    ('--learning_rate=fast', 'option --learning_rate expects a number'),
    ('--download=maybe', 'option --download expects true or false'),
    ('epochs=3', 'options are written --name=value'),
])
def test_bad_options_name_the_option(argument, message):
    with pytest.raises(UserError, match=message):
        parse_args(DEFAULTS, [argument])


@pytest.mark.parametrize('script', SCRIPTS)
def test_each_script_sets_its_hyperparameters_and_config_the_rest(script):
    module = __import__(script[:-3])
    own = config.defaults_of(vars(module))
    for name in ('dataset', 'data_root', 'label_fraction', 'encoder', 'encoder_width',
                 'batch_size', 'epochs', 'learning_rate', 'warmup_epochs', 'augmentations', 'probe'):
        assert name in own, name
    assert ('temperature' in own) == (script != 'supervised.py')
    assert ('ce_weight' in own) == (script == 'train.py')
    # one place per default: nothing the script sets is also a shared default
    assert not set(own) & set(config.SHARED)
    assert set(own) <= set(config.SCRIPT_OPTION_TYPES)
    for name, value in own.items():
        assert type(value) is config.SCRIPT_OPTION_TYPES[name], name


def test_augmentation_defaults_have_one_source():
    import inspect
    assert {k: config.SHARED[k] for k in augmentation.DEFAULTS} == augmentation.DEFAULTS
    for name in ('fade_max', 'time_mask_max', 'noise_snr_min', 'pitch_shift_max'):
        assert not re.search(rf'^{name}\s*=', open(ROOT / 'config.py').read(), re.M)
    for name, entry in augmentation.AUGMENTATIONS.items():
        signature = inspect.signature(entry.draw).parameters
        for keyword in entry.keywords:
            assert signature[keyword].default == augmentation.RANGES[keyword], (name, keyword)


@pytest.mark.parametrize('script', SCRIPTS)
def test_command_line_errors_exit_with_a_message_and_no_traceback(script):
    result = subprocess.run([sys.executable, script, '--batch_sise=3'], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert 'unknown option --batch_sise; did you mean --batch_size' in result.stderr
    assert 'Traceback' not in result.stderr


def help_options(script):
    """{name: (default as printed, comment)} from `script --help`."""
    result = subprocess.run([sys.executable, script, '--help'], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    found = {}
    for line in result.stdout.splitlines():
        match = re.match(r'^  --(\w+)=(.*?)(?:  # (.*))?$', line)
        if match:
            found[match.group(1)] = (match.group(2), match.group(3))
    return found, result.stdout


@pytest.mark.parametrize('script', SCRIPTS)
def test_help_lists_every_option_with_its_default_and_a_comment(script):
    found, text = help_options(script)
    module = __import__(script[:-3])
    defaults = config.script_defaults(vars(module))
    assert set(found) == set(defaults)
    for name, value in defaults.items():
        assert found[name][0] == config.format_default(value), name
        assert found[name][1], f'--{name} has no comment'
    assert text.index(f'set at the top of {script}') < text.index('--epochs=') < text.index('shared')


def documented_hyperparameters():
    """docs/options.md's table of the options set at the top of each script:
    {name: {script: default as written}}."""
    text = (ROOT / 'docs' / 'options.md').read_text()
    section = text[text.index('## Set at the top of each script'):]
    section = section[:section.index('\n## ', 5)]
    rows = [line for line in section.splitlines() if line.startswith('| `')]
    table = {}
    for row in rows:
        cells = [c.strip() for c in row.strip('|').split('|')]
        name = cells[0].strip('`').removeprefix('--')
        table[name] = dict(zip(SCRIPTS, cells[1:4]))
    return table


def test_the_documented_defaults_of_each_script_match_help():
    table = documented_hyperparameters()
    assert {'dataset', 'label_fraction', 'epochs', 'learning_rate', 'ce_weight', 'temperature',
            'augmentations'} <= set(table)
    for script in SCRIPTS:
        found, _ = help_options(script)
        for name, per_script in table.items():
            written = per_script[script].strip('`')
            if written in ('', '-'):
                assert name not in found or name in config.SHARED, (script, name)
                continue
            assert name in found, (script, name)
            assert written == found[name][0].strip('"'), (script, name, written, found[name][0])


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('block')
    write_speechcommands(root / 'sc', speakers=6, takes=1)
    return root


@pytest.mark.parametrize('script,where', [
    (script, 'in place') for script in SCRIPTS] + [
    ('train.py', 'above the imports'), ('supervised.py', 'below the imports')])
def test_an_edit_at_the_top_of_a_copy_takes_effect(tiny_data, tmp_path, script, where):
    """Edit a copy of the script as a user would; the run's config.json has the new values."""
    source = (ROOT / script).read_text()
    edited = re.sub(r'^epochs = 100 ', 'epochs = 1 ', source, flags=re.M)
    edited = re.sub(r'^learning_rate = 3e-4 ', 'learning_rate = 1 ', edited, flags=re.M)
    assert edited != source
    if where != 'in place':
        block = '\nepochs = 1\nencoder_width = 0.125\n'
        if where == 'above the imports':
            first_import = re.search(r'^(import|from) ', edited, re.M).start()
            edited = edited[:first_import] + block + edited[first_import:]
        else:
            edited = edited.replace("\n\ndef loss(", block + "\n\ndef loss(", 1)
    copy = tmp_path / script
    copy.write_text(edited)
    run = subprocess.run(
        [sys.executable, str(copy), '--dataset=speechcommands', f'--data_root={tiny_data}/sc',
         f'--cache_dir={tiny_data}/cache', f'--out_dir={tmp_path}/runs', '--run_name=edited',
         '--encoder_width=0.125', '--batch_size=4', '--warmup_epochs=0', '--batchnorm_batches=1',
         '--learning_rate=3e-4' if where == 'in place' else '--seed=0'],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={'PYTHONPATH': str(ROOT), 'PATH': '/usr/bin:/bin', 'HOME': str(tmp_path)})
    assert run.returncode == 0, run.stderr[-2000:]
    saved = json.loads((tmp_path / 'runs' / 'edited' / 'config.json').read_text())
    assert saved['epochs'] == 1
    assert saved['learning_rate'] == (3e-4 if where == 'in place' else 1.0)
    assert type(saved['learning_rate']) is float


def test_shared_defaults_are_listed_once_in_config():
    text = (ROOT / 'config.py').read_text()
    for name in config.SHARED:
        if name in augmentation.DEFAULTS:
            continue
        assert len(re.findall(rf'^{name}\s*=', text, re.M)) == 1, name
