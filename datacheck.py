"""Checks of labelled audio before a run trains on it, and the --inspect report.

A run on --dataset=folder checks its folders as it loads them: one class, or a class too
small for every split, stops it (before anything is written); files that are digital
silence, the same audio in two splits or twice in one, class imbalance beyond 10:1, and
files that are not audio or in no class folder are said, and written to data_report.txt
in the run directory; the same audio in two classes stops it. `--inspect=True` prints the
same checks, with the files' durations, rates and channels, and writes nothing.

What a file holds is judged on its decoded 16-bit samples, as the waveform cache holds them
(its clip, or every window of it under --labelled_windows): digital silence is a file whose
every sample is 0 there, and two files hold the same audio when those samples are equal
(a SHA-1 of them). Decoded samples rather than file bytes: the same recording saved again
as FLAC or with another header is still caught, and a run hashes the cache it builds anyway,
decoding nothing more. (Lossy copies, an MP3 of a WAV, differ and are not caught.)
"""
import hashlib
import statistics
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import audio
from config import UserError

SPLITS = ('train', 'val', 'test')
SMALL_CLASSES = ('refuse', 'train_only')
IMBALANCE = 10          # the largest class this many times the smallest: said


@dataclass
class Facts:
    """What decoding found in each listed item (a file; a cut of one for speechcommands12):
    its windows (0 when unreadable), a digest of its samples, whether it is silent, and
    why it could not be read."""
    windows: np.ndarray
    digests: list
    silent: np.ndarray
    errors: list


@dataclass
class Problem:
    message: str
    stops: bool = False     # a new run refuses to start


@dataclass
class Survey:
    """A listing and its facts, judged: which items a run uses (`keep`), what it finds,
    and the problems to say or to stop on."""
    found: object
    facts: Facts
    keep: np.ndarray
    silent: list = field(default_factory=list)
    same_in_classes: list = field(default_factory=list)     # groups of items
    same_in_splits: list = field(default_factory=list)
    same_in_split: list = field(default_factory=list)
    problems: list = field(default_factory=list)


def digest(rows):
    return hashlib.sha1(np.ascontiguousarray(rows).tobytes()).hexdigest()


def facts_of(groups, items):
    """Facts from (item, int16 rows or None, error or None) triples."""
    facts = Facts(np.zeros(items, dtype=np.int64), [None] * items, np.zeros(items, dtype=bool),
                  [None] * items)
    for item, rows, error in groups:
        if rows is None or not len(rows):
            facts.errors[item] = error or 'unreadable'
            continue
        facts.windows[item] = len(rows)
        facts.digests[item] = digest(rows)
        facts.silent[item] = not rows.any()
    return facts


def cache_facts(waves, item_of_row, paths, skipped=()):
    """Facts of the items `paths` from their rows in a waveform cache (consecutive rows per
    item); `skipped`: the cache's 'path: error' lines of the files it could not read."""
    item_of_row = np.asarray(item_of_row)
    bounds = np.flatnonzero(np.diff(item_of_row)) + 1
    starts, ends = np.r_[0, bounds], np.r_[bounds, len(item_of_row)]
    groups = [(int(item_of_row[a]), waves[a:b], None) for a, b in zip(starts, ends) if b > a]
    facts = facts_of(groups, len(paths))
    why = {}
    for line in skipped:
        path, _, error = line.partition(': ')
        why.setdefault(path.split(' at ')[0], error)
    facts.errors = [None if n else why.get(path, 'unreadable')
                    for n, path in zip(facts.windows, paths)]
    return facts


def decoded_facts(found, sample_rate, clip_samples, hop=None):
    """Facts by decoding every item in memory (threads; no cache written): its windows
    `hop` samples apart, or its one clip when hop is None (the run's two ways)."""
    import torch

    def decode(item):
        try:
            if hop:
                rows = audio.window_rows(found.paths[item], sample_rate, clip_samples, hop)[0]
            else:
                offset = found.offsets[item] if found.offsets is not None else 0.0
                row, _ = audio.cache_row(found.paths[item], sample_rate, clip_samples, offset)
                rows = row[None]
            return item, rows, None
        except ValueError as error:
            return item, None, str(error)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)        # threads over files instead (as the cache build does)
    try:
        with ThreadPoolExecutor(audio.decode_workers()) as pool:
            return facts_of(pool.map(decode, range(len(found.paths))), len(found.paths))
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------- judging

