#!/usr/bin/env bash
# The smallest build of onair (`--no-default-features`: no cloud stores, no
# WebRTC) still packages and serves: it builds that binary, packages a
# generated tone into a local folder, serves it with `onair origin`, and
# reads the multivariant playlist, a media playlist and a segment back over
# HTTP. It also checks that a cloud store URL is refused with the feature to
# rebuild with. Run by scripts/test.sh; needs ffmpeg and curl.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== cargo build --no-default-features" >&2
cargo build --quiet --no-default-features --bin onair
# The shared target folder keeps every dependency built once; the next
# default build links target/debug/onair again. Keep this one aside.
cp target/debug/onair "$work/onair"
onair="$work/onair"

ffmpeg -hide_banner -loglevel error -f lavfi -i "sine=frequency=440:duration=5" \
  -ar 48000 -ac 2 "$work/tone.wav"
"$onair" package --input "$work/tone.wav" --store "$work/store" --stream minimal >/dev/null

if "$onair" package --input "$work/tone.wav" --store s3://bucket --stream minimal 2>"$work/err"; then
  echo "check-minimal: an s3:// store was accepted by a build without the s3 feature" >&2
  exit 1
fi
grep -q -- "--features s3" "$work/err" || {
  echo "check-minimal: the refusal does not name the feature:" >&2
  cat "$work/err" >&2
  exit 1
}

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$onair" origin --store "$work/store" --http "127.0.0.1:$port" >"$work/origin.log" 2>&1 &
server=$!
base="http://127.0.0.1:$port/minimal"
for _ in $(seq 1 100); do
  curl -fsS -o /dev/null "$base/index.m3u8" 2>/dev/null && break
  sleep 0.1
done
curl -fsS "$base/index.m3u8" | grep -q "aac/live.m3u8"
curl -fsS "$base/aac/live.m3u8" | grep -q "#EXT-X-ENDLIST"
curl -fsS "$base/opus/live.m3u8" | grep -q "#EXT-X-ENDLIST"
bytes=$(curl -fsS "$base/aac/0.m4s" | wc -c)
if [ "$bytes" -lt 1000 ]; then
  echo "check-minimal: segment 0 has only $bytes bytes" >&2
  exit 1
fi
echo "check-minimal: the minimal build packaged and served a stream (segment 0: $bytes bytes)" >&2
