"""Offline demo dataset: spoken command words synthesised with eSpeak NG.

The eSpeak NG library and its data come from the ``espeakng-loader`` wheel and are driven
through ctypes (no espeak executable is needed). The result uses the Speech Commands
layout, so the same loader reads both::

    out_dir/<word>/<speaker>_nohash_<n>.wav    16-bit mono PCM, 16 kHz, exactly 1 s
    out_dir/validation_list.txt                 word/file.wav, one per line
    out_dir/testing_list.txt
    out_dir/speakers.json                       speaker -> voice, variant, split
    out_dir/.complete                           JSON of the generation parameters

A speaker is an English eSpeak voice (accent) combined with a voice variant (``+m3``,
``+f2``, ``+klatt``...), e.g. ``en-us+f3``. Each speaker says every word ``renditions``
times, each time with its own speed, pitch, pitch range and gain drawn from a seeded RNG
around a per-speaker base. Validation and test speakers use variants that no training
speaker uses (the split is by speaker, deterministic from ``seed``).

Determinism: eSpeak keeps some synthesis state (pitch flutter phase...) from one
utterance to the next that no API call resets, so the same text comes out slightly
differently depending on what was spoken before in the process. Synthesis therefore runs
in freshly started Python worker processes, one per fixed shard of speakers, which makes the
files a function of the parameters alone.

    python synth_speech.py [out_dir]     # generate the default set and time it
"""
import concurrent.futures
import ctypes
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
import uuid
import wave
from pathlib import Path

import numpy as np

__all__ = ['KEYWORDS', 'VOICES', 'VARIANTS', 'generate', 'ensure', 'DATASET_NAME']

FORMAT_VERSION = 1
DATASET_NAME = f'synth_speech_v{FORMAT_VERSION}'
KEYWORDS = ('yes', 'no', 'up', 'down', 'left', 'right', 'on', 'off', 'stop', 'go')

# English accents shipped with eSpeak NG (names as espeak_SetVoiceByName takes them).
VOICES = ('en', 'en-us', 'en-gb-scotland', 'en-gb-x-rp', 'en-029', 'en-gb-x-gbclan',
          'en-gb-x-gbcwmd', 'en-us-nyc')

# Voice variants (files in espeak-ng-data/voices/!v) that sound like a plain human talker:
# whispering, heavy-echo "robot", drawling (Marco) and joke variants are left out to keep
# the audio clean.
VARIANTS = (
    'm1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7', 'm8',
    'f1', 'f2', 'f3', 'f4', 'f5',
    'klatt', 'klatt2', 'klatt3',
    'Alex', 'Alicia', 'Andrea', 'Andy', 'Annie', 'AnxiousAndy', 'Denis', 'Diogo', 'Gene',
    'Gene2', 'Henrique', 'Hugo', 'Mario', 'Michael', 'Mike', 'Nguyen', 'Reed',
    'Storm', 'adam', 'anika', 'antonio', 'aunty', 'belinda', 'benjamin', 'boris', 'david',
    'ed', 'edward', 'gustave', 'ian', 'iven', 'john', 'linda', 'marcelo', 'max', 'michel',
    'miguel', 'mike2', 'norbert', 'paul', 'pedro', 'quincy', 'rob', 'robert', 'steph',
    'steph3', 'travis', 'victor', 'zac', 'grandma', 'grandpa',
)

ESPEAK_RATE = 22050            # eSpeak NG's own output rate
SAMPLE_RATE = 16000            # written files (Speech Commands rate)
CLIP_SAMPLES = SAMPLE_RATE     # 1 s
SHARD_SPEAKERS = 4             # speakers per fresh worker process (part of the output's identity)

# ranges of the per-speaker base and per-rendition jitter (eSpeak parameter units)
RATE_BASE = (110, 180)         # words per minute (eSpeak default 175; slower is more natural
                               # for an isolated word)
RATE_JITTER = 0.15             # +-15 % per rendition
PITCH_BASE = (30, 70)          # 0..100, 50 = the variant's own pitch
PITCH_JITTER = 10
RANGE = (20, 80)               # 0..100 pitch range (intonation), 50 = normal
GAIN_PEAK = (0.25, 0.9)        # peak amplitude as a fraction of full scale

# eSpeak NG API constants (speak_lib.h)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _PITCH, _RANGE = 1, 3, 4
_RATE_MAX = 450

_INSTALL_HINT = ('the eSpeak NG library is needed to synthesise the demo dataset: '
                 'pip install espeakng-loader')


