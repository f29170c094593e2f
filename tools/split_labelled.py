"""Turn a fully labelled dataset into the layout of a user with a few labelled clips and an
unlabelled pool: the labelled subset that --label_fraction / --label_seed pick, in class
folders with the dataset's own validation and test clips (and list files that keep its
split), and every other training clip in a flat unlabelled folder.

    python tools/split_labelled.py --dataset=fsdd --data_root=/work/shared/data/fsdd \
        --label_fraction=0.1 --label_seed=0 --out=own/fsdd
    python train.py --dataset=folder --data_root=own/fsdd/labelled --unlabelled_root=own/fsdd/unlabelled

CLAR on the result should match `--dataset=fsdd --label_fraction=0.1` on the whole set
within run-to-run noise: the same labelled clips, the same validation and test clips, the
other training clips unlabelled either way. Files are copied; nothing is written into
--data_root.
"""
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import config  # noqa: E402
import dataset  # noqa: E402

OPTIONS = {'dataset': 'fsdd', 'data_root': 'data', 'cache_dir': '~/.cache/clar',
           'label_fraction': 0.1, 'label_seed': 0, 'out': ''}


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
    lists = {'val': [], 'test': []}
    for i, (path, class_name, part) in enumerate(zip(listing.paths, listing.class_names, splits)):
        source = Path(path)
        if part == 'train' and i not in labelled:
            target = out / 'unlabelled' / source.name
        else:
            relative = f'{class_name}/{source.name}'
            target = out / 'labelled' / relative
            if part in lists:
                lists[part].append(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    (out / 'labelled' / 'validation_list.txt').write_text(''.join(r + '\n' for r in lists['val']))
    (out / 'labelled' / 'testing_list.txt').write_text(''.join(r + '\n' for r in lists['test']))
    counts = {'labelled training': len(labelled), 'validation': len(lists['val']),
              'test': len(lists['test']), 'unlabelled': len(train) - len(labelled)}
    print(f'{out}: ' + ', '.join(f'{n} {what}' for what, n in counts.items()) + ' clips')
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
