#!/usr/bin/env bash
# Hot standby takeover (docs/BENCHMARKS.md, "Hot standby"): runs
# tests/standby.rs RUNS times (default 5) on a fresh SeaweedFS S3 server.
# Each run starts two `onair live --redundant` members of one stream, two
# ffmpeg RTMP hosts publishing to both and an ffmpeg listener through a
# standalone `onair origin`, kills the leader with SIGKILL, then pauses the
# next leader with SIGSTOP for 10 s, and prints the time from each fault to
# the first part the other member wrote, with the listener's longest wait
# between decoded blocks. Prints every run and the medians.
#
#   scripts/bench-standby.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
test_deps
runs=${1:-5}
s3_env=$(scripts/s3-server.sh start)
eval "$s3_env"
trap 'scripts/s3-server.sh stop "$ONAIR_TEST_S3_PID" >/dev/null 2>&1 || true' EXIT
cargo test --release --test standby --no-run >/dev/null 2>&1
kills=()
stops=()
for ((i = 1; i <= runs; i++)); do
  lines=$(cargo test --release --test standby -- --nocapture 2>&1 | grep -E '^standby:' || true)
  [ "$(wc -l <<<"$lines")" -eq 2 ] || { echo "run $i failed" >&2; exit 1; }
  echo "$lines"
  kills+=("$(head -1 <<<"$lines" | sed -E 's/.*by the standby ([0-9]+) ms.*/\1/')")
  stops+=("$(tail -1 <<<"$lines" | sed -E 's/.*other member ([0-9]+) ms.*/\1/')")
done
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)] " ms (" a[1] "-" a[NR] " ms)"}'; }
echo "kill -9 to the standby's first part: median $(printf '%s\n' "${kills[@]}" | median) over $runs runs"
echo "SIGSTOP to the other member's first part: median $(printf '%s\n' "${stops[@]}" | median) over $runs runs"
