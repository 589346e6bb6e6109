#!/usr/bin/env bash
# The cost of TLS on the origin (docs/BENCHMARKS.md, "TLS on the origin"):
# requests/s and the server's CPU time per request with and without TLS, in
# the same run, with nginx serving the same bytes over TLS and plain HTTP
# beside it as the anchor.
#
# A store is made by `onair live --demo` for a few seconds, then the broadcast
# is killed (SIGKILL, so the playlists stay live, as after a crash, and nothing
# changes while the servers are measured). Four servers answer from it:
# `onair origin` over HTTP, `onair origin --tls-cert --tls-key` (rustls),
# nginx over HTTP and nginx over TLS (TLSv1.3 only, the same certificate:
# ECDSA P-256, made here by openssl), nginx serving from disk the bytes the
# origin serves. Resources, as in scripts/bench-origin.sh: a cached part and
# the immutable answer to a blocking playlist reload for a past part.
#
# Cases, each measured with wrk (-t2 -cCONNECTIONS, HTTP/1.1, no ALPN) for
# WRK_S seconds per server:
#  - keep-alive: what a CDN edge does, connections are kept;
#  - handshake per request: `Connection: close`, a new TCP connection (and a
#    full TLS handshake: wrk resumes no sessions) for every request, as for
#    listeners arriving without a CDN;
#  - h2: the part over HTTP/2 (h2load -t1 -c CONNECTIONS -m1, ALPN h2) from
#    onair TLS and nginx TLS (`listen ... ssl http2`).
# For each: requests/s, and the server's CPU seconds per 1000 requests (user
# + system from /proc/PID/stat before and after; nginx: master and worker),
# with its busy share of its core, and the client's CPU per 1000 requests;
# ratios TLS/plain for onair and for nginx, and onair TLS / nginx TLS. The servers take turns within a run (onair,
# nginx, onair TLS, nginx TLS; reversed every other run). Medians over RUNS
# (default 3); ratios are medians of the per-run ratios.
#
# On a machine with two cores or more the servers run on core 1 (nginx with
# one worker) and wrk/h2load on core 0 (taskset); other processes on the
# machine still take CPU (reported: the load average, and the share of the
# machine's CPU time that went neither to the server measured nor to the
# client). A server's busy share well under 100 % means it was not the limit:
# the client was, or another process took the core. CPU per request is the figure that holds
# then; in the handshake case the client's side of each handshake costs about
# as much as the server's, so wrk is often the limit there.
#
#   scripts/bench-tls.sh [RUNS]
#
# ONAIR=/path/to/onair uses that binary instead of `cargo build --release`;
# WRK_S (default 5) sets the seconds per measurement, CONNECTIONS (64) the
# client connections.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cdn-deps.sh
source scripts/bench-lib.sh
build_deps
cdn_deps
need_apt curl curl
need_apt openssl openssl
need_apt h2load nghttp2-client
need_apt /usr/bin/time time

runs=${1:-3}
wrk_s=${WRK_S:-5}
connections=${CONNECTIONS:-64}
work=target/bench-tls
rm -rf "$work"
mkdir -p "$work"
work=$PWD/$work

if [ -z "${ONAIR:-}" ]; then
  cargo build --release --quiet
  ONAIR=target/release/onair
fi

server_cpu=()
client_cpu=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  server_cpu=(taskset -c 1)
  client_cpu=(taskset -c 0)
fi

# Busy CPU clock ticks of the whole machine so far, all cores (proc(5)).
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }

