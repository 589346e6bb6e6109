#!/usr/bin/env bash
# Benchmarks of the origin (docs/BENCHMARKS.md, "Origin"):
#
# (a) Wake-up: LISTENERS (default 10000) simulated listeners, each holding a
#     blocking playlist request, against the in-process origin of `onair live
#     --http` (`onair loadtest --playlists-only --segment-wakeups`: every
#     reload asks for the first part of the next segment, so all LISTENERS
#     requests wait for the same part and are woken together once per
#     segment; a simulator on the same 2 cores could not take 10000 answers
#     per 320 ms part). Reports the delay from a part's
#     publication to the listeners holding the playlist that announces it
#     (p50/p99), next to the same figure for a single listener (the floor: the
#     packager's own latency from a part's program date to its publication,
#     which the loaded figure also contains), the difference (what waking
#     LISTENERS requests adds; target p99 <= 20 ms), and the origin's memory
#     per waiting request (RSS at steady state minus RSS before, / LISTENERS).
#     Each run starts a fresh origin so that the memory baseline is clean.
#     The origin also measures its own share (log target onair::origin::wake,
#     one line per woken part): from the tracker's state update to each woken
#     request's response being handed to hyper, p50/p99 per part; reported as
#     the median over the parts that woke at least half the listeners.
# (b) Serving: wrk requests/s for a cached part and for a playlist (the
#     immutable answer to a blocking reload for a past part, i.e. what a CDN
#     fetches), from the origin and from nginx serving the same bytes from
#     disk, in the same run; ratio origin/nginx (target >= 1.0).
#
# Medians over RUNS (default 3). On a machine with two cores or more the
# origin (and nginx) run on core 1 and the simulator (and wrk) on core 0, so
# that client and server do not take each other's CPU; other processes on the
# machine still do (the load average is reported).
#
#   scripts/bench-origin.sh [LISTENERS] [RUNS]
#
# ONAIR=/path/to/onair uses that binary instead of `cargo build --release`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cdn-deps.sh
source scripts/bench-lib.sh
build_deps
cdn_deps
need_apt curl curl
need_apt /usr/bin/time time

listeners=${1:-10000}
runs=${2:-3}
ramp_s=5          # listener starts spread over this long (SYN backlog)
steady_s=10       # then every listener waits on the origin this long
floor_s=6         # the one-listener run
wrk_s=5           # each wrk measurement
wrk_connections=64
work=target/bench-origin
rm -rf "$work"
mkdir -p "$work"

if [ -z "${ONAIR:-}" ]; then
  cargo build --release --quiet
  ONAIR=target/release/onair
fi

# One socket per waiting request in the origin and in the simulator.
ulimit -n "$(ulimit -Hn)"

# Servers on core 1, clients on core 0.
server_cpu=()
client_cpu=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  server_cpu=(taskset -c 1)
  client_cpu=(taskset -c 0)
fi
if [ "$(ulimit -n)" -lt $((listeners + 1024)) ]; then
  echo "bench-origin: open-file limit $(ulimit -n) is too low for $listeners listeners" >&2
  exit 1
fi


origin_pid=""
nginx_pid=""
cleanup() {
  [ -n "$origin_pid" ] && kill -INT "$origin_pid" 2>/dev/null && wait "$origin_pid" 2>/dev/null
  [ -n "$nginx_pid" ] && kill -TERM "$nginx_pid" 2>/dev/null && wait "$nginx_pid" 2>/dev/null
  return 0
}
trap cleanup EXIT

# start_origin NAME: `onair live` with its origin on a free port; sets
# origin_pid and base (the stream's URL prefix). A long window keeps the
# parts used by (b) listed for the whole run.
start_origin() {
  local name=$1 port
  port=$(free_port)
  RUST_LOG=info,onair::origin::wake=debug "${server_cpu[@]}" \
    "$ONAIR" live --demo --window 600 --store "$work/store-$name" --stream bench \
    --http "127.0.0.1:$port" >"$work/origin-$name.log" 2>&1 &
  origin_pid=$!
  base="http://127.0.0.1:$port/bench"
  for _ in $(seq 300); do
    curl -sf -o /dev/null "$base/index.m3u8" && return 0
    kill -0 "$origin_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "bench-origin: the origin did not come up; log:" >&2
  cat "$work/origin-$name.log" >&2
  exit 1
}

