#!/usr/bin/env bash
# Benchmarks of the mix-minus return feeds (docs/BENCHMARKS.md, "Return feeds
# (mix-minus)"):
#
# (a) Return latency: for each --jitter-ms in JITTERS, a fresh `onair live
#     --http --webrtc-udp --admin-token` with hosts alice and bob, and one
#     `scripts/bench_returns.py latency` process holding both WHIP sessions
#     (aiortc, one monotonic clock): alice (sendonly) sends silence with a
#     10 ms 2 kHz burst every 700 ms, bob (sendrecv) sends silence and
#     records his return; latency = the burst's onset arriving in bob's
#     return - the burst's frame handed to aiortc, CLICKS bursts, p50/p99,
#     split into aiortc send side / onair / aiortc receive side. Alice's
#     LiveFeed depth is polled from the control API, and the Opus rendition
#     is followed as an LL-HLS client (blocking reload, part GET, decode):
#     burst -> the part holding it downloaded, the program's figure on the
#     same run.
# (b) CPU per host with returns: for REPS rounds, for each host count N in
#     COUNTS and each mode, a fresh `onair live` (all hosts' keys,
#     --max-whip-per-address 16) with N aiortc hosts (`bench_returns.py
#     hosts`, four per Python process), every host sending its own tone:
#       off    sendonly: no returns;
#       on     sendrecv: every host hears a return, and every host speaks,
#              so each return is an encode of its own (the worst case);
#       muted  sendrecv, all hosts but h1 muted through the control API
#              (PATCH /control/hosts/hN {"muted": true}): the muted hosts
#              share one program encode, h1 has its own.
#     Once the control API shows the N hosts on air (and, with returns,
#     each with a listener of its return), WARMUP_S, then onair's CPU ticks
#     (/proc/PID/stat utime + stime) over WINDOW_S. Medians over the rounds.
#
#   scripts/bench-returns.sh [--quick]
#
# --quick: a smoke run (5 bursts at the default jitter buffer, 2 hosts, one
# round of 5 s per mode). Environment: ONAIR=/path/to/onair instead of
# `cargo build --release`; JITTERS (default "200 40 20"), CLICKS (40) per
# latency run, LAT_REPS (2 latency runs per jitter setting, clicks pooled),
# COUNTS ("2 4 8"), MODES ("off on muted"), REPS (3), WINDOW_S (30),
# WARMUP_S (5); an empty JITTERS or COUNTS skips that part; WORK (default
# target/bench-returns) is where logs and results go. On two cores or more
# onair runs on core 1 and the Python hosts on core 0 (taskset); other
# processes on the machine still take CPU (the load average is reported).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh

quick=0
if [ "${1:-}" = "--quick" ]; then quick=1; fi
if [ "$quick" = 1 ]; then
  jitters=${JITTERS-200}; clicks=${CLICKS:-5}; lat_reps=${LAT_REPS:-1}; counts=${COUNTS-2}
  modes=${MODES:-"off on muted"}; reps=${REPS:-1}; window_s=${WINDOW_S:-5}; warmup_s=${WARMUP_S:-2}
else
  jitters=${JITTERS-"200 40 20"}; clicks=${CLICKS:-40}; lat_reps=${LAT_REPS:-2}; counts=${COUNTS-"2 4 8"}
  modes=${MODES:-"off on muted"}; reps=${REPS:-3}; window_s=${WINDOW_S:-30}; warmup_s=${WARMUP_S:-5}
fi
on_air_timeout_s=30
per_process=4
admin_token=bench-returns-admin
work=${WORK:-target/bench-returns}
rm -rf "$work"
mkdir -p "$work"

python3 -c 'import aiortc, av' || { echo "bench-returns: needs aiortc (pip install aiortc)" >&2; exit 1; }
if [ -z "${ONAIR:-}" ]; then
  nice cargo build --release --quiet --bin onair
fi
ONAIR=${ONAIR:-target/release/onair}