def plural(n, word):
    return f'{n} {word}' + ('' if n == 1 else 'es' if word.endswith('s') else 's')


def agree(n, one, many):
    """The word for one thing, or for several: agree(n, 'is', 'are')."""
    return one if n == 1 else many


def listing_problems(found):
    """What the listing alone shows: one class; files that are not audio, or in no class."""
    problems = []
    root = Path(found.root) if found.root else None
    if len(found.classes) == 1:
        problems.append(Problem(
            f'{root} holds one class folder ({found.classes[0]}/): a classifier needs at least '
            f'two classes. Put each class\'s audio in a sub-folder of its own, e.g. '
            f'{root}/dog/*.wav and {root}/cat/*.wav', stops=True))
    if found.others:
        n = len(found.others)
        by_extension = Counter(Path(p).suffix.lower() or '(no extension)' for p in found.others)
        kinds = ', '.join(f'{e} {k}' for e, k in by_extension.most_common())
        problems.append(Problem(
            f'{plural(n, "file")} under the class folders of {root} {agree(n, "is", "are")} not '
            f'audio this reads ({kinds}; e.g. {found.others[0]}), left out: convert '
            f'{agree(n, "it", "them")} to {"/".join(audio.AUDIO_EXTENSIONS)} to use '
            f'{agree(n, "it", "them")}'))
    if found.loose:
        n = len(found.loose)
        problems.append(Problem(
            f'{plural(n, "audio file")} directly in {root} (e.g. {found.loose[0]}) '
            f'{agree(n, "is", "are")} in no class folder, left out: move {agree(n, "it", "them")} '
            f'into the folder of {agree(n, "its", "their")} class'))
    return problems


def counts(class_of, split_of, paths, windows, classes):
    """{'files': {split: {class: n}}, 'windows': {...}}: distinct files and windows (clips)
    of each class in each split."""
    files = {s: {c: set() for c in classes} for s in SPLITS}
    clips = {s: {c: 0 for c in classes} for s in SPLITS}
    for name, split, path, n in zip(class_of, split_of, paths, windows):
        files[split][name].add(path)
        clips[split][name] += int(n)
    return {'files': {s: {c: len(v) for c, v in files[s].items()} for s in SPLITS},
            'windows': clips}


def data_counts(data):
    """counts() of loaded AudioData: each split's clips by class (windows) and files."""
    rows = np.concatenate([data.splits[s] for s in SPLITS]).astype(np.int64)
    split_of = np.repeat(SPLITS, [len(data.splits[s]) for s in SPLITS])
    return counts([data.classes[k] for k in data.labels[rows]], split_of,
                  [data.paths[i] for i in rows], np.ones(len(rows), dtype=np.int64), data.classes)


