#!/usr/bin/env bash
# The one prepared script for a machine with a CUDA GPU: the CUDA tests and every `--device cuda`
# benchmark, each writing benchmarks/results/*_cuda.{md,csv,png}.
#
#   bash benchmarks/gpu.sh            # from the repository's root; about 10 minutes on one H200
#
# What it needs there: python3 with torch (CUDA), numpy, matplotlib, tqdm, safetensors, pytest.
# metabp need not be installed: the script lays the package out under /tmp and sets PYTHONPATH.
# optuna is needed only by metabp.search and its tests: when `import optuna` fails, wheels in a
# folder `.whl/` (if present) are installed first, else the search tests are left out.
# Fashion-MNIST: its idx files under $METABP_DATA or `.data/fashion-mnist/` (if carried along), or
# Debian's dataset-fashion-mnist; without them the throughput benchmark times synthetic images
# of the same shape (the time per step does not depend on the pixels).
#
# Every step has its own time limit, so one that hangs does not cost the rest. When $OUT is set,
# the results and the log are packed into $OUT/gpu_results.tgz (and the log copied beside it).
set -u
cd "$(dirname "$0")/.."
PY=${PY:-python3}
LOG=gpu_run.log
STEP_LIMIT=${STEP_LIMIT:-300}  # seconds per step
: >"$LOG"

say() { echo "== $*" | tee -a "$LOG"; }
step() {  # step NAME COMMAND...: run with a time limit, log its output and exit status
    local name=$1; shift
    say "$name: $*"
    local start=$SECONDS
    PYTHONUNBUFFERED=1 timeout "$STEP_LIMIT" "$@" 2>&1 | tee -a "$LOG" | tail -n 40
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
IGNORE=()
if ! "$PY" -c "import optuna" 2>/dev/null; then
    IGNORE=(--ignore=tests/search --ignore=tests/analysis --ignore=tests/test_cli_search.py)
    say "optuna missing: the search and analysis tests are left out"
fi
if [ -z "${METABP_DATA:-}" ] && [ -d .data/fashion-mnist ]; then export METABP_DATA=$PWD/.data; fi
SIMPLENET_DATA=(--synthetic)
if "$PY" -c "from metabp.targets import get_target, load_data; load_data(get_target('fashion-simplenet'))" \
        2>/dev/null; then SIMPLENET_DATA=(); fi

say "$("$PY" -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0))' 2>&1)"

# 1. the CUDA tests
step tests "$PY" -m pytest -q -m gpu -p no:cacheprovider "${IGNORE[@]}" tests

# 2. the benchmarks with --device cuda (each only if it has that option)
step simplenet "$PY" benchmarks/simplenet_throughput.py --device cuda "${SIMPLENET_DATA[@]}"
for bench in backward_overhead train_many; do
    if has_option "benchmarks/$bench.py" --device; then
        extra=()
        if [ "$bench" = train_many ] && has_option benchmarks/train_many.py --compile; then
            extra=(--compile --k 64)  # compile=True against eager for K = 64 (the goal: >= 2x)
        fi
        if [ "$bench" = train_many ]; then  # both targets of the goal; each run's files kept apart
            for target in digits-mlp mnist1d-mlp; do
                step "$bench-$target" "$PY" benchmarks/train_many.py --device cuda --target "$target" "${extra[@]}"
                for f in benchmarks/results/train_many*_cuda.*; do
                    [ -e "$f" ] && case "$f" in *-mlp_cuda.*) ;; *) mv "$f" "${f/_cuda./_${target}_cuda.}" ;; esac
                done
            done
        else
            step "$bench" "$PY" "benchmarks/$bench.py" --device cuda "${extra[@]}"
        fi
    else
        say "$bench: skipped, benchmarks/$bench.py has no --device option"
    fi
done

if [ -n "${OUT:-}" ]; then
    tar czf "$OUT/gpu_results.tgz" "$LOG" benchmarks/results/*_cuda.* 2>/dev/null
    cp "$LOG" "$OUT/"
    say "packed $(tar tzf "$OUT/gpu_results.tgz" | tr '\n' ' ') into \$OUT/gpu_results.tgz"
fi
