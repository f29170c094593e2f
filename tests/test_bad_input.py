"""Bad input meets a clear message before any training, and never touches earlier runs.
Each case here is a row of the table of bad inputs in docs/runs.md."""
import json
import numpy as np
import pytest
import soundfile

import audio
import dataset
from config import UserError
from tests.conftest import tone_clip


# ---------------------------------------------------------------- audio files

def write(path, samples, rate=16000, subtype='PCM_16'):
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, samples, rate, subtype=subtype)
    return path


@pytest.mark.parametrize('subtype', ['PCM_U8', 'PCM_16', 'PCM_24', 'PCM_32', 'FLOAT', 'DOUBLE'])
def test_every_wav_sample_format_is_converted(tmp_path, subtype):
    t = np.arange(16000) / 16000
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    path = write(tmp_path / f'{subtype}.wav', tone, subtype=subtype)
    clip = audio.read_clip(str(path), 16000, 16000)
    tolerance = 1e-2 if subtype == 'PCM_U8' else 1e-4
    assert np.abs(clip - tone).max() < tolerance


def test_stereo_is_downmixed_and_odd_rates_resampled(tmp_path):
    rate = 11025
    t = np.arange(rate) / rate
    left, right = np.sin(2 * np.pi * 300 * t), np.sin(2 * np.pi * 300 * t) * 0.5
    clip = audio.read_clip(str(write(tmp_path / 's.wav', np.stack([left, right], 1), rate)),
                             16000, 16000)
    spectrum = np.abs(np.fft.rfft(clip))
    assert abs(np.argmax(spectrum) - 300) <= 1                   # 1 Hz bins over one second
    assert np.abs(clip[4000:12000]).max() == pytest.approx(0.75, abs=0.02)
    high = audio.read_clip(str(write(tmp_path / 'h.wav', left[:1000], 96000)), 16000, 16000)
    assert len(high) == 16000 and np.abs(high[:100]).max() > 0.1


def test_long_clips_are_cropped_and_short_ones_padded(tmp_path):
    long_clip = audio.read_clip(str(write(tmp_path / 'l.wav', np.full(160000, 0.25))), 16000, 16000)
    assert len(long_clip) == 16000 and np.allclose(long_clip, 0.25, atol=1e-4)
    short = audio.read_clip(str(write(tmp_path / 's.wav', np.full(800, 0.25))), 16000, 16000)
    assert len(short) == 16000 and np.allclose(short[:800], 0.25, atol=1e-4) and not short[800:].any()


@pytest.mark.parametrize('case,reason', [
    ('garbage', 'unreadable audio'), ('empty', 'unreadable audio'),
    ('zero-length', 'no samples'), ('nan', 'NaN or infinite samples'),
    ('inf', 'NaN or infinite samples')])
def test_unusable_files_stop_the_build_naming_the_file_or_are_skipped(tmp_path, case, reason):
    root = tmp_path / 'data'
    rng = np.random.default_rng(0)
    for c, name in enumerate(('low', 'high')):
        for i in range(10):
            write(root / name / f'{i}.wav', tone_clip(c, rng))
    bad = root / 'low' / f'bad-{case}.wav'
    if case == 'garbage':
        bad.write_bytes(b'\x00\x01not audio at all' * 10)
    elif case == 'empty':
        bad.write_bytes(b'')
    elif case == 'zero-length':
        write(bad, np.zeros(0))
    else:
        samples = np.full(1000, 0.1)
        samples[10] = np.nan if case == 'nan' else np.inf
        write(bad, samples, subtype='FLOAT')
    cache = tmp_path / 'cache'
    with pytest.raises(UserError, match=f'{bad}: {reason}.*--skip_bad_files=True'):
        dataset.load('folder', root, cache)
    data = dataset.load('folder', root, cache, skip_bad_files=True)
    assert len(data.skipped) == 1 and len(data.paths) == 20 and str(bad) not in data.paths


