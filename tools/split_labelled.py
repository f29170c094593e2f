"""Turn a fully labelled dataset into the layout of a user with a few labelled clips and an
unlabelled pool: the labelled subset that --label_fraction / --label_seed pick, in class
folders with the dataset's own validation and test clips (and list files that keep its
split), and every other training clip in an unlabelled folder.

    python tools/split_labelled.py --dataset=fsdd --data_root=/work/shared/data/fsdd \
        --label_fraction=0.1 --label_seed=0 --out=own/fsdd
    python train.py --dataset=folder --data_root=own/fsdd/labelled --unlabelled_root=own/fsdd/unlabelled \
        --labelled_windows=False

CLAR on the result should match `--dataset=fsdd --label_fraction=0.1` on the whole set
within run-to-run noise: the same labelled clips, the same validation and test clips, the
other training clips unlabelled either way (--labelled_windows=False: the first second of
each labelled file, as --dataset=fsdd reads it). Every file keeps its path below the folder
that holds the dataset's files (Speech Commands: word/name.wav, in the unlabelled folder
too), so that files of one name in two folders stay two files; two files that would land on
one path are refused before anything is written, and the counts printed are the files
written. Files are copied; nothing is written into --data_root.
"""
import os
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import config  # noqa: E402
import dataset  # noqa: E402

OPTIONS = {'dataset': 'fsdd', 'data_root': 'data', 'cache_dir': '~/.cache/clar',
           'label_fraction': 0.1, 'label_seed': 0, 'out': ''}


def targets(listing, labelled, splits):
    """Where each file goes: labelled/<class>/<path> or unlabelled/<path>, <path> being its
    path below the folder that holds all the files (so that the same name in two word
    folders stays two files), and the list entry of each validation or test file."""
    common = Path(os.path.commonpath(listing.paths))
    if len(listing.paths) == 1:
        common = common.parent
    where, lists = [], {'val': [], 'test': []}
    for i, (path, class_name, part) in enumerate(zip(listing.paths, listing.class_names, splits)):
        relative = Path(path).relative_to(common)
        if part == 'train' and i not in labelled:
            where.append(Path('unlabelled') / relative)
            continue
        if relative.parts[0] != class_name:     # fsdd, esc50: files not in class folders
            relative = Path(class_name) / relative
        where.append(Path('labelled') / relative)
        if part in lists:
            lists[part].append(relative.as_posix())
    return where, lists


def split(name, data_root, cache_dir, label_fraction, label_seed, out):
    listing = dataset.listing(name, data_root, cache_dir)
    if listing.offsets is not None:
        raise config.UserError(f'{name} cuts clips out of longer files; this tool copies whole files')
    labels = np.array([listing.classes.index(c) for c in listing.class_names])
    splits = np.array(listing.splits)
    train = np.flatnonzero(splits == 'train')
    labelled = set(dataset.labelled_subset(labels, train, label_fraction, label_seed).tolist())
    out = Path(out).expanduser()
    if out.exists():
        raise config.UserError(f'--out={out} exists; give a new folder')
    where, lists = targets(listing, labelled, splits)
    first = {}
    for source, target in zip(listing.paths, where):    # before anything is written
        if target in first:
            raise config.UserError(f'{first[target]} and {source} would both be copied to '
                                   f'{out / target}; nothing was written')
        first[target] = source
    written = Counter()
    for source, target in zip(listing.paths, where):
        (out / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, out / target)
        written[target.parts[0]] += 1
    (out / 'labelled' / 'validation_list.txt').write_text(''.join(r + '\n' for r in lists['val']))
    (out / 'labelled' / 'testing_list.txt').write_text(''.join(r + '\n' for r in lists['test']))
    counts = {'labelled training': written['labelled'] - len(lists['val']) - len(lists['test']),
              'validation': len(lists['val']), 'test': len(lists['test']),
              'unlabelled': written['unlabelled']}
    print(f'{out}: ' + ', '.join(f'{n} {what}' for what, n in counts.items()) + ' clips '
          f'({sum(written.values())} files written)')
    return counts


def main(argv):
    _, options = config.parse_command(argv, OPTIONS, 0, 'python tools/split_labelled.py '
                                      '--dataset=fsdd --data_root=DIR --out=DIR', __doc__)
    if not options['out']:
        raise config.UserError('give --out=<new folder>')
    split(options['dataset'], options['data_root'], options['cache_dir'],
          options['label_fraction'], options['label_seed'], options['out'])


if __name__ == '__main__':
    config.exit_on_user_error(lambda: main(sys.argv[1:]))