def survey(found, facts, skip_silent=False, small_classes='refuse', skip_bad_files=False):
    """Judge a listing's facts: what a run keeps, and the problems (listing_problems apart)."""
    items = len(found.paths)
    readable = facts.windows > 0
    result = Survey(found, facts, readable & ~(facts.silent if skip_silent else False))
    result.silent = [i for i in range(items) if facts.silent[i]]
    problems = result.problems
    unreadable = [i for i in range(items) if not readable[i]]
    if unreadable:
        first = unreadable[0]
        problems.append(Problem(
            f'{plural(len(unreadable), "file")} cannot be read (e.g. {found.paths[first]}: '
            f'{facts.errors[first]}): ' + ('skipped (--skip_bad_files=True)' if skip_bad_files
                                           else 'a run stops on them unless --skip_bad_files=True'),
            stops=not skip_bad_files))
    if result.silent:
        first = found.paths[result.silent[0]]
        problems.append(Problem(
            f'{plural(len(result.silent), "file")} of {int(readable.sum())} '
            f'{agree(len(result.silent), "is", "are")} digital silence (every sample 0 at '
            f'16 bits; e.g. {first}): '
            + ('left out (--skip_silent=True)' if skip_silent else
               'kept, as silent clips of their folder\'s class (--skip_silent=True leaves them '
               'out)') + '; all are listed in data_report.txt in the run directory'))
    # the same audio twice: silent files are all alike, and said above
    same = defaultdict(list)
    for i in range(items):
        if readable[i] and not facts.silent[i]:
            same[facts.digests[i]].append(i)
    for group in (g for g in same.values() if len(g) > 1):
        if len({found.class_names[i] for i in group}) > 1:
            result.same_in_classes.append(group)
        elif len({found.splits[i] for i in group}) > 1:
            result.same_in_splits.append(group)
        else:
            result.same_in_split.append(group)

    def pair(group, label):
        """Two items of the group, differing in `label` where any do."""
        a = group[0]
        b = next((i for i in group[1:] if label(i) != label(a)), group[1])
        return f'{found.paths[a]} ({label(a)}) and {found.paths[b]} ({label(b)})'

    if result.same_in_classes:
        groups = result.same_in_classes
        problems.append(Problem(
            f'{pair(groups[0], lambda i: found.class_names[i])} hold the same audio (equal '
            f'decoded 16-bit samples)' + (f'; {len(groups)} such groups in all, listed by '
                                          f'--inspect=True' if len(groups) > 1 else '')
            + ': one recording cannot teach two classes. Keep it in the folder of its class only',
            stops=True))
    if result.same_in_splits:
        groups = result.same_in_splits
        example = pair(groups[0], lambda i: found.splits[i])
        problems.append(Problem(
            f'{plural(len(groups), "recording")} of one class {agree(len(groups), "is", "are")} '
            f'in two splits (equal decoded samples; e.g. {example}): the model is then tested on '
            f'audio it trained on, so validation and test accuracy are too high; remove the '
            f'copies (all are listed in data_report.txt)'))
    if result.same_in_split:
        groups = result.same_in_split
        copies = sum(len(g) - 1 for g in groups)
        problems.append(Problem(
            f'{plural(copies, "file")} {agree(copies, "copies", "copy")} another of the same '
            f'class and split (e.g. {pair(groups[0], lambda i: found.splits[i])}): each counts '
            f'more than once'))
    problems += class_problems(found, facts, result.keep, small_classes)
    return result