onair_cpu=()
client_cpu=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  onair_cpu=(taskset -c 1)
  client_cpu=(taskset -c 0)
fi

max_hosts=2
for n in $counts; do if [ "$n" -gt "$max_hosts" ]; then max_hosts=$n; fi; done
keys=(--key alice=secret-alice-1 --key bob=secret-bob-22)
for i in $(seq "$max_hosts"); do keys+=(--key "h$i=secret-h$i"); done

pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

load_note() { echo "$1 $(uptime)" >>"$work/load.txt"; }

# start_broadcast NAME [ARGS...]: sets onair_pid and http_url.
start_broadcast() {
  local name=$1 log="$work/$1.log"
  shift
  : >"$log"
  RUST_LOG=info NO_COLOR=1 "${onair_cpu[@]}" "$ONAIR" live \
    --http 127.0.0.1:0 --webrtc-udp 127.0.0.1:0 --admin-token "$admin_token" \
    --max-whip-per-address 16 --store "$work/store-$name" --stream s "${keys[@]}" "$@" >"$log" 2>&1 &
  onair_pid=$!
  pids+=("$onair_pid")
  http_url=""
  for _ in $(seq 200); do
    http_url=$(sed -n 's|.*WHIP ingest: \(http://[^/]*\)/s/whip .*|\1|p' "$log" | head -1)
    [ -n "$http_url" ] && return 0
    kill -0 "$onair_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "bench-returns: broadcast $name did not start; log:" >&2
  cat "$log" >&2
  exit 1
}

stop_broadcast() {
  kill -TERM "$onair_pid"
  wait "$onair_pid" || { echo "bench-returns: onair of $1 exited with $?; log:" >&2; cat "$work/$1.log" >&2; exit 1; }
  pids=()
}

# --- (a) return latency ----------------------------------------------------
for r in $(seq "$lat_reps"); do
  for j in $jitters; do
    name="latency-j$j-r$r"
    echo "bench-returns: return latency, --jitter-ms $j, $clicks bursts, round $r" >&2
    start_broadcast "$name" --jitter-ms "$j"
    load_note "$name"
    "${client_cpu[@]}" python3 scripts/bench_returns.py latency --url "$http_url/s/whip" \
      --token-a secret-alice-1 --token-b secret-bob-22 --host-a alice --clicks "$clicks" \
      --admin-token "$admin_token" --program --out "$work/$name.json" >"$work/$name.out" ||
      { echo "bench-returns: latency run $name failed (fewer than 80 % of clicks heard):" >&2; cat "$work/$name.out" >&2; }
    stop_broadcast "$name"
  done
done

# --- (b) CPU per host --------------------------------------------------------

# wait_on_air N MODE: every host h1..hN on air in a WHIP session, and with
# returns, each with a listener of its return.
wait_on_air() {
  python3 - "$http_url" "$admin_token" "$1" "$2" "$on_air_timeout_s" "$onair_pid" <<'PY'
import json, os, sys, time, urllib.request
url, token, n, mode, timeout, pid = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5]), int(sys.argv[6])
deadline = time.monotonic() + timeout
while True:
    req = urllib.request.Request(f"{url}/control/hosts", headers={"Authorization": f"Bearer {token}"})
    hosts = {h["name"]: h for h in json.load(urllib.request.urlopen(req, timeout=5))}
    missing = [f"h{i}" for i in range(1, n + 1)
               if hosts[f"h{i}"]["state"] != "on-air" or hosts[f"h{i}"]["protocol"] != "whip"
               or (mode != "off" and not hosts[f"h{i}"]["returns"])]
    if not missing:
        sys.exit(0)
    if time.monotonic() > deadline or not os.path.exists(f"/proc/{pid}"):
        sys.exit(f"bench-returns: {n} hosts, {mode}: not on air: {missing}")
    time.sleep(0.2)
PY
}

