#!/usr/bin/env bash
# One slice of GPU time for the studies, run on the GPU machine from the repo root:
#   HXT_GIT_COMMIT=<commit> bash results/run_slice.sh OUT SECONDS STUDY [STUDY ...]
# Each study resumes from results/STUDY/ (its committed store) in OUT/STUDY, runs until it is done
# or SECONDS have passed since the slice began (SIGTERM: interrupted runs go back to pending), then
# writes its report. Copy OUT/STUDY back over results/STUDY and commit it; the next slice resumes.
set -u
out=${1:?output directory}
budget=${2:?seconds for the slice}
shift 2
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
start=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"
for study in "$@"; do
  mkdir -p "$out/$study"
  cp results/"$study"/hxt.sqlite* "$out/$study/" 2>/dev/null  # with any -wal a killed driver left
  left=$(( budget - ($(date +%s) - start) ))
  if [ "$left" -gt 20 ]; then
    timeout --signal=TERM --kill-after=30 "$left" \
      python3 -m sweeps.cli sweep run "sweeps/configs/$study.toml" --out "$out/$study" ${HXT_RUN_ARGS:-} \
      2>&1 | tee "$out/$study/run.log" | tail -5
  fi
  python3 -m sweeps.cli sweep status "$out/$study" > "$out/$study/status.txt" 2>&1
  python3 -m sweeps.cli report "$out/$study" --out "$out/$study" > "$out/$study/report.log" 2>&1
  tail -3 "$out/$study/status.txt"
done
echo "slice: $(( $(date +%s) - start )) s"