def class_problems(found, facts, keep, small_classes):
    """A class without training files (refused); one that the split leaves out of
    validation or test (refused, or with --small_classes=train_only said; said when it is
    the files left out, unreadable or silent, that empty a split); imbalance beyond
    IMBALANCE:1 in training clips."""
    def table_of(items):
        return counts([found.class_names[i] for i in items], [found.splits[i] for i in items],
                      [found.paths[i] for i in items], facts.windows[items], found.classes)
    listed = table_of(np.arange(len(found.paths)))['files']
    kept = table_of(np.flatnonzero(keep))
    files = kept['files']
    problems = []
    total = {c: sum(listed[s][c] for s in SPLITS) for c in found.classes}
    lists = found.split_by.startswith('validation_list')

    def named(classes, what):
        return (f'class{"es" if len(classes) > 1 else ""} '
                + ', '.join(f'{c} ({plural(total[c], "file")}; {what(c)})' for c in classes))

    def missing(table, c):
        return 'none in ' + ' or '.join(s for s in ('val', 'test') if not table[s][c])

    untrained = [c for c in found.classes if not files['train'][c]]
    if untrained:
        problems.append(Problem(
            named(untrained, lambda c: f'{files["train"][c]} usable in training')
            + f': the model cannot learn {"them" if len(untrained) > 1 else "it"} without '
              f'training files; '
            + ('list fewer of its files in validation_list.txt / testing_list.txt' if lists
               else 'add files to its folder'), stops=True))
    small = [c for c in found.classes if c not in untrained
             and not (listed['val'][c] and listed['test'][c])]
    they = 'their' if len(small) > 1 else 'its'
    if small and small_classes == 'train_only':
        problems.append(Problem(
            f'{named(small, lambda c: missing(listed, c))} {"are" if len(small) > 1 else "is"} '
            f'in training only (--small_classes=train_only): {they} accuracy is not measured'))
    elif small:
        problems.append(Problem(
            f'{named(small, lambda c: missing(listed, c))}: too few files to appear in every '
            f'split, so {they} accuracy would not be measured. '
            + ('List some of its files in validation_list.txt and testing_list.txt' if lists
               else 'Give it 3 files or more (the 80/10/10 split by file then puts one in '
                    'each split)')
            + ', or run with --small_classes=train_only to train on it unmeasured',
            stops=True))
    emptied = [c for c in found.classes if c not in untrained and c not in small
               and not (files['val'][c] and files['test'][c])]
    if emptied:
        problems.append(Problem(
            named(emptied, lambda c: f'{missing(files, c)} once unreadable or silent files are '
                                     f'left out')
            + f': {agree(len(emptied), "its", "their")} accuracy is not measured there'))
    trained = kept['windows']['train']
    if trained and min(trained.values()) > 0:
        ratio = max(trained.values()) / min(trained.values())
        if ratio > IMBALANCE:
            problems.append(Problem(
                f'the classes are imbalanced {ratio:.0f}:1 in training clips ('
                + ', '.join(f'{c} {n}' for c, n in sorted(trained.items(), key=lambda x: -x[1]))
                + '): accuracy mostly reflects the large classes; read the per-class accuracy '
                  '(results.json), or even out the folders'))
    return problems


def act(problems, strict=True):
    """Say every problem that does not stop a run; then refuse the first that does."""
    if not strict:
        return
    for problem in problems:
        if not problem.stops:
            print(f'note: {problem.message}')
    for problem in problems:
        if problem.stops:
            raise UserError(problem.message)


# ---------------------------------------------------------------- the report

def table(numbers, classes):
    """Files and windows of each class in each split, as text."""
    width = max([5, *(len(c) for c in classes)])
    lines = [f'{"class":<{width}}  {"files":>6} {"train":>6} {"val":>5} {"test":>5}   '
             f'{"windows":>7} {"train":>6} {"val":>5} {"test":>5}']
    for name in [*classes, 'all']:
        row = []
        for what in ('files', 'windows'):
            per = [numbers[what][s][name] if name != 'all' else sum(numbers[what][s].values())
                   for s in SPLITS]
            row.append((sum(per), *per))
        (f, ft, fv, fs), (w, wt, wv, ws) = row
        lines.append(f'{name:<{width}}  {f:>6} {ft:>6} {fv:>5} {fs:>5}   '
                     f'{w:>7} {wt:>6} {wv:>5} {ws:>5}')
    return '\n'.join(lines)


def report(result, problems, heading, headers=None):
    """The text of a survey: heading, file headers (when read), the table, every silent file
    and every group of equal audio, and the problems."""
    found, facts = result.found, result.facts
    kept = np.flatnonzero(result.keep)
    lines = [heading]
    if found.split_by:
        lines.append(f'split: {found.split_by}')
    if headers:
        lines += header_lines(headers)
    lines.append(table(counts([found.class_names[i] for i in kept], [found.splits[i] for i in kept],
                              [found.paths[i] for i in kept], facts.windows[kept], found.classes),
                       found.classes))

    def listed(title, entries):
        lines.append(f'{title}: {len(entries) or "none"}')
        lines.extend(f'  {entry}' for entry in entries)

    listed('digital silence (every sample 0 at 16 bits)',
           [f'{found.paths[i]} ({found.class_names[i]}, {found.splits[i]})' for i in result.silent])
    for title, groups in (('the same audio in two classes', result.same_in_classes),
                          ('the same audio in two splits of a class', result.same_in_splits),
                          ('the same audio twice in one split', result.same_in_split)):
        listed(title, [' = '.join(f'{found.paths[i]} ({found.class_names[i]}, {found.splits[i]})'
                                  for i in group) for group in groups])
    lines.append('checks:' + ('' if problems else ' all passed'))
    for problem in problems:
        lines.append(f'  {"a run stops: " if problem.stops else "note: "}{problem.message}')
    return '\n'.join(lines) + '\n'


