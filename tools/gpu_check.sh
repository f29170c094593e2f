#!/usr/bin/env bash
# The GPU check: one prepared command for a machine with a CUDA GPU, about 5 minutes on one
# H100/H200-class GPU.
#
#     bash tools/gpu_check.sh OUT_DIR                 # on the GPU machine
#     bash tools/gpu_check.sh OUT_DIR --device=cpu    # the dry run: toy sizes, on the CPU
#
# Every part appends JSON lines to OUT_DIR/gpu_check.jsonl as soon as it finishes (`part`,
# `ok`, `time`, `device`, then its figures) and keeps its output in OUT_DIR/<part>.log. A part
# that fails or runs out of time gets a line saying so, and the script goes on; a cut-off run
# still reports every part it finished. Parts, the most telling first:
#   env            Python, torch, CUDA and cuDNN versions, the GPUs, the optional packages missing
#   checks         CUDA against the CPU (float32, TF32 off): both front ends, every augmentation,
#                  one CLAR step (loss, gradients, loss after the update); bf16 autocast gives
#                  finite losses close to float32; int16 batches through pinned memory arrive
#                  bit-exact; random states round-trip; a training step never makes the
#                  host wait for the GPU. Tolerances: tools/gpu_check.py
#   curves         200 CLAR steps at batch 256 in bf16 and in float32 from one seed, first and
#                  last losses side by side, and the whole loop's clips per second
#   bench_eager    bench.py --device=cuda --batch_size=256 (the targets: tools/gpu_check.py)
#   profile        torch.profiler over ten CLAR steps: where the time goes (OUT_DIR/profile.txt)
#   bench_compile  the same with --compile=True (the CLAR and model-only steps)
#   ddp            with two or more GPUs: torchrun, two processes, SyncBatchNorm, two epochs
#   pytest         tests/test_cuda.py under pytest, when pytest and soundfile are there
# The exit status is 1 when any result is not ok.
#
# The GPU machine has torch and torchaudio, no network, and none of this project's other
# packages. Only ddp (tqdm) and pytest (pytest, soundfile) need more; without them they
# write a line saying so. To have them, prepare wheels beforehand on a machine with network:
#     for v in 3.10 3.11 3.12 3.13; do python -m pip download --dest tools/wheels \
#         --only-binary=:all: --no-deps --platform manylinux_2_28_x86_64 \
#         --platform manylinux2014_x86_64 --python-version $v \
#         tqdm soundfile cffi pycparser pytest iniconfig pluggy packaging pygments \
#         exceptiongroup tomli; done
# (about 5 MiB; tools/wheels/ is ignored by git, so name it among the paths that travel with
# the working tree). Missing packages are installed from there without network, into a
# temporary folder put on PYTHONPATH: the machine's own packages are not touched.
#
# Environment: PYTHON (python3), WHEELS (tools/wheels), BUDGET (seconds for all parts, 540:
# a part that would start with less than 20 s left is skipped, with a line).
set -u
OUT=${1:?usage: bash tools/gpu_check.sh OUT_DIR [--device=cuda|cpu]}
DEVICE=cuda
for argument in "${@:2}"; do
    case $argument in
        --device=*) DEVICE=${argument#--device=} ;;
        *) echo "unknown argument $argument (usage: bash tools/gpu_check.sh OUT_DIR [--device=cuda|cpu])" >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")/.." || exit 2
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-tools/wheels}
BUDGET=${BUDGET:-540}
DEADLINE=$(( $(date +%s) + BUDGET ))
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || exit 2
CHECK=("$PYTHON" tools/gpu_check.py)

failed() {  # failed NAME WHY: the line of a part that failed without writing one, with its log's end
    "${CHECK[@]}" line --out="$OUT" --device="$DEVICE" --name="$1" --error="$2" --log="$1.log" > /dev/null 2>&1 ||
        printf '{"part": "%s", "ok": false, "time": "%s", "device": "%s", "error": "%s (and no Python to write the line)"}\n' \
            "$1" "$(date +%Y-%m-%dT%H:%M:%S%z)" "$DEVICE" "$2" >> "$OUT/gpu_check.jsonl"
}