live_pid=""
plain_pid=""
tls_pid=""
nginx_pid=""
cleanup() {
  [ -n "$live_pid" ] && kill -KILL "$live_pid" 2>/dev/null && wait "$live_pid" 2>/dev/null
  [ -n "$plain_pid" ] && kill -INT "$plain_pid" 2>/dev/null && wait "$plain_pid" 2>/dev/null
  [ -n "$tls_pid" ] && kill -INT "$tls_pid" 2>/dev/null && wait "$tls_pid" 2>/dev/null
  [ -n "$nginx_pid" ] && kill -TERM "$nginx_pid" 2>/dev/null && wait "$nginx_pid" 2>/dev/null
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------ store, certificate
echo "bench-tls: making the store" >&2
"$ONAIR" live --demo --window 600 --store "$work/store" --stream bench >"$work/live.log" 2>&1 &
live_pid=$!
# A few seconds of parts (up to 30 s on a slow machine).
for _ in $(seq 300); do
  parts=$(grep -c '^#EXT-X-PART:' "$work/store/bench/aac/live.m3u8" 2>/dev/null) || parts=0
  [ "$parts" -ge 12 ] && break
  kill -0 "$live_pid" 2>/dev/null || break
  sleep 0.1
done
{ kill -KILL "$live_pid" && wait "$live_pid"; } 2>/dev/null || true
live_pid=""
store="$work/store/bench"
part=$(sed -n 's/^#EXT-X-PART:.*URI="\([0-9]*\.[0-9]*\.m4s\)".*/\1/p' "$store/aac/live.m3u8" | tail -1)
[ -n "$part" ] || { echo "bench-tls: no part listed; log:" >&2; cat "$work/live.log" >&2; exit 1; }
msn=${part%%.*}
index=${part#*.}; index=${index%.m4s}
part_path="aac/$part"
playlist_path="aac/live.m3u8?_HLS_msn=$msn&_HLS_part=$index"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=onair.test -addext subjectAltName=DNS:onair.test,IP:127.0.0.1 \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

# ------------------------------------------------------------------- servers
plain_port=$(free_port)
tls_port=$(free_port)
"${server_cpu[@]}" "$ONAIR" origin --store "$work/store" --http "127.0.0.1:$plain_port" \
  >"$work/origin-plain.log" 2>&1 &
plain_pid=$!
"${server_cpu[@]}" "$ONAIR" origin --store "$work/store" --http "127.0.0.1:$tls_port" \
  --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" >"$work/origin-tls.log" 2>&1 &
tls_pid=$!

# nginx serves the very bytes the origin serves, from disk, at the same paths
# (a static server ignores the query string).
static="$work/static"
mkdir -p "$static/bench/aac" "$work/nginx/temp"
cp "$store/aac/$part" "$static/bench/aac/$part"
cp "$store/aac/at/$msn.$index.m3u8" "$static/bench/aac/live.m3u8"
nginx_port=$(free_port)
nginx_tls_port=$(free_port)
cat >"$work/nginx/nginx.conf" <<EOF
user root;
worker_processes 1;
worker_rlimit_nofile 65536;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
    client_body_temp_path $work/nginx/temp/client;
    proxy_temp_path $work/nginx/temp/proxy;
    fastcgi_temp_path $work/nginx/temp/fastcgi;
    uwsgi_temp_path $work/nginx/temp/uwsgi;
    scgi_temp_path $work/nginx/temp/scgi;
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    open_file_cache max=64 inactive=60s;
    types { application/vnd.apple.mpegurl m3u8; audio/mp4 m4s; }
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    ssl_protocols TLSv1.3;
    server {
        listen 127.0.0.1:$nginx_port;
        listen 127.0.0.1:$nginx_tls_port ssl http2;
        root $static;
        location ~ \.m4s\$ { add_header Cache-Control "public, max-age=31536000, immutable"; }
        location ~ \.m3u8\$ { add_header Cache-Control "public, max-age=12"; }
    }
}
EOF
"${server_cpu[@]}" "$(command -v nginx)" -c "$work/nginx/nginx.conf" -p "$work/nginx" \
  -e "$work/nginx/error.log" -g 'daemon off;' &
nginx_pid=$!

declare -A url_of pid_of
url_of[onair]="http://127.0.0.1:$plain_port/bench"
url_of[onair-tls]="https://127.0.0.1:$tls_port/bench"
url_of[nginx]="http://127.0.0.1:$nginx_port/bench"
url_of[nginx-tls]="https://127.0.0.1:$nginx_tls_port/bench"
pid_of[onair]=$plain_pid
pid_of[onair-tls]=$tls_pid
pid_of[nginx]=$nginx_pid
pid_of[nginx-tls]=$nginx_pid
servers=(onair nginx onair-tls nginx-tls)

# Every server answers the same bytes (curl verifies the certificate; this
# also fills the origins' caches).
for server in "${servers[@]}"; do
  for _ in $(seq 100); do
    curl -sf --cacert "$work/cert.pem" -o /dev/null "${url_of[$server]}/$part_path" && break
    kill -0 "${pid_of[$server]}" 2>/dev/null || break
    sleep 0.1
  done
  for path in "$part_path" "$playlist_path"; do
    curl -sf --cacert "$work/cert.pem" "${url_of[$server]}/$path" -o "$work/answer" ||
      { echo "bench-tls: $server does not answer $path; logs in $work" >&2; exit 1; }
    cmp -s "$work/answer" "$static/bench/${path%%\?*}" ||
      { echo "bench-tls: $server's bytes of $path differ from the store" >&2; exit 1; }
  done
done
# What the TLS handshakes negotiate (wrk offers no ALPN: HTTP/1.1).
for server in onair-tls nginx-tls; do
  port=${url_of[$server]#https://127.0.0.1:}; port=${port%%/*}
  echo "$server: $(openssl s_client -connect "127.0.0.1:$port" -servername onair.test </dev/null 2>/dev/null |
    grep -E '^(New,|Server Temp Key|Peer signature type)' | sed 's/^New, //' | paste -sd ';' | sed 's/;/; /g')" \
    >>"$work/tls-params.txt"
  curl -s --cacert "$work/cert.pem" -o /dev/null -w "$server h2 check: HTTP/%{http_version}\n" \
    "${url_of[$server]}/$part_path" >>"$work/tls-params.txt"
done

# server_ticks SERVER: CPU ticks of the process(es) serving SERVER.
server_ticks() {
  local pid=${pid_of[$1]} total child
  total=$(cpu_ticks "$pid")
  for child in $(pgrep -P "$pid"); do
    total=$((total + $(cpu_ticks "$child")))
  done
  echo "$total"
}

# measure MODE WHAT SERVER: one wrk (or h2load) run; appends a line to
# results.txt: mode what server requests req/s server-ticks wall-seconds
# errors client-CPU-seconds machine-ticks.
measure() {
  local mode=$1 what=$2 server=$3 path url out before after started ended wall requests rps errors
  local machine_before machine_after client_s
  local client=(/usr/bin/time -o "$work/client-time" -f "%U %S" "${client_cpu[@]}")
  path=$part_path
  [ "$what" = playlist ] && path=$playlist_path
  url="${url_of[$server]}/$path"
  uptime >>"$work/load.txt"
  before=$(server_ticks "$server")
  machine_before=$(machine_ticks)
  started=$(date +%s.%N)
  case $mode in
    keepalive) out=$("${client[@]}" wrk -t2 -c"$connections" -d"${wrk_s}s" "$url") ;;
    close) out=$("${client[@]}" wrk -t2 -c"$connections" -d"${wrk_s}s" -H "Connection: close" "$url") ;;
    h2) out=$("${client[@]}" h2load -t1 -c"$connections" -m1 -D"$wrk_s" "$url") ;;
  esac
  ended=$(date +%s.%N)
  machine_after=$(machine_ticks)
  after=$(server_ticks "$server")
  printf '%s\n' "$out" >"$work/out-$mode-$what-$server-$run.txt"
  if [ "$mode" = h2 ]; then
    requests=$(printf '%s\n' "$out" | awk '/^requests:/ {print $8}')
    rps=$(printf '%s\n' "$out" | awk '/^finished in/ {print $4}')
    errors=$(printf '%s\n' "$out" | awk '/^requests:/ {print $12 + $14 + $16}')
    grep -q '^Application protocol: h2' <<<"$out" ||
      { echo "bench-tls: h2load did not speak h2 to $server" >&2; exit 1; }
  else
    requests=$(printf '%s\n' "$out" | awk '/ requests in / {print $1}')
    rps=$(printf '%s\n' "$out" | awk '/^Requests\/sec:/ {print $2}')
    errors=$(printf '%s\n' "$out" | awk '
      /Socket errors:/ {gsub(",", ""); n += $4 + $6 + $8 + $10}
      /Non-2xx or 3xx responses:/ {n += $5}
      END {print n + 0}')
  fi
  wall=$(awk -v a="$started" -v b="$ended" 'BEGIN {printf "%.3f", b - a}')
  client_s=$(awk '{print $1 + $2}' "$work/client-time")
  echo "$mode $what $server $requests $rps $((after - before)) $wall $errors $client_s" \
    "$((machine_after - machine_before))" >>"$work/results.txt"
}