stop_origin() {
  kill -INT "$origin_pid"
  wait "$origin_pid" || true
  origin_pid=""
}

# ---------------------------------------------------------------- (a) wake-up
for i in $(seq "$runs"); do
  echo "bench-origin: wake-up run $i/$runs ($listeners listeners)" >&2
  start_origin "wake-$i"
  idle0=$(cpu_ticks "$origin_pid")
  "${client_cpu[@]}" "$ONAIR" loadtest "$base/aac/live.m3u8" --listeners 1 --playlists-only \
    --segment-wakeups --duration "$floor_s" >"$work/floor-$i.txt"
  rss0=$(rss_kb "$origin_pid")
  cpu0=$(cpu_ticks "$origin_pid")
  uptime >>"$work/load.txt"
  /usr/bin/time -o "$work/loadtest-time-$i.txt" -f "%U %S" \
    "${client_cpu[@]}" "$ONAIR" loadtest "$base/aac/live.m3u8" --listeners "$listeners" --playlists-only --segment-wakeups \
    --ramp "$ramp_s" --duration $((ramp_s + steady_s)) >"$work/wake-$i.txt" &
  load_pid=$!
  sleep $((ramp_s + 1))
  # Steady state: RSS and open descriptors (~ one socket per waiting request).
  : >"$work/samples-$i.txt"
  while kill -0 "$load_pid" 2>/dev/null; do
    echo "$rss0 $(rss_kb "$origin_pid") $(find "/proc/$origin_pid/fd" -mindepth 1 | wc -l)" >>"$work/samples-$i.txt"
    sleep 0.5
  done
  wait "$load_pid"
  echo "$idle0 $cpu0 $(cpu_ticks "$origin_pid") $(getconf CLK_TCK)" >"$work/origin-cpu-$i.txt"
  stop_origin
  grep 'woken requests answered' "$work/origin-wake-$i.log" >"$work/origin-wakes-$i.txt" || true
done