def test_float_audio_beyond_one_is_scaled_to_fit_and_counted(tmp_path, capsys):
    root = tmp_path / 'data'
    rng = np.random.default_rng(0)
    for c, name in enumerate(('low', 'high')):
        for i in range(10):
            write(root / name / f'{i}.wav', tone_clip(c, rng))
    tone = 3.0 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    loud = write(root / 'low' / 'loud.wav', tone, subtype='FLOAT')
    data = dataset.load('folder', root, tmp_path / 'cache')
    assert 'scaled down 1 clips whose samples went beyond +-1' in capsys.readouterr().out
    index = json.loads(next((tmp_path / 'cache').glob('waveforms/*/index.json')).read_text())
    assert index['scaled'] == [str(loud)]
    clip = data.waves[data.paths.index(str(loud))] / 32768
    assert np.abs(clip).max() == pytest.approx(32767 / 32768, abs=1 / 32768)
    assert np.allclose(clip, tone / 3, atol=2e-4)              # the shape kept, not clipped
    assert np.allclose(audio.quantize(tone[None])[0].numpy(), tone / 3, atol=2e-4)   # embed.py alike


# ---------------------------------------------------------------- options

def run_train(capsys, *options, out_dir=None):
    """train.py's entry point in this process (the subprocess path is tested in
    test_config); returns its exit status and what it printed to stderr."""
    import engine
    import train
    with pytest.raises(SystemExit) as exit_info:
        engine.main(vars(train), 'clar', train.loss, 'all', argv=list(options))
    return exit_info.value.code, capsys.readouterr().err


@pytest.fixture
def earlier_run(tmp_path):
    run = tmp_path / 'runs' / 'earlier'
    run.mkdir(parents=True)
    (run / 'checkpoint_last.pt').write_bytes(b'weights')
    (run / 'results.json').write_text('{"test_accuracy": 0.9}')
    return run


def unchanged(run):
    return (sorted(p.name for p in run.parent.iterdir()) == ['earlier']
            and (run / 'checkpoint_last.pt').read_bytes() == b'weights'
            and json.loads((run / 'results.json').read_text()) == {'test_accuracy': 0.9})


@pytest.mark.parametrize('options,message', [
    (['--label_fraction=0'], '--label_fraction must be in (0, 1], got 0.0'),
    (['--label_fraction=1.5'], '--label_fraction must be in (0, 1], got 1.5'),
    (['--label_fraction=half'], 'option --label_fraction expects a number'),
    (['--epochs=2.5'], 'option --epochs expects an integer'),
    (['--dataset=librispeech'], 'unknown --dataset=librispeech; valid: synth'),
    (['--augmentations=fade,wobble'], "unknown augmentation 'wobble' in --augmentations; valid:"),
    (['--fade_max=2'], 'augmentation options: fade_max=2.0 must be in [0, 1]'),
    (['--encoder=resnet50'], 'unknown --encoder=resnet50; valid: resnet2d, resnet1d'),
    (['--optimizer=sgd'], 'unknown --optimizer=sgd; valid: adam, lars'),
    (['--device=tpu'], 'unknown --device=tpu'),
    (['--dataset=folder', '--data_root=/no/such/folder'], '--data_root=/no/such/folder is not a folder'),
    (['--run_name=earlier'], 'already exists'),
    (['--bogus=1'], 'unknown option --bogus'),
    (['--init_from=/no/such/run'], '--init_from: no such checkpoint (/no/such/run: no such file'),
    (['--augmentations=pitch_shift_low', '--pitch_shift_max=1'],
     '--pitch_shift_max=1.0 is read only by pitch_shift, which --augmentations=pitch_shift_low '
     'does not include (pitch_shift_low has a fixed range)'),
    (['--augmentations=time_stretch_high', '--time_stretch_min=0.8'],
     '--time_stretch_min=0.8 is read only by time_stretch, which'),
    (['--noise_snr_max=10'], '--noise_snr_max=10.0 is read only by white_noise, pink_noise, '
                             'brown_noise, mixed_noise, none of which --augmentations=fade,time_mask'),
    (['--epochs=5'], '--warmup_epochs=10 is not below --epochs=5'),
    (['--sample_rate=22050'], '--sample_rate=22050: the front end'),
    (['--augmentations='], '--augmentations is empty: the two views of every clip would be the same'),
    (['--fade_p=0', '--time_mask_p=0'], 'no clip is augmented'),
])
def test_bad_options_exit_2_with_a_message_and_touch_no_run(tmp_path, capsys, earlier_run,
                                                            options, message):
    status, err = run_train(capsys, f'--out_dir={tmp_path}/runs', f'--cache_dir={tmp_path}/cache',
                            *options)
    assert status == 2 and message in err
    assert unchanged(earlier_run)


