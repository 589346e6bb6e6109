#!/usr/bin/env bash
# Builds onair and runs a demo broadcast on the embedded default: two looping
# fixture hosts, mixed and packaged to ./onair-data. Ctrl-C ends it cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
build_deps
exec cargo run --release -- live --demo --stream demo "$@"
