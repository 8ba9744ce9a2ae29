#!/usr/bin/env bash
# Narrow GDN tiles against the ptxas that compiles them (issue 15 item 3), on the GPU machine:
#   bash benchmarks/probe_ptxas.sh OUT
# With triton 3.6's bundled ptxas, bf16 tiles 16 or 32 wide fault or give wrong numbers on Hopper
# (kernels/gated_delta_rule/README.md). Upstream threads tie such faults to the PTX versions that
# CUDA 12.5-12.9 toolchains emit (triton-lang/triton#10787, pytorch/helion#1905), so this times the
# narrow-tile variants of `bench_gdn.py` (3: 32-wide key tiles, 4: 32-wide value tiles, 5: no
# widening) at shape 0 (64, 256, 4, 32, 32) once per ptxas: triton's own, and each
# `.whl/ptxas-*.xz` carried along (e.g. from the PyPI wheels nvidia-cuda-nvcc-cu12 12.4 and
# nvidia-cuda-nvcc 13.0: `pip download --no-deps WHEEL`, unzip its `*/bin/ptxas`, `xz -9` it into
# .whl/, and pass `.whl` to the device's carry). Each variant runs in its own process with its own
# triton cache; a variant is sound where it runs and its rel_diff_vs_default is at bf16 noise.
# Writes OUT/ptxas.txt.
set -u
out=${1:?output directory}
mkdir -p "$out/ptxas/bin"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
candidates=("triton")
for f in .whl/ptxas-*.xz; do
  [ -f "$f" ] || continue
  name=$(basename "$f" .xz)
  xz -dc "$f" > "$out/ptxas/bin/$name" && chmod +x "$out/ptxas/bin/$name" && candidates+=("$out/ptxas/bin/$name")
done
probe() {  # $1: ptxas ("triton" for the bundled one)
  local tag env_path=()
  tag=$(basename "$1")
  [ "$1" = triton ] || env_path=(TRITON_PTXAS_PATH="$1")
  for v in 0 3 4 5; do
    env "${env_path[@]}" TRITON_CACHE_DIR="$out/ptxas/cache-$tag-$v" \
      timeout 240 python3 benchmarks/bench_gdn.py --one-variant "0,$v" > "$out/ptxas/$tag-$v.log" 2>&1
    echo "$tag variant $v rc=$? $(tail -1 "$out/ptxas/$tag-$v.log" | cut -c1-300)"
  done
}
{
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c "import triton, torch; print('triton', triton.__version__, 'torch', torch.__version__, 'cuda', torch.version.cuda)"
  bundled=$(python3 -c "from triton import knobs; print(knobs.nvidia.ptxas.path)")
  for p in "$bundled" "${candidates[@]:1}"; do
    echo "$p: $("$p" --version | tail -2 | head -1)"
  done
} > "$out/ptxas.txt" 2>&1
for p in "${candidates[@]}"; do probe "$p" > "$out/ptxas/summary-$(basename "$p").txt" & done
wait
cat "$out"/ptxas/summary-*.txt >> "$out/ptxas.txt"
rm -rf "$out"/ptxas/cache-* "$out/ptxas/bin"  # the logs stay
cat "$out/ptxas.txt"
