#!/usr/bin/env bash
# One device call: GPU test suite (kernels, architectures) + model and sweep throughput benchmarks.
# Usage (repo root, on the GPU machine): bash benchmarks/device_suite.sh OUT_DIR [TEST_SECONDS] [MODEL_SECONDS] [SWEEP_SECONDS]
set -u
out=${1:?output directory}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  git rev-parse --short HEAD 2>/dev/null || true
} | tee "$out/env.txt"
timeout "${2:-150}" python3 -m pytest -q -x -p no:cacheprovider tests/kernels tests/architectures 2>&1 | tail -25 | tee "$out/gpu_tests.txt"
timeout "${3:-200}" python3 benchmarks/bench_models.py --with-fla --budget $(( ${3:-200} - 20 )) --out "$out/models.md" 2>&1 | tail -40
timeout "${4:-170}" python3 benchmarks/bench_sweep.py --out "$out/sweep.md" 2>&1 | tail -30
