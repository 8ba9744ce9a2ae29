#!/usr/bin/env bash
# One slice of GPU time for the studies, run on the GPU machine from the repo root:
#   HXT_GIT_COMMIT=<commit> bash results/run_slice.sh OUT SECONDS STUDY [STUDY ...]
# Each study resumes from results/STUDY/ (its committed store) in OUT/STUDY. The studies run side by
# side (one driver each, sharing the GPU) until each is done or SECONDS have passed since the slice
# began (`hxt sweep run --time-limit`: a pack whose estimated GPU time, for the GPU alone, does not
# fit the time left is not started, and runs still training at the limit go back to pending; a
# SIGTERM 60 s later is the backstop). OUT may be the device's $OUT itself, so that a call cut off
# at its limit still returns the stores. Then each study writes its status and, unless
# HXT_SLICE_REPORT=0 (reports can be made on any machine from the store), its report. Copy
# OUT/STUDY/hxt.sqlite back over results/STUDY/ and commit it; the next slice resumes.
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
  timeout --signal=TERM --kill-after=30 "$((budget + 60))" \
    python3 -m sweeps.cli sweep run "sweeps/configs/$study.toml" --out "$out/$study" \
    --time-limit "$budget" ${HXT_RUN_ARGS:-} \
    > "$out/$study/run.log" 2>&1 &
done
wait
for study in "$@"; do
  python3 -m sweeps.cli sweep status "$out/$study" > "$out/$study/status.txt" 2>&1
  if [ "${HXT_SLICE_REPORT:-1}" != 0 ]; then
    python3 -m sweeps.cli report "$out/$study" --out "$out/$study" > "$out/$study/report.log" 2>&1
  fi
  echo "== $study"; tail -4 "$out/$study/run.log"; tail -3 "$out/$study/status.txt"
done
echo "slice: $(( $(date +%s) - start )) s"
