#!/bin/bash
# The claims matrix's table, figures and paired differences (docs/reproducing.md: "The paper's claims at
# three seeds"): each pair 'A,B' prints B minus A seed by seed, then their mean and spread.
#   bash tools/claims_report.sh [runs folder, default results/claims] [figures, default img]
set -e
runs=${1:-results/claims}
out=${2:-img}
pairs=''
for data in synth fsdd; do
  for fraction in 0.1 0.01; do
    clar="clar-$data-f$fraction-*-resnet2d-s?"
    pairs+=";supervised-$data-f$fraction-*,$clar"                  # claim 3
    pairs+=";finetune-$data-f$fraction-*,$clar"                    # claim 2
    pairs+=";selfsupervised-$data-f$fraction-fade+time_mask-*,$clar"
  done
  batched="clar-$data-f0.01-*labelled_per_batch16-s?"
  pairs+=";clar-$data-f0.01-*-resnet2d-s?,$batched"
  pairs+=";supervised-$data-f0.01-*,$batched"
  pairs+=";finetune-$data-f0.01-*,$batched"
  pairs+=";clar-$data-f0.1-*-resnet2d-s?,supervised-$data-f1-*"   # the distance to full labels
done
pairs+=";clar-fsdd-f0.1-*-resnet2d-s?,clar-fsdd-f0.1-*-resnet1d-s?"                   # claim 1
for single in fade time_mask white_noise; do                                          # claim 5
  pairs+=";selfsupervised-fsdd-f0.1-fade+time_mask-*,selfsupervised-fsdd-f0.1-$single-resnet2d-*"
done
exec "${PYTHON:-python}" report.py "$runs" --out="$out" --table="$runs.md" --paired="${pairs#;}"