skipped() { # skipped NAME WHY: the line of a part not run (`ok` null)
    printf '{"part": "%s", "ok": null, "time": "%s", "device": "%s", "skipped": "%s"}\n' \
        "$1" "$(date +%Y-%m-%dT%H:%M:%S%z)" "$DEVICE" "$2" | tee -a "$OUT/gpu_check.jsonl"
}

part() {    # part NAME SECONDS COMMAND...: run it with a time limit, output in OUT/NAME.log
    local name=$1 limit=$2 left status why
    shift 2
    left=$(( DEADLINE - $(date +%s) ))
    if [ "$left" -lt 20 ]; then
        skipped "$name" "out of time: the ${BUDGET} s budget is spent"
        return 1
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== $name (at most ${limit} s)" >&2
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
    status=$?
    if [ "$status" -ne 0 ]; then
        why="exit status $status"
        if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then why="cut off after $limit s"; fi
        failed "$name" "$why"
        return 1
    fi
}

bench() {   # bench NAME SECONDS BENCH_OPTIONS...: bench.py, then its summary line
    local name=$1 limit=$2
    shift 2
    part "$name" "$limit" "$PYTHON" bench.py --device="$DEVICE" "$@" &&
        "${CHECK[@]}" bench_summary --out="$OUT" --device="$DEVICE" --name="$name" --log="$OUT/$name.log" > /dev/null
}

# the optional packages and what they import, from carried wheels, each only where absent
if [ -d "$WHEELS" ]; then
    absent=$("$PYTHON" -c 'import importlib.util, sys
print(" ".join(n for n in sys.argv[1:] if importlib.util.find_spec(n) is None))' \
        tqdm soundfile cffi pycparser pytest iniconfig pluggy packaging pygments exceptiongroup tomli 2> /dev/null)
    if [ -n "$absent" ]; then
        site=$(mktemp -d "${TMPDIR:-/tmp}/clar-gpu-check-site.XXXXXX")
        for package in $absent; do
            "$PYTHON" -m pip install --quiet --no-index --find-links="$WHEELS" --target="$site" \
                --no-deps "$package" >> "$OUT/wheels.log" 2>&1 || echo "not installed: $package" >> "$OUT/wheels.log"
        done
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    fi
fi

if [ "$DEVICE" = cpu ]; then     # the dry run: toy sizes
    BENCH_SIZES=(--batch_size=4 --encoder_width=0.125 --seconds=0.01 --augment_batch=4 --cache_clips=300)
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
else
    BENCH_SIZES=(--batch_size=256 --seconds=1)
fi

part env 60 "${CHECK[@]}" env --out="$OUT" --device="$DEVICE"
part checks 150 "${CHECK[@]}" checks --out="$OUT" --device="$DEVICE"
part curves 150 "${CHECK[@]}" curves --out="$OUT" --device="$DEVICE"
bench bench_eager 150 "${BENCH_SIZES[@]}" --baselines=False \
    $([ "$DEVICE" = cpu ] && echo --compare_encoders=False --other_regimes=False)
part profile 90 "${CHECK[@]}" profile --out="$OUT" --device="$DEVICE"
if [ "$DEVICE" = cpu ]; then
    skipped bench_compile "dry run: torch.compile is not timed on the CPU (minutes of C++ compilation)"
else
    bench bench_compile 300 "${BENCH_SIZES[@]}" --compile=True --baselines=False \
        --compare_encoders=False --other_regimes=False
fi
gpus=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())' 2> /dev/null || echo 0)
if [ "$DEVICE" = cpu ] || [ "$gpus" -ge 2 ]; then
    part ddp 150 "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=2 \
        tools/gpu_check.py ddp --out="$OUT" --device="$DEVICE"
else
    skipped ddp "needs two GPUs ($gpus here)"
fi
part pytest 150 "${CHECK[@]}" pytest --out="$OUT" --device="$DEVICE"

echo "== results ($OUT/gpu_check.jsonl)" >&2
"${CHECK[@]}" summary --out="$OUT"
