"""choose_augmentations.py: singles then pairs of the best, ranked on validation only,
resumable, its options checked before the first run."""
import json

import pytest

import choose_augmentations
from config import UserError
from tests.conftest import write_class_folders

TINY = ['--dataset=folder', '--encoder_width=0.125', '--batch_size=8', '--epochs=2',
        '--label_fraction=0.5']


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp('choose')
    write_class_folders(root / 'data', per_class=10)
    return root


def fake_finished(search_dir, augmentations, val, test, probe=None):
    """A finished run as the search names it, with only what the ranking reads."""
    name = f'clar-folder-f0.5-{augmentations.replace(",", "+")}-resnet2d-s0'
    (search_dir / name).mkdir(parents=True)
    (search_dir / name / 'results.json').write_text(json.dumps(
        {'val_accuracy': val, 'test_accuracy': test, 'probe_val_accuracy': probe,
         'best_epoch': 1, 'seconds': 60}))


def test_ranked_on_validation_never_test(folders, tmp_path, capsys):
    search_dir = tmp_path / 'runs' / 'folder-f0.5'
    # test accuracy says the opposite of validation everywhere
    for names, val in (('fade', 0.5), ('time_shift', 0.9), ('white_noise', 0.7),
                       ('pink_noise', 0.2)):
        fake_finished(search_dir, names, val, 1 - val)
    for names, val in (('time_shift,white_noise', 0.8), ('fade,time_mask', 0.6)):
        fake_finished(search_dir, names, val, 1 - val)
    code = choose_augmentations.main(
        [*TINY, f'--data_root={folders}/data', f'--out_dir={tmp_path}/runs', '--pairs_from=2',
         '--candidates=fade,time_shift,white_noise,pink_noise'])
    assert code == 0
    choice = json.loads((search_dir / 'choice.json').read_text())
    assert choice['winner'] == 'time_shift'
    assert [r['augmentations'] for r in choice['ranking']] == [
        'time_shift', 'time_shift,white_noise', 'white_noise', 'fade,time_mask', 'fade',
        'pink_noise']
    # the pairs came from the two best singles on validation (pink_noise is best on test)
    assert not any('pink_noise,' in r['augmentations'] for r in choice['ranking'])
    out = capsys.readouterr().out
    assert '--augmentations=time_shift' in out and 'run-minutes' in out
    assert 'test' not in (search_dir / 'choice.md').read_text().split('\n| 1 |')[0].split('|')[-1]


def test_a_search_cut_short_continues_without_running_anything_twice(folders, tmp_path, capsys):
    arguments = [*TINY, f'--data_root={folders}/data', f'--cache_dir={tmp_path}/cache',
                 f'--out_dir={tmp_path}/runs', '--candidates=fade,time_shift,white_noise',
                 '--pairs_from=2']
    assert choose_augmentations.main([*arguments, '--max_runs=2']) == 1
    assert 'run the same command again to continue' in capsys.readouterr().out
    assert choose_augmentations.main(arguments) == 0
    out = capsys.readouterr().out
    assert out.count('done already') == 2 and out.count('finished in') == 3   # 1 single, 2 pairs
    search_dir = tmp_path / 'runs' / 'folder-f0.5'
    choice = json.loads((search_dir / 'choice.json').read_text())
    assert len(choice['ranking']) == 5 and (search_dir / 'choice.md').exists()
    assert f'--augmentations={choice["winner"]}' in choice['command']


@pytest.mark.parametrize('argument, message', [
    ('--candidates=fade,wobble', "unknown 'wobble'"),
    ('--augmentations=fade', '--augmentations is set by the search'),
    ('--learning_rat=0.1', 'train.py has no option --learning_rat'),
    ('--warmup_epochs=2', '--warmup_epochs=2 is not below --epochs=2'),
    ('--pairs_from=1', '--pairs_from must be between 2'),
    ('--pairs_from=10', '--pairs_from must be between 2'),
])
def test_bad_options_are_refused_before_the_first_run(folders, tmp_path, argument, message):
    with pytest.raises(UserError, match=message):
        choose_augmentations.main([*TINY, f'--data_root={folders}/data',
                                   f'--out_dir={tmp_path}/runs', argument])
    assert not (tmp_path / 'runs').exists()


def test_augmentation_options_go_only_to_the_runs_that_read_them():
    given = {'white_noise_p': '0.5', 'epochs': '3'}
    noise = choose_augmentations.options_for('white_noise', given)
    fade = choose_augmentations.options_for('fade,time_mask', given)
    assert noise['white_noise_p'] == '0.5' and 'white_noise_p' not in fade
    assert noise['epochs'] == fade['epochs'] == '3' and fade['augmentations'] == 'fade,time_mask'