# returns_now N: the `returns` of h1..hN, space-separated (a check that the
# returns were still listened to at the end of the window).
returns_now() {
  curl -s -H "Authorization: Bearer $admin_token" "$http_url/control/hosts" |
    python3 -c 'import json,sys; n=int(sys.argv[1]); h={x["name"]:x for x in json.load(sys.stdin)}; print(" ".join(str(h[f"h{i}"]["returns"] or 0) for i in range(1,n+1)))' "$1"
}

hz=$(getconf CLK_TCK)
echo "round hosts mode onair_cpu_pct clients_cpu_pct returns_at_end" >"$work/cpu.txt"
for rep in $(seq "$reps"); do
  for n in $counts; do
    for mode in $modes; do
      name="cpu-r$rep-n$n-$mode"
      echo "bench-returns: round $rep, $n hosts, returns $mode" >&2
      start_broadcast "$name"
      direction=--sendrecv
      if [ "$mode" = off ]; then direction=--sendonly; fi
      client_pids=()
      for ((first = 1; first <= n; first += per_process)); do
        tokens=()
        for ((i = first; i < first + per_process && i <= n; i++)); do tokens+=(--token "secret-h$i"); done
        "${client_cpu[@]}" python3 scripts/bench_returns.py hosts --url "$http_url/s/whip" "$direction" \
          --first-tone $((200 + 50 * (first - 1))) "${tokens[@]}" >"$work/$name-clients-$first.log" 2>&1 &
        client_pids+=($!)
        pids+=($!)
      done
      wait_on_air "$n" "$mode"
      if [ "$mode" = muted ]; then
        for ((i = 2; i <= n; i++)); do
          curl -sf -X PATCH -H "Authorization: Bearer $admin_token" -H 'Content-Type: application/json' \
            -d '{"muted": true}' "$http_url/control/hosts/h$i" >/dev/null
        done
      fi
      sleep "$warmup_s"
      load_note "$name"
      c0=$(cpu_ticks "$onair_pid")
      p0=0; for p in "${client_pids[@]}"; do p0=$((p0 + $(cpu_ticks "$p"))); done
      t0=$(date +%s.%N)
      sleep "$window_s"
      c1=$(cpu_ticks "$onair_pid")
      p1=0; for p in "${client_pids[@]}"; do p1=$((p1 + $(cpu_ticks "$p"))); done
      t1=$(date +%s.%N)
      at_end=$(returns_now "$n")
      for p in "${client_pids[@]}"; do kill -TERM "$p"; done
      for p in "${client_pids[@]}"; do
        wait "$p" || { echo "bench-returns: hosts of $name failed:" >&2; cat "$work/$name"-clients-*.log >&2; exit 1; }
      done
      if grep -q '"error"' "$work/$name"-clients-*.log; then
        echo "bench-returns: a host of $name failed:" >&2; cat "$work/$name"-clients-*.log >&2; exit 1
      fi
      stop_broadcast "$name"
      python3 -c 'import sys; c0,c1,p0,p1,hz,t0,t1=map(float,sys.argv[1:8]); s=t1-t0; print(f"{100*(c1-c0)/hz/s:.2f} {100*(p1-p0)/hz/s:.2f}")' \
        "$c0" "$c1" "$p0" "$p1" "$hz" "$t0" "$t1" |
        { read -r cpu clients; echo "$rep $n $mode $cpu $clients ${at_end// /,}"; } >>"$work/cpu.txt"
    done
  done
done

python3 - "$work" "$jitters" "$counts" "$modes" <<'PY'
import json, statistics, sys
work, jitters, counts, modes = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4].split()

