#!/usr/bin/env bash
# Restart to audio (docs/BENCHMARKS.md, "Restart after kill -9"): runs
# tests/restart.rs RUNS times (default 5). Each run broadcasts a tone with
# `onair live` into a folder store, attaches an ffmpeg listener through a
# standalone `onair origin`, kills the broadcast with SIGKILL, waits 4 s,
# starts it again, and prints how long after the restart the listener heard
# the host again. Prints every run and the median.
#
#   scripts/bench-restart.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
test_deps
runs=${1:-5}
cargo test --release --test restart --no-run >/dev/null 2>&1
figures=()
for ((i = 1; i <= runs; i++)); do
  line=$(cargo test --release --test restart -- --nocapture 2>&1 | grep -E '^restart:' || true)
  [ -n "$line" ] || { echo "run $i failed" >&2; exit 1; }
  echo "$line"
  figures+=("$(sed -E 's/.*origin\): ([0-9]+) ms.*/\1/' <<<"$line")")
done
printf '%s\n' "${figures[@]}" | sort -n | awk '{a[NR]=$1} END {print "median restart to audio: " a[int((NR+1)/2)] " ms over " NR " runs"}'