def test_a_data_root_without_audio_and_an_unwritable_out_dir(tmp_path, capsys, earlier_run):
    (tmp_path / 'empty' / 'some_class').mkdir(parents=True)
    status, err = run_train(capsys, f'--out_dir={tmp_path}/runs', '--dataset=folder',
                            f'--data_root={tmp_path}/empty')
    assert status == 2 and 'no audio' in err
    (tmp_path / 'a_file').write_text('')
    status, err = run_train(capsys, f'--out_dir={tmp_path}/a_file/runs')
    assert status == 2 and 'cannot be written' in err
    assert unchanged(earlier_run)


def test_init_from_a_folder_without_checkpoint_best_lists_its_checkpoints(tmp_path, capsys,
                                                                          earlier_run):
    status, err = run_train(capsys, f'--out_dir={tmp_path}/runs', f'--init_from={earlier_run}')
    assert status == 2 and 'no checkpoint_best.pt in this folder (it has checkpoint_last.pt' in err
    assert unchanged(earlier_run)


def test_range_options_count_only_when_set_and_empty_augmentations_only_when_contrastive():
    import options
    import supervised
    import train
    from config import script_defaults
    defaults = script_defaults(vars(train))
    options.check({**defaults, 'augmentations': 'pitch_shift_low'}, 'clar')    # ranges at defaults
    with pytest.raises(UserError, match='--pitch_shift_max=15.0 is read only by pitch_shift'):
        options.check({**defaults, 'augmentations': 'pitch_shift_low'}, 'clar',
                      given={'pitch_shift_max'})       # given, though equal to the default
    options.check({**defaults, 'pitch_shift_max': 5.0, 'augmentations': 'pitch_shift'}, 'clar')
    with pytest.raises(UserError, match='--augmentations is empty'):
        options.check({**defaults, 'augmentations': ''}, 'selfsupervised')
    options.check({**script_defaults(vars(supervised)), 'augmentations': ''}, 'supervised')


# ---------------------------------------------------------------- --init_from

@pytest.fixture
def pretrained(tmp_path):
    """A checkpoint as a run of train.py's defaults writes it (1-s clips, the paper front
    end, width 1), holding only what --init_from compares."""
    import checkpoint
    import train
    from config import script_defaults
    path = tmp_path / 'pretrained.pt'
    checkpoint.save({'model': {}, 'config': script_defaults(vars(train)),
                     'clip_samples': 16000}, path)
    return path


@pytest.mark.parametrize('options,message', [
    (['--frontend=released'], 'its encoder was trained with --frontend=paper, this run has '
                              '--frontend=released'),
    (['--encoder_width=0.5'], 'its encoder was trained with --encoder_width=1.0, this run has '
                              '--encoder_width=0.5; give --encoder_width=1.0'),
    (['--encoder=resnet1d'], 'its encoder was trained with --encoder=resnet2d'),
    (['--clip_seconds=0.5'], 'its encoder was trained on clips of 16000 samples (1 s), this '
                             "run's are 8000 (0.5 s); give --clip_seconds=1"),
])
def test_init_from_an_encoder_trained_on_other_input_is_refused(tmp_path, capsys, earlier_run,
                                                               pretrained, options, message):
    root = tmp_path / 'tones'
    rng = np.random.default_rng(0)
    for c, name in enumerate(('low', 'high')):
        for i in range(10):
            write(root / name / f'{i}.wav', tone_clip(c, rng))
    status, err = run_train(capsys, f'--out_dir={tmp_path}/runs', f'--cache_dir={tmp_path}/cache',
                            '--dataset=folder', f'--data_root={root}', f'--init_from={pretrained}',
                            *options)
    assert status == 2 and f'--init_from={pretrained}: {message}' in err
    assert unchanged(earlier_run)


def test_init_from_a_checkpoint_that_would_run_code_is_refused(tmp_path, capsys, earlier_run):
    import os
    import torch

    class RunsACommand:
        def __reduce__(self):
            return os.system, (f'touch {tmp_path}/marker',)
    torch.save({'model': RunsACommand()}, tmp_path / 'crafted.pt')
    status, err = run_train(capsys, f'--out_dir={tmp_path}/runs',
                            f'--init_from={tmp_path}/crafted.pt')
    assert status == 2 and 'refused: loading it would call' in err and 'system' in err
    assert not (tmp_path / 'marker').exists() and unchanged(earlier_run)
    torch.save(torch.zeros(3), tmp_path / 'tensor.pt')
    status, err = run_train(capsys, f'--out_dir={tmp_path}/runs', f'--init_from={tmp_path}/tensor.pt')
    assert status == 2 and 'not a checkpoint of this project (it holds no model weights)' in err
    assert unchanged(earlier_run)