# Warm-up: connections, caches, the servers' allocators.
for server in "${servers[@]}"; do
  "${client_cpu[@]}" wrk -t2 -c"$connections" -d2s "${url_of[$server]}/$part_path" >/dev/null
done

: >"$work/results.txt"
for run in $(seq "$runs"); do
  echo "bench-tls: run $run/$runs" >&2
  order=("${servers[@]}")
  if [ $((run % 2)) = 0 ]; then order=(nginx-tls onair-tls nginx onair); fi
  for mode in keepalive close; do
    for what in part playlist; do
      for server in "${order[@]}"; do
        measure "$mode" "$what" "$server"
      done
    done
  done
  h2_order=(onair-tls nginx-tls)
  if [ $((run % 2)) = 0 ]; then h2_order=(nginx-tls onair-tls); fi
  for server in "${h2_order[@]}"; do
    measure h2 part "$server"
  done
done

python3 - "$work" "$runs" "$connections" "$wrk_s" "$(getconf CLK_TCK)" "${#server_cpu[@]}" "$(nproc)" \
  "$(stat -c %s "$static/bench/$part_path")" "$(stat -c %s "$static/bench/aac/live.m3u8")" <<'PY'
import statistics, sys
work, runs, conns, secs, hz, pinned, cores, part_bytes, playlist_bytes = sys.argv[1:10]
runs, secs, hz, cores = int(runs), float(secs), int(hz), int(cores)
med = statistics.median

