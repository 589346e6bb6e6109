#!/usr/bin/env bash
# The soak in simulated time (tests/soak.rs) at length: SECONDS of program
# (default 21600, six hours) through the real pipeline and live publisher,
# live hosts connecting, dropping and replacing their sessions, the store
# failing at random (error bursts, 1-20 s outages, latency spikes, calls
# that never answer), every invariant checked at each 20 ms tick. SEED
# (default the test's own) makes a run reproducible. Prints the figures, one
# per line, for docs/BENCHMARKS.md.
#
#   scripts/soak.sh [SECONDS] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
build_deps
export ONAIR_SOAK_SECONDS="${1:-21600}"
if [ -n "${2:-}" ]; then export ONAIR_SOAK_SEED="$2"; fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --release --test soak -- --nocapture 2>&1 | tee "$log" | grep -E '^soak: |panicked|test result'
grep '^soak: .*wall_s=' "$log" | tail -1 | sed 's/^soak: //' | tr ' ' '\n'
