#!/usr/bin/env bash
# One device call for both kernel ops: the GPU kernel tests (pytest-xdist workers) while our kernels and
# fla-core compile and autotune for the benchmark shapes (one process per op and shape), then
# bench_gdn.py and bench_ssd.py against fla at the four shapes, one after the other on an idle GPU.
# Usage (repo root, on the GPU machine, `.whl` with fla-core 0.6.0 carried):
#   bash benchmarks/device_kernels.sh OUT_DIR [PARALLEL_SECONDS] [BENCH_SECONDS] [PYTEST_ARGS...]
# GDN_PROBES="0,3 0,5" also runs `bench_gdn.py --one-variant SHAPE,VARIANT` beside the tests, one process
# each (a variant that faults takes only its own process down): whether it runs and agrees with the
# default configuration, not its speed (it shares the GPU).
# fla's autotuning runs beside the tests and the other warm-up processes (its choices see a shared GPU);
# its results and every compiled kernel reach the timing processes through the shared triton cache.
set -u
out=${1:?output directory}
par_s=${2:-150}
bench_s=${3:-60}
shift $(($# < 3 ? $# : 3))
mkdir -p "$out"
logs=$(mktemp -d)
export PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/tcache}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl ||
  exit 1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/env.txt"
python3 -c "import torch, triton, fla; print('torch', torch.__version__, 'triton', triton.__version__, 'fla', fla.__version__)" |
  tee -a "$out/env.txt"
t0=$SECONDS
timeout "$par_s" python3 -m pytest -q -p no:cacheprovider -n 8 -m "not slow" tests/kernels "$@" \
  >"$out/tests.log" 2>&1 &
pids=($!)
for s in 0 1 2 3; do
  timeout "$par_s" python3 benchmarks/bench_gdn.py --warm-only --shapes "$s" >"$logs/warm_gdn_$s.log" 2>&1 &
  pids+=($!)
  timeout "$par_s" python3 benchmarks/bench_ssd.py --warm-only --impls ours,fla --shapes "$s" \
    >"$logs/warm_ssd_$s.log" 2>&1 &
  pids+=($!)
done
for v in ${GDN_PROBES:-}; do
  timeout "$par_s" python3 benchmarks/bench_gdn.py --one-variant "$v" >"$logs/warm_probe_${v/,/_}.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
echo "tests and warm-up: $((SECONDS - t0)) s" | tee -a "$out/env.txt"
for f in "$logs"/warm_*.log; do echo "== $(basename "$f")"; tail -5 "$f"; done >"$out/warm.log"
grep -h "^warm" "$logs"/warm_*.log | sort | uniq -c
tail -2 "$out/tests.log"
grep -E "^(FAILED|ERROR)" "$out/tests.log" | head -20
t1=$SECONDS
timeout "$bench_s" python3 benchmarks/bench_gdn.py --out "$out" --shapes 0,1,2,3 --no-naive >"$out/bench_gdn.log" 2>&1
echo "bench_gdn: rc $?, $((SECONDS - t1)) s" | tee -a "$out/env.txt"
tail -11 "$out/bench_gdn.log"
t1=$SECONDS
timeout "$bench_s" python3 benchmarks/bench_ssd.py --impls ours,fla --shapes 0,1,2,3 --json "$out/bench_ssd.json" \
  >"$out/bench_ssd.log" 2>&1
echo "bench_ssd: rc $?, $((SECONDS - t1)) s" | tee -a "$out/env.txt"
tail -18 "$out/bench_ssd.log"
