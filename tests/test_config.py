import subprocess
import sys

import pytest

import config
from config import UserError, parse_args
from tests.conftest import ROOT

DEFAULTS = {'epochs': 10, 'learning_rate': 0.1, 'download': False, 'dataset': 'synth'}


def test_overrides_are_converted_to_the_default_type():
    cfg = parse_args(DEFAULTS, ['--epochs=3', '--learning_rate=1e-3', '--download=True',
                                '--dataset=sc09'])
    assert cfg == {'epochs': 3, 'learning_rate': 1e-3, 'download': True, 'dataset': 'sc09'}
    assert parse_args(DEFAULTS, ['--learning_rate=2'])['learning_rate'] == 2.0


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


def test_the_scripts_share_one_set_of_defaults():
    shared = config.defaults_of(vars(config))
    for name in ('dataset', 'data_root', 'label_fraction', 'batch_size', 'epochs',
                 'learning_rate', 'weight_decay', 'warmup_epochs', 'temperature',
                 'augmentations', 'seed', 'label_seed', 'device', 'out_dir', 'run_name'):
        assert name in shared


@pytest.mark.parametrize('script', ['train.py', 'selfsupervised.py', 'supervised.py'])
def test_command_line_errors_exit_with_a_message_and_no_traceback(script):
    result = subprocess.run([sys.executable, script, '--batch_sise=3'], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert 'unknown option --batch_sise; did you mean --batch_size' in result.stderr
    assert 'Traceback' not in result.stderr


def test_help_lists_every_option_with_default_and_comment():
    result = subprocess.run([sys.executable, 'train.py', '--help'], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0
    assert '--label_fraction=1.0  # fraction of training clips' in result.stdout
    assert '--ce_weight=1.0  # weight of the cross-entropy term' in result.stdout


def test_every_augmentation_setting_is_an_option_with_the_same_default():
    import augmentation
    shared = config.defaults_of(vars(config))
    assert {k: shared.get(k) for k in augmentation.DEFAULTS} == augmentation.DEFAULTS
