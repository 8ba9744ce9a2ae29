#!/usr/bin/env bash
# One device call: the GPU test suite (kernels, architectures; one pytest process per file, in
# parallel, since Triton compilation is CPU-bound) + model and sweep throughput benchmarks.
# Usage (repo root, on the GPU machine):
#   bash benchmarks/device_suite.sh OUT_DIR [TEST_SECONDS] [MODEL_SECONDS] [SWEEP_SECONDS] [SWEEP_ARGS...]
set -u
out=${1:?output directory}
test_s=${2:-200} model_s=${3:-200} sweep_s=${4:-170}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
} | tee "$out/env.txt"
pids=()
for f in tests/kernels/test_*.py tests/architectures/test_*.py; do
  name=$(basename "$f" .py)
  timeout "$test_s" python3 -m pytest -q -p no:cacheprovider "$f" >"$out/gpu_$name.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
for f in "$out"/gpu_*.log; do echo "$(basename "$f"): $(tail -1 "$f")"; done | tee "$out/gpu_tests.txt"
grep -h -E "^(FAILED|ERROR)" "$out"/gpu_*.log | head -20
timeout "$model_s" python3 benchmarks/bench_models.py --budget $(( model_s - 20 )) --out "$out/models.md" 2>&1 | tail -30
shift 4 2>/dev/null || shift $#
timeout "$sweep_s" python3 benchmarks/bench_sweep.py --out "$out/sweep.md" "$@" 2>&1 | tail -30
