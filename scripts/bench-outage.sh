#!/usr/bin/env bash
# Store outages (docs/BENCHMARKS.md, "Store outages"): `onair live` on the
# SeaweedFS S3 test server through a TCP proxy, one ffmpeg RTMP host.
#
# (a) The CI scenario with its figures: the store path frozen 5 s, reset
#     5 s and frozen 20 s; prints each outage as onair saw it (from its
#     first failed attempt to the first stage stored whole after it) and how
#     long the backlog took to write once the store was back.
# (b) A long outage (OUTAGE_S seconds, default 90, of a gateway that resets
#     and refuses connections): the backlog's batches and bytes every 5 s
#     while it lasts (it grows for one live window, then stays flat), and
#     the catch-up.
#
#   scripts/bench-outage.sh [OUTAGE_S]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
test_deps
s3_env=$(scripts/s3-server.sh start)
eval "$s3_env"
trap 'scripts/s3-server.sh stop "$ONAIR_TEST_S3_PID" >/dev/null 2>&1 || true' EXIT
export NO_COLOR=1
figures() {
  sed 's/\x1b\[[0-9;]*m//g' | grep -E 'the store is|caught up|outages reported' \
    | sed -E 's/^([^ ]+) +[A-Z]+ [a-z_:]+: /\1 /; s/ store="?s3:[^ ]+//; s/ error=.*//'
}
echo "== (a) freeze 5 s, reset 5 s, freeze 20 s"
cargo test --release --test broadcast_outage the_broadcast_survives -- --nocapture 2>&1 | figures
echo "== (b) a ${1:-90} s outage"
ONAIR_BENCH_OUTAGE_S="${1:-90}" cargo test --release --test broadcast_outage bench_backlog \
  -- --ignored --nocapture 2>&1 | figures
