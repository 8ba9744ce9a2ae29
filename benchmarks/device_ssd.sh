#!/usr/bin/env bash
# One device call for the SSD kernels: the GPU test file split over parallel pytest processes
# (compilation is CPU-bound) while our kernels compile for the benchmark shapes, then bench_ssd.py
# once per STEP ("name:arguments", its log $OUT_DIR/name.log). fla's autotune results are read from
# .tcache_ssd (carried), which every process here shares as its triton cache.
# Usage (repo root, on the GPU machine): bash benchmarks/device_ssd.sh OUT_DIR TEST_SECONDS [STEP...]
set -u
out=${1:?output directory}
test_s=${2:-200}
shift 2
mkdir -p "$out"
logs=$(mktemp -d)
export PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=$PWD/.tcache_ssd
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/env.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$out/env.txt"
groups=(
  "chunked_torch or gradcheck or bad_inputs or negative_eigenvalues or inference or mixed or cached_launch"
  "matches_recurrence_fp32 and not (T100 or T257)"
  "matches_recurrence_fp32 and (T100 or T257)"
  "split or without_optional or strong_decay or near_zero"
  "hopper or fp32_accuracy_on_gpu"
  "bf16_accuracy and shape0"
  "bf16_accuracy and shape1"
  "bf16_accuracy and (shape2 or shape3)"
)
pids=()
t0=$SECONDS
for i in "${!groups[@]}"; do
  timeout "$test_s" python3 -m pytest -q -p no:cacheprovider tests/kernels/test_ssd.py \
    -k "${groups[$i]}" >"$logs/test_$i.log" 2>&1 &
  pids+=($!)
done
timeout "$test_s" python3 benchmarks/bench_ssd.py --warm-only >"$logs/warm.log" 2>&1 &
pids+=($!)
# WARM_TAIL="0,3": compile bench_ssd.py --tail's variants at those shapes beside the tests, one process each
warm_tail=${WARM_TAIL:-}
for s in ${warm_tail//,/ }; do
  timeout "$test_s" python3 benchmarks/bench_ssd.py --tail --compile-only --shapes "$s" \
    --variants "${TAIL_VARIANTS:-}" >"$logs/warm_tail_$s.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
echo "tests and warm-up: $((SECONDS - t0)) s" | tee -a "$out/env.txt"
for f in "$logs"/test_*.log; do
  echo "== $(basename "$f"): $(tail -1 "$f")"
done | tee "$out/gpu_tests.txt"
for f in "$logs"/test_*.log "$logs"/warm*.log; do echo "=== $f"; cat "$f"; done >>"$out/gpu_tests.txt"
grep -h -E "^(FAILED|ERROR|E  )" "$logs"/test_*.log | head -30
for step in "$@"; do
  name=${step%%:*}
  echo "=== $name (${step#*:})"
  # shellcheck disable=SC2086
  python3 benchmarks/bench_ssd.py ${step#*:} 2>&1 | tee "$out/$name.log" | tail -60
done