# ------------------------------------------------------------------ eSpeak via ctypes

def _espeak_paths():
    try:
        import espeakng_loader
    except ImportError as exc:
        raise RuntimeError(f'{_INSTALL_HINT} ({exc})') from exc
    try:
        return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
    except Exception as exc:   # the wheel raises a bare RuntimeError/OSError when data is missing
        raise RuntimeError(f'{_INSTALL_HINT} (broken install: {exc})') from exc


def _load_library():
    lib_path, data_path = _espeak_paths()
    try:
        lib = ctypes.CDLL(lib_path)
    except OSError as exc:
        raise RuntimeError(f'cannot load {lib_path}: {exc}; {_INSTALL_HINT}') from exc
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_Synth.restype = ctypes.c_int
    if hasattr(lib, 'espeak_ng_SetRandSeed'):
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = None
    return lib, data_path


def espeak_version():
    """Version string of the eSpeak NG library (raises RuntimeError when it is missing)."""
    lib, _ = _load_library()
    return lib.espeak_Info(None).decode()


_CALLBACK_TYPE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                  ctypes.c_void_p)


class _Espeak:
    """The process-wide eSpeak NG engine in synchronous mode, collecting samples."""

    def __init__(self):
        self.lib, data_path = _load_library()
        rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(),
                                          _INITIALIZE_DONT_EXIT)
        if rate != ESPEAK_RATE:
            raise RuntimeError(f'espeak_Initialize failed (returned {rate}) with data at '
                               f'{data_path}; {_INSTALL_HINT}')
        self._chunks = []
        self._callback = _CALLBACK_TYPE(self._collect)   # keep a reference: C holds it
        self.lib.espeak_SetSynthCallback(self._callback)
        self._variant_dir = Path(data_path) / 'voices' / '!v'
        # breath noise uses eSpeak's own generator (seeded from the clock at start-up) and
        # Klatt voices the C library's rand(): both are seeded before every utterance
        self._seed_espeak = getattr(self.lib, 'espeak_ng_SetRandSeed', None)
        try:
            self._srand = ctypes.CDLL(None).srand
            self._srand.argtypes = [ctypes.c_uint]
        except (OSError, AttributeError, TypeError):   # no C library handle (Windows)
            self._srand = None

    def _collect(self, wav, n, events):
        if wav and n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def check_voice(self, voice, variant):
        # eSpeak silently ignores an unknown "+variant", so look for its file ourselves
        if variant and not (self._variant_dir / variant).is_file():
            raise ValueError(f'unknown eSpeak voice variant {variant!r} '
                             f'(not in {self._variant_dir})')
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f'unknown eSpeak voice {voice!r}')

    def say(self, voice, variant, text, rate, pitch, pitch_range, noise_seed=0):
        name = f'{voice}+{variant}' if variant else voice
        err = self.lib.espeak_SetVoiceByName(name.encode())
        if err != 0:
            raise RuntimeError(f'espeak_SetVoiceByName({name!r}) failed with {err}')
        for parameter, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range)):
            self.lib.espeak_SetParameter(parameter, int(value), 0)
        if self._seed_espeak is not None:
            self._seed_espeak(noise_seed)
        if self._srand is not None:
            self._srand(noise_seed)
        self._chunks = []
        data = text.encode('utf-8')
        err = self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8,
                                    None, None)
        if err != 0:
            raise RuntimeError(f'espeak_Synth({text!r}) failed with {err}')
        chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


_ENGINE = None


def _engine():
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Espeak()
    return _ENGINE


# ------------------------------------------------------------------ signal helpers

def _speech_bounds(x, sample_rate, floor_db=-40.0):
    """(start, stop) sample indices of the part of x louder than floor_db below its loudest
    10 ms frame, widened by 10 ms before and 20 ms after."""
    frame = sample_rate // 100
    n = len(x) // frame
    if n == 0:
        return 0, len(x)
    rms = np.sqrt((x[:n * frame].astype(np.float64).reshape(n, frame) ** 2).mean(axis=1))
    loud = np.flatnonzero(rms > rms.max() * 10 ** (floor_db / 20))
    if len(loud) == 0:
        return 0, 0
    start = max(0, (loud[0] - 1) * frame)
    stop = min(len(x), (loud[-1] + 3) * frame)
    return start, stop