# ---------------------------------------------------------------- (b) serving
echo "bench-origin: serving" >&2
start_origin serve
sleep 3
playlist=$(curl -sf "$base/aac/live.m3u8")
part=$(printf '%s\n' "$playlist" | sed -n 's/^#EXT-X-PART:.*URI="\([0-9]*\.[0-9]*\.m4s\)".*/\1/p' | tail -1)
[ -n "$part" ] || { echo "bench-origin: no part listed in:" >&2; echo "$playlist" >&2; exit 1; }
msn=${part%%.*}
index=${part#*.}; index=${index%.m4s}
part_path="aac/$part"
playlist_path="aac/live.m3u8?_HLS_msn=$msn&_HLS_part=$index"
store="$work/store-serve/bench"

# nginx serves the very bytes the origin serves, from disk, at the same paths
# (a static server ignores the query string).
static="$work/static"
mkdir -p "$static/bench/aac" "$work/nginx/temp"
cp "$store/aac/$part" "$static/bench/aac/$part"
cp "$store/aac/at/$msn.$index.m3u8" "$static/bench/aac/live.m3u8"
for path in "$part_path" "$playlist_path"; do
  curl -sf "$base/$path" -o "$work/from-origin"        # also warms the origin's cache
  file="$static/bench/${path%%\?*}"
  cmp -s "$work/from-origin" "$file" || { echo "bench-origin: origin bytes of $path differ from the store" >&2; exit 1; }
done

nginx_port=$(free_port)
cat >"$work/nginx/nginx.conf" <<EOF
user root;
worker_processes auto;
worker_rlimit_nofile 65536;
pid $PWD/$work/nginx/nginx.pid;
error_log $PWD/$work/nginx/error.log warn;
events { worker_connections 4096; }
http {
    client_body_temp_path $PWD/$work/nginx/temp/client;
    proxy_temp_path $PWD/$work/nginx/temp/proxy;
    fastcgi_temp_path $PWD/$work/nginx/temp/fastcgi;
    uwsgi_temp_path $PWD/$work/nginx/temp/uwsgi;
    scgi_temp_path $PWD/$work/nginx/temp/scgi;
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    open_file_cache max=64 inactive=60s;
    types { application/vnd.apple.mpegurl m3u8; audio/mp4 m4s; }
    server {
        listen 127.0.0.1:$nginx_port;
        root $PWD/$static;
        location ~ \.m4s\$ { add_header Cache-Control "public, max-age=31536000, immutable"; }
        location ~ \.m3u8\$ { add_header Cache-Control "public, max-age=12"; }
    }
}
EOF
nginx_bin=$(command -v nginx)
"${server_cpu[@]}" "$nginx_bin" -c "$PWD/$work/nginx/nginx.conf" -p "$PWD/$work/nginx" -e "$PWD/$work/nginx/error.log" -g 'daemon off;' &
nginx_pid=$!
nginx_base="http://127.0.0.1:$nginx_port/bench"
for _ in $(seq 100); do curl -sf -o /dev/null "$nginx_base/$part_path" && break; sleep 0.1; done
kill -0 "$nginx_pid" 2>/dev/null || { echo "bench-origin: nginx did not start" >&2; exit 1; }
for path in "$part_path" "$playlist_path"; do
  curl -sf "$nginx_base/$path" -o "$work/from-nginx"
  cmp -s "$work/from-nginx" "$static/bench/${path%%\?*}" || { echo "bench-origin: nginx bytes of $path differ" >&2; exit 1; }
done

: >"$work/wrk.txt"
for i in $(seq "$runs"); do
  for what in part playlist; do
    path=$part_path
    [ "$what" = playlist ] && path=$playlist_path
    for server in origin nginx; do
      url="$base/$path"
      [ "$server" = nginx ] && url="$nginx_base/$path"
      uptime >>"$work/load.txt"
      out=$("${client_cpu[@]}" wrk -t2 -c"$wrk_connections" -d"${wrk_s}s" "$url")
      rps=$(printf '%s\n' "$out" | awk '/^Requests\/sec:/ {print $2}')
      bad=$(printf '%s\n' "$out" | awk '/Non-2xx or 3xx responses:/ {print $5}')
      echo "$what $server $rps ${bad:-0}" >>"$work/wrk.txt"
    done
  done
done
part_bytes=$(stat -c %s "$static/bench/$part_path")
playlist_bytes=$(stat -c %s "$static/bench/aac/live.m3u8")

python3 - "$work" "$runs" "$listeners" "$part_bytes" "$playlist_bytes" "$wrk_connections" "$wrk_s" \
  "${#server_cpu[@]}" <<'PY'
import re, statistics, sys
work, runs, listeners, part_bytes, playlist_bytes, conns, secs, pinned = sys.argv[1:9]
runs, listeners = int(runs), int(listeners)

def report(path):
    out = {}
    for line in open(path):
        line = line.strip()
        if line.startswith(("part_delay_ms", "playlist_delay_ms")):
            key, *kv = line.split()
            out[key] = {k: float(v) for k, v in (x.split("=") for x in kv)}
        elif "=" in line and " " not in line:
            k, v = line.split("=", 1)
            out[k] = v
        elif line.startswith("error "):
            out.setdefault("error_lines", []).append(line)
    return out

med = statistics.median
floors = [report(f"{work}/floor-{i}.txt")["playlist_delay_ms"] for i in range(1, runs + 1)]
loads = [report(f"{work}/wake-{i}.txt") for i in range(1, runs + 1)]
delays = [r["playlist_delay_ms"] for r in loads]
mem, fds = [], []
for i in range(1, runs + 1):
    rows = [list(map(int, l.split())) for l in open(f"{work}/samples-{i}.txt") if l.strip()]
    if rows:
        mem.append((max(r[1] for r in rows) - rows[0][0]) * 1024 / listeners)
        fds.append(med(r[2] for r in rows))

floor_p50 = med(f["p50"] for f in floors)
p50 = med(d["p50"] for d in delays)
p99 = med(d["p99"] for d in delays)
print(f"== (a) wake-up: {listeners} listeners on blocking playlist reloads, {runs} runs, medians")
print(f"floor, 1 listener: publication -> playlist p50 {floor_p50:.1f} ms, p99 {med(f['p99'] for f in floors):.1f} ms")
print(f"{listeners} listeners: publication -> playlist p50 {p50:.1f} ms, p99 {p99:.1f} ms "
      f"(samples per run {med(d['count'] for d in delays):.0f})")
print(f"added by waking {listeners} requests (minus the floor p50): p50 {p50 - floor_p50:.1f} ms, "
      f"p99 {p99 - floor_p50:.1f} ms (target p99 <= 20 ms)")
# The origin's own figure: per woken part, from the tracker's update to the
# responses handed to hyper.
wakes = []
for i in range(1, runs + 1):
    for line in open(f"{work}/origin-wakes-{i}.txt"):
        line = re.sub(r"\x1b\[[0-9;]*m", "", line)   # colours, if any
        fields = dict(re.findall(r"(\w+)=(\d+)", line))
        if "rendition=bench/aac" in line and int(fields.get("woken", 0)) >= listeners / 2:
            wakes.append({k: int(v) for k, v in fields.items()})
if wakes:
    print(f"origin side, {len(wakes)} parts waking >= {listeners // 2} requests each "
          f"(median woken {med(w['woken'] for w in wakes):.0f}): state update -> response to hyper "
          f"p50 {med(w['p50_us'] for w in wakes) / 1000:.1f} ms, "
          f"p99 {med(w['p99_us'] for w in wakes) / 1000:.1f} ms "
          f"(worst part p99 {max(w['p99_us'] for w in wakes) / 1000:.1f} ms, "
          f"max {max(w['max_us'] for w in wakes) / 1000:.1f} ms)")
else:
    print("origin side: no woken part logged (RUST_LOG onair::origin::wake=debug?)")
print("origin and nginx on core 1, simulator and wrk on core 0" if int(pinned)
      else "not pinned: clients and servers share the cores")
load_avg = [float(l.split("load average:")[1].split(",")[0]) for l in open(f"{work}/load.txt")]
print(f"machine load average (1 min) during the runs: {min(load_avg):.1f} to {max(load_avg):.1f}")
print(f"requests/s {med(float(r['requests_per_s']) for r in loads):.0f}, "
      f"errors per run {[int(r['errors']) for r in loads]}, share of reloads that were "
      f"waiting when their part was published {med(d['count'] / int(r['playlists']) for d, r in zip(delays, loads)):.2f}")
# CPU per request, origin and simulator: the two share the machine, so the
# delays above are upper bounds of what the origin alone would show. The
# origin process also encodes the broadcast: its CPU rate during the
# one-listener run is subtracted.
origin_us, sim_us = [], []
for i, r in enumerate(loads, 1):
    idle, before, after, hz = map(int, open(f"{work}/origin-cpu-{i}.txt").read().split())
    floor_s = float(report(f"{work}/floor-{i}.txt")["duration_s"])
    encoding_per_s = (before - idle) / hz / floor_s
    user, system = map(float, open(f"{work}/loadtest-time-{i}.txt").read().split()[-2:])
    requests = int(r["requests"])
    serving = (after - before) / hz - encoding_per_s * float(r["duration_s"])
    origin_us.append(serving * 1e6 / requests)
    sim_us.append((user + system) * 1e6 / requests)
print(f"CPU per request: origin {med(origin_us):.1f} us, simulator {med(sim_us):.1f} us; "
      f"waking {listeners} requests costs the origin ~{med(origin_us) * listeners / 1000:.0f} ms of CPU")
for i, r in enumerate(loads, 1):
    for e in r.get("error_lines", []):
        print(f"  run {i}: {e}")
if mem:
    print(f"origin open descriptors at steady state {med(fds):.0f}; "
          f"memory per waiting request {med(mem) / 1024:.1f} KiB (RSS delta / listeners)")

rows = {}
for line in open(f"{work}/wrk.txt"):
    what, server, rps, bad = line.split()
    rows.setdefault((what, server), []).append(float(rps))
    if int(bad):
        print(f"WARNING: {bad} non-2xx answers from {server} for the {what}")
print(f"== (b) serving: wrk -t2 -c{conns} -d{secs}s, {runs} runs, medians (req/s)")
for what, size in (("part", part_bytes), ("playlist", playlist_bytes)):
    o, n = med(rows[(what, "origin")]), med(rows[(what, "nginx")])
    print(f"{what:<9} ({size:>5} B): origin {o:>9.0f}  nginx {n:>9.0f}  origin/nginx {o / n:.2f}")
PY
