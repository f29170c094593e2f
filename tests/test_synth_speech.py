"""Tests of the eSpeak NG demo dataset (small sets only: each generate() call here takes
well under a second once torch is imported)."""
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import synth_speech   # the repository root is on sys.path (tests/conftest.py)

WORDS = ('yes', 'no', 'up')
SMALL = dict(words=WORDS, n_speakers=6, renditions=2, seed=3)
NAME = re.compile(r'^(?P<speaker>[A-Za-z0-9+-]+)_nohash_(?P<n>\d+)\.wav$')


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in Path(root).rglob('*') if p.is_file())


def _lines(path):
    return [line for line in Path(path).read_text().splitlines() if line]


@pytest.fixture(scope='module')
def small(tmp_path_factory):
    return synth_speech.generate(tmp_path_factory.mktemp('synth') / 'small', **SMALL)


def test_layout_and_audio(small):
    folders = sorted(p.name for p in small.iterdir() if p.is_dir())
    assert folders == sorted(WORDS)
    wavs = sorted(small.glob('*/*.wav'))
    assert len(wavs) == len(WORDS) * SMALL['n_speakers'] * SMALL['renditions']
    for wav in wavs:
        match = NAME.match(wav.name)
        assert match, wav.name
        assert int(match['n']) < SMALL['renditions']
        info = sf.info(wav)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, 'PCM_16')
        x, _ = sf.read(wav, dtype='int16')
        assert 0 < len(x) <= 16000
        assert np.abs(x).max() > 3000                       # not silent
        loud = np.flatnonzero(np.abs(x) > 100)
        assert 0.1 < (loud[-1] - loud[0]) / 16000 < 0.97    # a word, not cut at the edges
        assert loud[0] > 0 and loud[-1] < len(x) - 1
    assert json.loads((small / '.complete').read_text())['seed'] == SMALL['seed']
    for list_name in ('validation_list.txt', 'testing_list.txt'):
        lines = _lines(small / list_name)
        assert lines
        for rel in lines:
            assert not rel.startswith('/') and rel.count('/') == 1
            assert (small / rel).is_file() and rel.endswith('.wav')
    assert not set(_lines(small / 'validation_list.txt')) & set(_lines(small / 'testing_list.txt'))


def test_held_out_speakers_are_unseen(small):
    val, test = set(_lines(small / 'validation_list.txt')), set(_lines(small / 'testing_list.txt'))
    splits = {}
    for rel in _files(small):
        if rel.endswith('.wav'):
            speaker = NAME.match(rel.split('/')[1])['speaker']
            splits.setdefault(speaker, set()).add('val' if rel in val else
                                                  'test' if rel in test else 'train')
    assert all(len(s) == 1 for s in splits.values()), splits   # a speaker is in one split
    by_split = {name: {spk for spk, s in splits.items() if s == {name}}
                for name in ('train', 'val', 'test')}
    assert all(by_split.values()), by_split
    # held-out speakers also use eSpeak voice variants that no training speaker uses
    info = json.loads((small / 'speakers.json').read_text())
    assert {spk: v['split'] for spk, v in info.items()} == {
        spk: name for name, spks in by_split.items() for spk in spks}
    variants = {name: {info[spk]['variant'] for spk in spks} for name, spks in by_split.items()}
    assert not variants['train'] & (variants['val'] | variants['test'])
    assert not variants['val'] & variants['test']


def test_same_seed_same_bytes(small, tmp_path):
    again = synth_speech.generate(tmp_path / 'again', workers=1, **SMALL)
    names = _files(small)
    assert names == _files(again)
    for rel in names:
        assert (small / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_second_call_reuses(small, monkeypatch):
    before = {rel: (small / rel).stat().st_mtime_ns for rel in _files(small)}

    def fail(*args, **kwargs):
        raise AssertionError('regenerated a complete dataset')

    monkeypatch.setattr(synth_speech, '_run_shards', fail)
    assert synth_speech.generate(small, **SMALL) == small
    assert {rel: (small / rel).stat().st_mtime_ns for rel in _files(small)} == before


def test_words_sound_different(small):
    speaker = NAME.match(next((small / 'yes').glob('*.wav')).name)['speaker']
    clips = {w: sf.read(small / w / f'{speaker}_nohash_0.wav')[0] for w in WORDS}

    def spectrum(x):
        s = np.abs(np.fft.rfft(x * np.hanning(len(x))))
        s = np.add.reduceat(s, np.arange(0, len(s), 40))    # coarse bands
        return s / np.linalg.norm(s)

    for a in WORDS:
        for b in WORDS:
            if a < b:
                assert not np.array_equal(clips[a], clips[b])
                assert spectrum(clips[a]) @ spectrum(clips[b]) < 0.98, (a, b)


def test_other_parameters_replace_the_set(tmp_path):
    out = tmp_path / 'set'
    tiny = dict(words=('go',), n_speakers=3, renditions=1)
    synth_speech.generate(out, seed=0, **tiny)
    first = {rel: (out / rel).read_bytes() for rel in _files(out)}
    synth_speech.generate(out, seed=1, **tiny)
    assert json.loads((out / '.complete').read_text())['seed'] == 1
    second = {rel: (out / rel).read_bytes() for rel in _files(out)}
    assert first != second
    assert sorted(p.name for p in tmp_path.iterdir()) == ['set']   # no temporary folders left


def test_refuses_foreign_folder(tmp_path):
    (tmp_path / 'mine.txt').write_text('keep me')
    with pytest.raises(FileExistsError):
        synth_speech.generate(tmp_path, words=('go',), n_speakers=3, renditions=1)
    assert _files(tmp_path) == ['mine.txt']


def test_long_words_are_sped_up_to_fit():
    engine = synth_speech._engine()
    limit = int(0.95 * synth_speech.ESPEAK_RATE)
    x, rate = synth_speech._synth_word(engine, 'en-us', 'm3', 'internationalisation', 80, 50,
                                       50, 1, max_samples=limit)
    assert 0 < len(x) <= limit and rate > 80


def test_unknown_variant_is_an_error(tmp_path):
    with pytest.raises(ValueError, match='variant'):
        synth_speech.generate(tmp_path / 'x', words=('go',), n_speakers=3, renditions=1,
                              variants=('m1', 'm2', 'no-such-variant'))


def test_missing_library_message(tmp_path, small, monkeypatch):
    monkeypatch.setitem(sys.modules, 'espeakng_loader', None)   # makes the import fail
    with pytest.raises(RuntimeError, match='pip install espeakng-loader'):
        synth_speech.generate(tmp_path / 'x', words=('go',), n_speakers=3, renditions=1)
    assert synth_speech.generate(small, **SMALL) == small       # a finished set still loads


def test_ensure_uses_versioned_folder(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(synth_speech, 'generate', lambda path, **kw: calls.append(path) or path)
    assert synth_speech.ensure(tmp_path) == tmp_path / 'synth_speech_v1'
    assert calls == [tmp_path / 'synth_speech_v1']
