#!/usr/bin/env bash
# The one prepared script for a machine with a CUDA GPU: the CUDA tests and every `--device cuda`
# benchmark, each writing benchmarks/results/*_cuda.{md,csv,png}.
#
#   bash benchmarks/gpu.sh            # from the repository's root; at most 12.5 minutes (the limits below)
#
# What it needs there: python3 with torch (CUDA), numpy, matplotlib, tqdm, safetensors, pytest.
# metabp need not be installed: the script lays the package out under /tmp and sets PYTHONPATH.
# optuna is needed only by metabp.search and its tests: when `import optuna` fails, wheels in a
# folder `.whl/` (if present) are installed first, else only tests/core and tests/targets run.
# Fashion-MNIST: its idx files under $METABP_DATA or `.data/fashion-mnist/` (if carried along), or
# Debian's dataset-fashion-mnist; without them the throughput benchmark times synthetic images
# of the same shape (the time per step does not depend on the pixels).
#
# Every step has its own time limit (seconds, in the order of priority below), so one that hangs
# does not cost the rest; together they fit a 15-minute lease with its start. When $OUT is set,
# the results and the log are packed into $OUT/gpu_results.tgz (and the log copied beside it).
set -u
cd "$(dirname "$0")/.."
PY=${PY:-python3}
LOG=gpu_run.log
SCALE=${SCALE:-1}  # multiplies every step's limit
: >"$LOG"

say() { echo "== $*" | tee -a "$LOG"; }
step() {  # step NAME LIMIT COMMAND...: run for at most LIMIT seconds, log its output and exit status
    local name=$1 limit=$(($2 * SCALE)); shift 2
    say "$name (at most $limit s): $*"
    local start=$SECONDS
    PYTHONUNBUFFERED=1 timeout "$limit" "$@" 2>&1 | tee -a "$LOG" | tail -n 40
    say "$name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
}
has_option() { "$PY" "$1" --help 2>/dev/null | grep -q -- "$2"; }

# metabp laid out as installed: metabp/, with targets/ and search/ as its subpackages
SITE=/tmp/metabp-site
rm -rf "$SITE" && mkdir -p "$SITE/metabp"
cp -r metabp/. "$SITE/metabp/"
ln -s "$PWD/targets" "$SITE/metabp/targets"
ln -s "$PWD/search" "$SITE/metabp/search"
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}

if ! "$PY" -c "import optuna" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/wheels .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/wheels"
fi
TESTS=(tests)
if ! "$PY" -c "import optuna" 2>/dev/null; then  # the CUDA tests live in tests/core and tests/targets
    TESTS=(tests/core tests/targets)
    say "optuna missing: only tests/core and tests/targets are collected"
fi
if [ -z "${METABP_DATA:-}" ] && [ -d .data/fashion-mnist ]; then export METABP_DATA=$PWD/.data; fi
SIMPLENET_DATA=(--synthetic)
if "$PY" -c "from metabp.targets import get_target, load_data; load_data(get_target('fashion-simplenet'))" \
        2>/dev/null; then SIMPLENET_DATA=(); fi

say "$("$PY" -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0))' 2>&1 | tail -n 1)"

# 1. the CUDA tests
step tests 120 "$PY" -m pytest -q -m gpu -p no:cacheprovider "${TESTS[@]}"

# 2. the benchmarks with --device cuda, in the order of priority (each only if it has that option)
step simplenet 270 "$PY" benchmarks/simplenet_throughput.py --device cuda --k 8,16 --steps 10,25 --repeats 2 \
    "${SIMPLENET_DATA[@]}"
if has_option benchmarks/backward_overhead.py --device; then
    step backward_overhead 120 "$PY" benchmarks/backward_overhead.py --device cuda
else
    say "backward_overhead: skipped, it has no --device option"
fi
train_many_on() {  # TARGET LIMIT [ARGS...]: eager against compile=True for 64 copies (goal >= 2x)
    local target=$1 limit=$2; shift 2
    step "train_many $target" "$limit" "$PY" benchmarks/train_many.py --device cuda --target "$target" \
        --compile "$@"
    for f in benchmarks/results/train_many_cuda.*; do  # keep each target's files
        [ -e "$f" ] && mv "$f" "${f/_cuda./_${target}_cuda.}"
    done
}
if has_option benchmarks/train_many.py --device; then
    train_many_on digits-mlp 150
    train_many_on mnist1d-mlp 90 --only seeds
else
    say "train_many: skipped, it has no --device option"
fi

if [ -n "${OUT:-}" ]; then
    tar czf "$OUT/gpu_results.tgz" "$LOG" benchmarks/results/*_cuda.* 2>/dev/null
    cp "$LOG" "$OUT/"
    say "packed $(tar tzf "$OUT/gpu_results.tgz" | tr '\n' ' ') into \$OUT/gpu_results.tgz"
fi