import glob
def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, max(0, -(-p * len(v) // 100) - 1))]
def cell(v):
    return f"{pct(v, 50):.0f} / {pct(v, 99):.0f}" if v else "-"

print("Return latency, ms, p50 / p99 over the clicks of all rounds (click handed to aiortc by host A ->")
print("onset out of host B's aiortc receiver); 'socket': onset's packet at B's UDP socket instead;")
print("'steady': only clicks heard before either host's feed first ran dry (a stalled publisher); 'program':")
print("click -> the Opus part holding it downloaded by an LL-HLS client; 'lost': clicks never heard:")
print(f"{'jitter':>6} {'clicks':>6} {'return':>11} {'min-max':>9} {'run p50s':>10} {'steady (n)':>15} {'socket':>11} | "
      f"{'A send':>7} {'onair':>11} {'B recv':>7} {'in frame':>8} | {'depth':>11} | {'program':>11}")
for j in jitters:
    runs = [json.load(open(f)) for f in sorted(glob.glob(f"{work}/latency-j{j}-r*.json"))]
    if not runs:
        print(f"{j:>6} no run"); continue
    total = [x for r in runs for x in r["_total"]]
    steady = [x for r in runs for x in r["_steady"]]
    col = lambda key: cell([x for r in runs for x in r["_split"][key]])
    print(f"{j:>6} {len(total):>6} {cell(total):>11} {min(total):>4.0f}-{max(total):<4.0f} "
          f"{','.join(str(round(r['return_ms']['p50'])) for r in runs):>10} {cell(steady) + f' ({len(steady)})':>15} "
          f"{cell([x for r in runs for x in r['_socket']]):>11} | {pct([x for r in runs for x in r['_split']['a_send']], 50):>7.1f} "
          f"{col('onair'):>11} {pct([x for r in runs for x in r['_split']['b_receive']], 50):>7.0f} "
          f"{pct([x for r in runs for x in r['_split']['onset_in_frame']], 50):>8.0f} | "
          f"{cell([x for r in runs for x in r['_depth']]):>11} | {cell([x for r in runs for x in r['_program']]):>11}"
          f"   lost {sum(r['unmatched_clicks'] for r in runs)}, spurious {sum(r['spurious_onsets'] for r in runs)}, "
          f"program lost {sum(r.get('program_unmatched', 0) for r in runs)}")

rows = [l.split() for l in open(f"{work}/cpu.txt")][1:]
cpu = {}
for rep, n, mode, c, p, ret in rows:
    cpu[(rep, n, mode)] = (float(c), float(p), ret)
rounds = sorted({r[0] for r in rows}, key=int)
print()
print("onair CPU, % of one core: median of the rounds [each round]; on/off and the per-host")
print("differences are medians of each round's own ratio and difference; clients' CPU for context:")
for n in counts:
    line = f"{n:>2} hosts:"
    for m in modes:
        runs = [cpu[(r, n, m)][0] for r in rounds if (r, n, m) in cpu]
        if runs:
            line += f"  {m} {statistics.median(runs):.2f} [" + ", ".join(f"{c:.1f}" for c in runs) + "]"
    def per_round(m, f):
        v = [f(cpu[(r, n, m)][0], cpu[(r, n, "off")][0]) for r in rounds if (r, n, m) in cpu and (r, n, "off") in cpu]
        return v and statistics.median(v)
    if "off" in modes and "on" in modes:
        line += (f"  on/off {per_round('on', lambda a, b: a / b):.2f}"
                 f"  (on-off)/N {per_round('on', lambda a, b: (a - b) / int(n)):+.2f}")
    if "off" in modes and "muted" in modes:
        line += f"  (muted-off)/N {per_round('muted', lambda a, b: (a - b) / int(n)):+.2f}"
    print(line)
    print("         clients: " + ", ".join(
        f"{m} {statistics.median(cpu[(r, n, m)][1] for r in rounds if (r, n, m) in cpu):.1f} %"
        for m in modes if any((r, n, m) in cpu for r in rounds))
        + "; returns listened at the end: " + ", ".join(
        f"{m} {cpu[(rounds[-1], n, m)][2]}" for m in modes if (rounds[-1], n, m) in cpu))
for line in open(f"{work}/load.txt"):
    what, rest = line.split(" ", 1)
    print(f"load at {what}: {rest.split('load average:')[1].strip()}")
PY
