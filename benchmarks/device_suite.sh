#!/usr/bin/env bash
# One device call: the GPU test suite (kernels, architectures, the packed and captured training steps;
# one pytest process per file, in parallel, since Triton compilation is CPU-bound), then the
# throughput table sweeps.pack.estimate_gpu_seconds reads (bench_models.py --table, written to
# OUT/throughput.json: copy it over sweeps/throughput.json and commit it).
# The sweep benchmark (bench_sweep.py: today's mode against the new defaults, about 6 minutes on an
# H200) takes a call of its own:  python3 benchmarks/bench_sweep.py --estimates --out OUT/sweep.md
# Usage (repo root, on the GPU machine):
#   bash benchmarks/device_suite.sh OUT_DIR [TEST_SECONDS] [TABLE_SECONDS] [TABLE_ARGS...]
set -u
out=${1:?output directory}
test_s=${2:-200} table_s=${3:-200}
shift $(($# < 3 ? $# : 3))
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
} | tee "$out/env.txt"
pids=()
for f in tests/kernels/test_*.py tests/architectures/test_*.py tests/sweeps/test_pack.py; do
  name=$(basename "$f" .py)
  marks=()
  [ "$name" = test_pack ] && marks=(-m gpu)
  timeout "$test_s" python3 -m pytest -q -p no:cacheprovider "${marks[@]}" "$f" >"$out/gpu_$name.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
for f in "$out"/gpu_*.log; do echo "$(basename "$f"): $(tail -1 "$f")"; done | tee "$out/gpu_tests.txt"
grep -h -E "^(FAILED|ERROR)" "$out"/gpu_*.log | head -20
timeout "$table_s" python3 benchmarks/bench_models.py --table --budget $((table_s - 20)) \
  --table-out "$out/throughput.json" "$@" 2>&1 | tee "$out/table.log" | tail -40
