"""Copy the small files every finished run leaves (config.json, results.json, metrics.jsonl,
confusion_test.json, data_report.txt, source.json) and the tables choose_augmentations.py
writes (choice.md, choice.json) from a runs folder into a folder kept in git, in the same
layout, so that report.py can be run on them on any machine; checkpoints and logs stay
behind.

    python tools/keep_results.py runs/sweeps results
    python report.py results/closer_target --table=results/closer_target.md
"""
import shutil
import sys
from pathlib import Path

KEPT = ('config.json', 'results.json', 'metrics.jsonl', 'confusion_test.json', 'data_report.txt',
        'source.json')
TABLES = ('choice.md', 'choice.json')


def keep(runs, into):
    runs, into = Path(runs), Path(into)
    copied = 0
    for results in sorted(runs.rglob('results.json')):
        target = into / results.parent.relative_to(runs)
        target.mkdir(parents=True, exist_ok=True)
        for name in KEPT:
            if (results.parent / name).exists():
                shutil.copy2(results.parent / name, target / name)
        copied += 1
    for name in TABLES:
        for table in sorted(runs.rglob(name)):
            target = into / table.relative_to(runs)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(table, target)
    print(f'{copied} finished runs copied from {runs} to {into}')
    return copied


if __name__ == '__main__':
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    keep(*sys.argv[1:])