def _fade(x, sample_rate, seconds=0.005):
    k = min(len(x) // 2, int(sample_rate * seconds))
    if k > 0:
        ramp = np.linspace(0.0, 1.0, k + 2)[1:-1]
        x[:k] *= ramp
        x[-k:] *= ramp[::-1]
    return x


def _synth_word(engine, voice, variant, word, rate, pitch, pitch_range, noise_seed,
                max_samples):
    """Trimmed float32 waveform at 22,050 Hz, re-synthesised faster if it is too long."""
    for _ in range(8):
        raw = engine.say(voice, variant, word, rate, pitch, pitch_range, noise_seed)
        start, stop = _speech_bounds(raw, ESPEAK_RATE)
        if stop <= start:
            raise RuntimeError(f'eSpeak produced silence for {word!r} with {voice}+{variant}')
        if stop - start <= max_samples or rate >= _RATE_MAX:
            break
        rate = min(_RATE_MAX, int(np.ceil(rate * (stop - start) / max_samples * 1.05)))
    x = raw[start:stop].astype(np.float32) / 32768.0
    if len(x) > max_samples:   # still too long at the fastest rate: keep the start
        x = x[:max_samples]
    return _fade(x, ESPEAK_RATE), rate


def _synth_shard(jobs, max_samples):
    """Worker body: jobs are (voice, variant, word, rate, pitch, range, noise seed); returns
    one float32 array at 22,050 Hz and the rate used, per job."""
    engine = _engine()
    return [_synth_word(engine, *job, max_samples=max_samples) for job in jobs]


def _worker_main():
    """`python synth_speech.py --worker`: pickled (jobs, max_samples) on stdin, pickled
    results on stdout. Anything the C library prints goes to stderr."""
    out = os.fdopen(os.dup(sys.stdout.fileno()), 'wb')
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    jobs, max_samples = pickle.load(sys.stdin.buffer)
    pickle.dump(_synth_shard(jobs, max_samples), out, protocol=pickle.HIGHEST_PROTOCOL)
    out.close()


def _run_one_shard(payload):
    # A fresh interpreter per shard, started on this file rather than through
    # multiprocessing, so that the caller's __main__ is never re-imported.
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), '--worker'], input=payload,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors='replace').strip()[-2000:]
        raise RuntimeError(f'eSpeak synthesis worker failed (exit {proc.returncode}):\n{tail}')
    return pickle.loads(proc.stdout)


def _run_shards(shard_jobs, max_samples, workers):
    """Results of each shard, in order, computed by up to `workers` worker processes."""
    payloads = [pickle.dumps((jobs, max_samples), protocol=pickle.HIGHEST_PROTOCOL)
                for jobs in shard_jobs]
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        yield from pool.map(_run_one_shard, payloads)


# ------------------------------------------------------------------ plan

