#!/usr/bin/env bash
# Builds onair and runs a demo broadcast on the embedded default: two looping
# fixture hosts, mixed and packaged to ./onair-data, served by the built-in
# origin. Listen at http://127.0.0.1:8080/demo/ (or give --http ADDR).
# One live host, "guest", may join from a browser (the host page, WHIP) or
# over RTMP; the control API is on the same HTTP server. Ctrl-C ends the
# broadcast cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
build_deps
http="${ONAIR_HTTP:-127.0.0.1:8080}"
rtmp="${ONAIR_RTMP:-127.0.0.1:1935}"
udp="${ONAIR_WEBRTC_UDP:-127.0.0.1:8189}"
guest_key="${ONAIR_GUEST_KEY:-guest-demo-key}"
export ONAIR_ADMIN_TOKEN="${ONAIR_ADMIN_TOKEN:-demo-admin-token}"
cat <<INFO
listen:    http://$http/demo/
host page: http://$http/demo/host#token=$guest_key
publish:   ffmpeg -re -i FILE -c:a aac -f flv rtmp://$rtmp/live/$guest_key
control:   curl -H "Authorization: Bearer $ONAIR_ADMIN_TOKEN" http://$http/control/hosts
INFO
exec cargo run --release -- live --demo --stream demo --http "$http" \
    --rtmp "$rtmp" --webrtc-udp "$udp" --key "guest=$guest_key" "$@"