# (mode, what, server) -> per run: req/s, server CPU s per 1000 requests, the
# server's busy share of a core, client CPU s per 1000 requests, and the share
# of the machine other processes took meanwhile.
rows, errors = {}, {}
for run_line in open(f"{work}/results.txt"):
    mode, what, server, requests, rps, ticks, wall, errs, client_s, machine = run_line.split()
    requests, wall, client_s = int(requests), float(wall), float(client_s)
    server_s = int(ticks) / hz
    others = (int(machine) / hz - server_s - client_s) / (cores * wall)
    per_1000 = lambda cpu: cpu / requests * 1000 if requests else float("nan")
    rows.setdefault((mode, what, server), []).append(
        (float(rps), per_1000(server_s), server_s / wall, per_1000(client_s), max(others, 0.0)))
    if int(errs):
        errors[(mode, what, server)] = errors.get((mode, what, server), 0) + int(errs)

def col(key, i):
    return [r[i] for r in rows[key]]

def ratio(a, b, i):
    # Median of the per-run ratios: each pair measured in the same run.
    return med(x / y for x, y in zip(col(a, i), col(b, i)))

print(open(f"{work}/tls-params.txt").read().rstrip())
loads = [float(l.split("load average:")[1].split(",")[0]) for l in open(f"{work}/load.txt")]
others = [r[4] for v in rows.values() for r in v]
print("servers on core 1, wrk/h2load on core 0" if int(pinned)
      else "not pinned: clients and servers share the cores")
print(f"machine load average (1 min) during the runs: {min(loads):.2f} to {max(loads):.2f} "
      "(the client's threads and the server count for about 3)")
print(f"CPU taken by other processes during the measurements: median {med(others) * 100:.0f} %, "
      f"max {max(others) * 100:.0f} % of the machine's {cores} cores")
print(f"{runs} runs of {secs:.0f} s per server and case, {conns} connections; medians; "
      "cells: req/s · server CPU s per 1000 requests · busy share of its core")
print()
cases = [("keepalive", "part", f"part ({part_bytes} B), keep-alive"),
         ("keepalive", "playlist", f"playlist ({playlist_bytes} B), keep-alive"),
         ("close", "part", "part, new connection per request"),
         ("close", "playlist", "playlist, new connection per request"),
         ("h2", "part", "part, h2 (h2load -m1)")]
servers = ["onair", "onair-tls", "nginx", "nginx-tls"]
header = "| case | onair plain | onair TLS | nginx plain | nginx TLS |\n|---|---|---|---|---|"

def table(cell):
    print(header)
    for mode, what, label in cases:
        cells = [cell((mode, what, s)) if (mode, what, s) in rows else "—" for s in servers]
        print(f"| {label} | " + " | ".join(cells) + " |")
    print()

table(lambda k: f"{med(col(k, 0)):,.0f} · {med(col(k, 1)):.4f} · {med(col(k, 2)) * 100:.0f} %"
      .replace(",", " "))
print("client (wrk, h2load) CPU s per 1000 requests:")
table(lambda k: f"{med(col(k, 3)):.4f}")
print("| case | onair TLS/plain req/s | CPU/req | nginx TLS/plain req/s | CPU/req "
      "| onair TLS / nginx TLS req/s | CPU/req |")
print("|---|---|---|---|---|---|---|")
for mode, what, label in cases:
    cells = []
    for a, b in (("onair-tls", "onair"), ("nginx-tls", "nginx"), ("onair-tls", "nginx-tls")):
        ka, kb = (mode, what, a), (mode, what, b)
        if ka in rows and kb in rows:
            cells += [f"{ratio(ka, kb, 0):.2f}", f"{ratio(ka, kb, 1):.2f}"]
        else:
            cells += ["—", "—"]
    print(f"| {label} | " + " | ".join(cells) + " |")
for (mode, what, server), n in sorted(errors.items()):
    print(f"WARNING: {n} errors (socket errors, non-2xx, failed streams) from {server}, {mode} {what}, all runs")
PY
