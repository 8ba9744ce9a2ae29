#!/usr/bin/env bash
# One device call for the GDN kernels: the GPU test file split over parallel pytest processes
# (compilation is CPU-bound) while our kernels compile for the benchmark shapes, then the benchmark.
# Usage (repo root, on the GPU machine): bash benchmarks/device_gdn.sh OUT_DIR TEST_SECONDS [BENCH ARGS...]
# WARM_ARGS (default --no-fla; empty: fla too) and WARM_S (default TEST_SECONDS) steer the warm-up.
set -u
out=${1:?output directory}
test_s=${2:-200}
shift 2
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/env.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$out/env.txt"
groups=(
  "naive or torch_backend or poisoning or bad_arguments or without_states or identical or unaligned"
  "triton_matches_float64"
  "l2norm_default or mixed or extreme or odd or narrow"
  "gpu_bf16"
  "gpu_fp32 or cuda_graph"
)
pids=()
for i in "${!groups[@]}"; do
  timeout "$test_s" python3 -m pytest -q -p no:cacheprovider tests/kernels/test_gated_delta_rule.py \
    -k "${groups[$i]}" >"$out/gpu_test_gdn_$i.log" 2>&1 &
  pids+=($!)
done
timeout "${WARM_S:-$test_s}" python3 benchmarks/bench_gdn.py --warm-only ${WARM_ARGS---no-fla} >"$out/warm.log" 2>&1 &
pids+=($!)
for p in "${pids[@]}"; do wait "$p"; done
for f in "$out"/gpu_test_gdn_*.log; do echo "$(basename "$f"): $(tail -1 "$f")"; done | tee "$out/gpu_tests.txt"
grep -h -E "^(FAILED|ERROR|E  )" "$out"/gpu_test_gdn_*.log | head -30
python3 benchmarks/bench_gdn.py --out "$out" "$@" 2>&1 | tee "$out/bench.log" | tail -40
