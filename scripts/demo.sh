#!/usr/bin/env bash
# Builds onair and runs a demo broadcast on the embedded default: two looping
# fixture hosts, mixed and packaged to ./onair-data, served by the built-in
# origin. Listen at http://127.0.0.1:8080/demo/ (or give --http ADDR).
# Ctrl-C ends it cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
build_deps
exec cargo run --release -- live --demo --stream demo --http "${ONAIR_HTTP:-127.0.0.1:8080}" "$@"