def title(name, found, facts, sample_rate, clip_samples, hop=None):
    """The report's first line: the dataset, its classes, files and windows, and the cut."""
    cut = (f'windows of {clip_samples / sample_rate:g} s, {hop / sample_rate:g} s apart '
           f'(--labelled_windows on)' if hop else
           f'clips of {clip_samples / sample_rate:g} s (the first of each file; '
           f'--labelled_windows off)')
    return (f'{name} at {found.root or "?"}: {plural(len(found.classes), "class")}, '
            f'{plural(len(set(found.paths)), "file")}, {int(facts.windows.sum())} {cut}')


def read_headers(paths):
    """(seconds, sample rate, channels, extension) of each distinct file, from its header;
    None for a file whose header cannot be read."""
    import soundfile

    def header(path):
        try:
            info = soundfile.info(path)
            return info.frames / info.samplerate, info.samplerate, info.channels, \
                Path(path).suffix.lower()
        except Exception:           # soundfile raises several types; the decode names it
            return None
    with ThreadPoolExecutor(audio.decode_workers()) as pool:
        return list(pool.map(header, sorted(set(paths))))


def header_lines(headers):
    known = [h for h in headers if h is not None]
    if not known:
        return ['headers: none could be read']
    seconds = [h[0] for h in known]

    def spread(values, unit=''):
        return ', '.join(f'{v}{unit} ({n})' for v, n in Counter(values).most_common())
    return [f'durations: {min(seconds):.2f} to {max(seconds):.2f} s, median '
            f'{statistics.median(seconds):.2f} s, {sum(seconds) / 60:.1f} min in all',
            f'sample rates (files): {spread([h[1] for h in known], " Hz")}',
            f'channels (files): {spread([h[2] for h in known])}',
            f'formats (files): {spread([h[3] for h in known])}'
            + (f'; {len(headers) - len(known)} headers unreadable'
               if len(known) < len(headers) else '')]


def inspect(cfg):
    """The report of what a run with these options would see of its labelled data, and
    the checks a --dataset=folder run makes; decodes in memory and writes nothing (but
    --dataset=synth's generated set, when it is not there yet)."""
    import dataset
    started = time.time()
    name = cfg['dataset']
    found = dataset.listing(name, cfg['data_root'], cfg['cache_dir'], False, cfg['label_seed'],
                            **{k: cfg[k] for k in ('nsynth_label', 'test_fold') if k in cfg})
    sample_rate = cfg['sample_rate']
    clip_samples = int(round((cfg['clip_seconds'] or found.clip_seconds) * sample_rate))
    windowed = dataset.labelled_windows_on(name, cfg.get('labelled_windows', 'auto'))
    hop = dataset.hop_samples(cfg.get('labelled_hop', 0.0), sample_rate, clip_samples) \
        if windowed else None
    if windowed and found.offsets is not None:
        raise UserError(dataset.cut_already(name))
    found.root = found.root or str(cfg['data_root'])
    headers = read_headers(found.paths)
    facts = decoded_facts(found, sample_rate, clip_samples, hop)
    result = survey(found, facts, cfg.get('skip_silent', False),
                    cfg.get('small_classes', 'refuse'), cfg.get('skip_bad_files', False))
    problems = listing_problems(found) + result.problems
    heading = title(name, found, facts, sample_rate, clip_samples, hop)
    text = report(result, problems, heading, headers)
    if name != 'folder':
        text += (f'(the checks stop --dataset=folder runs only; {name} runs take the data as '
                 f'it is)\n')
    return text + (f'inspected in {time.time() - started:.1f} s; nothing written (no cache, no '
                   f'run directory)\n')
