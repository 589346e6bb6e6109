#!/usr/bin/env bash
# Runs every onair test against real peers (ffmpeg, a SeaweedFS S3 server),
# installing what is missing first. Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
test_deps
scripts/browser-deps.sh
source scripts/cdn-deps.sh
cdn_deps

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy" >&2
cargo clippy --all-targets --quiet -- -D warnings

echo "== starting the S3-compatible test server" >&2
s3_env=$(scripts/s3-server.sh start)
eval "$s3_env"
trap 'scripts/s3-server.sh stop "$ONAIR_TEST_S3_PID" >/dev/null 2>&1 || true' EXIT

echo "== cargo test" >&2
cargo test --all-targets "$@"

# Last: it links target/debug/onair without the default features.
scripts/check-minimal.sh