def _plan(words, seed, n_speakers, renditions, val_frac, test_frac, voices, variants):
    """Speakers (name -> voice, variant, split) and per-speaker rendition parameters."""
    if n_speakers < 1 or renditions < 1:
        raise ValueError('n_speakers and renditions must be >= 1')
    if n_speakers > len(voices) * len(variants):
        raise ValueError(f'n_speakers={n_speakers} exceeds the {len(voices)} voices x '
                         f'{len(variants)} variants available')
    rng = np.random.default_rng([seed, 0])
    voice_order = [voices[i] for i in rng.permutation(len(voices))]
    variant_order = [variants[i] for i in rng.permutation(len(variants))]
    used_variants = variant_order[:min(n_speakers, len(variants))]

    # split by variant, so held-out speakers have timbres never heard in training
    n_used = len(used_variants)
    n_test = int(round(n_used * test_frac))
    n_val = int(round(n_used * val_frac))
    if n_used >= 3:
        n_test = max(n_test, int(test_frac > 0))
        n_val = max(n_val, int(val_frac > 0))
    if n_test + n_val >= n_used:
        raise ValueError(f'n_speakers={n_speakers} leaves no training speakers with '
                         f'val_frac={val_frac}, test_frac={test_frac}')
    split_of = {v: 'test' for v in used_variants[:n_test]}
    split_of.update({v: 'val' for v in used_variants[n_test:n_test + n_val]})

    speakers = {}
    for k in range(n_speakers):
        variant = used_variants[k % n_used]
        voice = voice_order[(k + k // n_used) % len(voice_order)]
        speakers[f'{voice}+{variant}'] = {'voice': voice, 'variant': variant,
                                          'split': split_of.get(variant, 'train')}

    jobs = {}
    for k, name in enumerate(speakers):
        r = np.random.default_rng([seed, 1, k])
        rate_base = r.uniform(*RATE_BASE)
        pitch_base = r.uniform(*PITCH_BASE)
        shape = (len(words), renditions)
        rate = np.clip(rate_base * (1 + r.uniform(-RATE_JITTER, RATE_JITTER, shape)), 80, 450)
        pitch = np.clip(pitch_base + r.uniform(-PITCH_JITTER, PITCH_JITTER, shape), 0, 100)
        pitch_range = r.uniform(*RANGE, shape)
        gain = r.uniform(*GAIN_PEAK, shape)
        noise_seed = r.integers(1, 2 ** 31 - 1, shape)
        jobs[name] = [(wi, n, int(round(rate[wi, n])), int(round(pitch[wi, n])),
                       int(round(pitch_range[wi, n])), int(noise_seed[wi, n]), float(gain[wi, n]))
                      for wi in range(len(words)) for n in range(renditions)]
    return speakers, jobs


# ------------------------------------------------------------------ writing

def _write_wav(path, samples):
    with wave.open(str(path), 'wb') as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(SAMPLE_RATE)
        f.writeframes(samples.astype('<i2').tobytes())


def _to_clip(x16, gain):
    """Place a 16 kHz waveform in the middle of a 1-s int16 clip with the given peak."""
    if len(x16) > CLIP_SAMPLES:
        x16 = _fade(x16[:CLIP_SAMPLES].copy(), SAMPLE_RATE)
    peak = float(np.abs(x16).max())
    clip = np.zeros(CLIP_SAMPLES, np.float32)
    offset = (CLIP_SAMPLES - len(x16)) // 2
    clip[offset:offset + len(x16)] = x16 * (gain / peak if peak > 0 else 0.0)
    return np.clip(np.round(clip * 32767), -32768, 32767).astype(np.int16)


def _resample(waves):
    """List of float32 22,050 Hz arrays -> list of float32 16 kHz arrays (one batched call)."""
    import torch
    import torchaudio.functional as AF
    longest = max(len(w) for w in waves)
    batch = torch.zeros(len(waves), longest)
    for i, w in enumerate(waves):
        batch[i, :len(w)] = torch.from_numpy(w)
    out = AF.resample(batch, ESPEAK_RATE, SAMPLE_RATE).numpy()
    return [out[i, :int(np.ceil(len(w) * SAMPLE_RATE / ESPEAK_RATE))] for i, w in enumerate(waves)]


def _read_marker(folder):
    try:
        return json.loads((Path(folder) / '.complete').read_text())
    except (OSError, ValueError):
        return None


def _is_complete(folder, params):
    """Whether folder holds a finished dataset made with params (any eSpeak version when
    params has none, i.e. the library is not installed here)."""
    marker = _read_marker(folder)
    if not isinstance(marker, dict):
        return False
    if params['espeak_version'] is None:
        marker = dict(marker, espeak_version=None)
    return marker == params


def _replaceable(folder):
    """An empty folder or an earlier synth_speech dataset (which generate may replace)."""
    return folder.is_dir() and (_read_marker(folder) is not None or not any(folder.iterdir()))


def _check_words(words):
    words = tuple(words)
    if not words or len(set(words)) != len(words):
        raise ValueError(f'words must be non-empty and distinct: {words}')
    for w in words:
        if (not isinstance(w, str) or not w.strip() or w != w.strip() or w.startswith(('.', '_'))
                or any(c in w for c in '/\\:*?"<>|\0')):
            raise ValueError(f'word {w!r} cannot be used as a folder name')
    return words


def generate(out_dir, words=KEYWORDS, seed=0, n_speakers=40, renditions=8, val_frac=0.1,
             test_frac=0.1, voices=VOICES, variants=VARIANTS, workers=None, verbose=False):
    """Synthesise the dataset into out_dir (Speech Commands layout) and return its Path.

    n_speakers voice+variant combinations each say every word `renditions` times (default
    10 words x 40 speakers x 8 = 3,200 one-second clips). Validation/test speakers (about
    val_frac/test_frac of them) use variants absent from training. If out_dir already
    holds a complete dataset made with the same parameters it is returned untouched. The
    folder is built next to out_dir and renamed into place, so it is either complete or
    absent. workers: parallel synthesis processes (default: up to 2, the CPU count);
    the output does not depend on it.
    """
    out_dir = Path(out_dir)
    words = _check_words(words)
    try:
        version = espeak_version()
    except RuntimeError:
        version = None           # fine as long as the dataset is already there
    params = {
        'format_version': FORMAT_VERSION, 'words': list(words), 'seed': int(seed),
        'n_speakers': int(n_speakers), 'renditions': int(renditions),
        'val_frac': float(val_frac), 'test_frac': float(test_frac),
        'voices': list(voices), 'variants': list(variants), 'sample_rate': SAMPLE_RATE,
        'clip_samples': CLIP_SAMPLES, 'shard_speakers': SHARD_SPEAKERS,
        'espeak_version': version,
    }
    if _is_complete(out_dir, params):
        return out_dir
    if version is None:
        espeak_version()         # raises the RuntimeError with the install hint
    if out_dir.exists() and not _replaceable(out_dir):
        raise FileExistsError(f'{out_dir} exists and is not a synth_speech dataset; '
                              f'remove it or choose another folder')

    t0 = time.perf_counter()
    speakers, jobs = _plan(words, seed, n_speakers, renditions, val_frac, test_frac,
                           tuple(voices), tuple(variants))
    _check_voices(speakers)

    names = list(speakers)
    shards = [names[i:i + SHARD_SPEAKERS] for i in range(0, len(names), SHARD_SPEAKERS)]
    max_samples = int(0.95 * ESPEAK_RATE)
    shard_jobs = [[(speakers[s]['voice'], speakers[s]['variant'], words[wi], *prosody)
                   for s in shard for wi, n, *prosody, _ in jobs[s]] for shard in shards]
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    workers = max(1, min(int(workers), len(shards)))

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f'.{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}'
    tmp.mkdir()
    try:
        for w in words:
            (tmp / w).mkdir()
        lists = {'val': [], 'test': []}
        sped_up = 0
        for shard, results in zip(shards, _run_shards(shard_jobs, max_samples, workers)):
            waves16 = _resample([x for x, _ in results])
            i = 0
            for s in shard:
                for wi, n, rate, _, _, _, gain in jobs[s]:
                    rel = f'{words[wi]}/{s}_nohash_{n}.wav'
                    _write_wav(tmp / rel, _to_clip(waves16[i], gain))
                    sped_up += results[i][1] != rate
                    if speakers[s]['split'] in lists:
                        lists[speakers[s]['split']].append(rel)
                    i += 1
        for split, filename in (('val', 'validation_list.txt'), ('test', 'testing_list.txt')):
            text = ''.join(f'{rel}\n' for rel in sorted(lists[split]))
            (tmp / filename).write_text(text)
        (tmp / 'speakers.json').write_text(json.dumps(speakers, indent=1) + '\n')
        (tmp / '.complete').write_text(json.dumps(params) + '\n')
        _move_into_place(tmp, out_dir, params)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if verbose:
        n_clips = sum(len(j) for j in jobs.values())
        print(f'synth_speech: {n_clips} clips, {len(speakers)} speakers '
              f'({sped_up} re-synthesised faster to fit 1 s) in '
              f'{time.perf_counter() - t0:.1f} s -> {out_dir}')
    return out_dir


def _check_voices(speakers):
    """Validate voice and variant names in this process before spawning workers."""
    engine = _engine()
    for voice, variant in sorted({(s['voice'], s['variant']) for s in speakers.values()}):
        engine.check_voice(voice, variant)


def _move_into_place(tmp, out_dir, params):
    try:
        os.rename(tmp, out_dir)
        return
    except OSError:
        if not out_dir.exists():
            raise
    if _is_complete(out_dir, params):              # a concurrent run finished first
        shutil.rmtree(tmp, ignore_errors=True)
        return
    if _replaceable(out_dir):
        # an older synthetic set with other parameters: swap it out, then delete it
        old = out_dir.parent / f'.{out_dir.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}'
        os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
        return
    raise FileExistsError(f'{out_dir} exists and is not a synth_speech dataset; '
                          f'remove it or choose another folder')


def ensure(cache_dir):
    """Path(cache_dir)/'synth_speech_v1' holding the default dataset, generated if needed."""
    return generate(Path(cache_dir) / DATASET_NAME, verbose=True)


if __name__ == '__main__':
    if sys.argv[1:] == ['--worker']:
        _worker_main()
        sys.exit(0)
    target = Path(sys.argv[1] if len(sys.argv) > 1 else 'out') / DATASET_NAME
    start = time.perf_counter()
    generate(target, verbose=True)
    print(f'total {time.perf_counter() - start:.1f} s')
