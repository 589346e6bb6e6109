#!/usr/bin/env bash
# Benchmarks of a live broadcast with WHIP hosts (docs/BENCHMARKS.md, "WHIP
# hosts"):
#
# (a) CPU per WHIP host: for each count N in LEVELS, a fresh `onair live
#     --http --webrtc-udp --admin-token` with MAX(LEVELS) host keys and N
#     concurrent WHIP hosts published by scripts/whip_publisher.py (aiortc,
#     Opus from fixtures/host-a.flac as a looped WAV, PUBLISHER_SESSIONS
#     hosts per Python process). Once every host is on air and WARMUP_S more
#     seconds have passed, onair's CPU time (/proc/PID/stat utime + stime) and
#     RSS (/proc/PID/status VmRSS) are read every second for DURATION_S
#     seconds. CPU % of one core per N, the least-squares line through them
#     (slope = CPU per host: DTLS-SRTP, Opus decode, jitter buffer, resample,
#     mix; intercept = the broadcast without hosts), and the hosts one core
#     sustains, (100 - intercept) / slope. The publishers' CPU is reported
#     apart, for context.
# (b) Jitter path: every second the control API (GET /control/hosts) must
#     show each of the N hosts in a WHIP session (`protocol` whip) and no
#     other host; each host sample is `on-air` or, after an underrun (a
#     publisher starved of CPU on the shared machine), `connected` while its
#     buffer refills. The run fails if a session is missing or more than
#     MAX_REBUFFERING_PCT % of the host samples are not `on-air`. The
#     `depth_ms` of on-air samples (audio buffered in the host's LiveFeed
#     ahead of the program) gives median and p99 per N and over all samples;
#     underruns are counted.
# (c) Memory: RSS at the first and last sample of each N (the issue asks for
#     8 hosts).
#
#   scripts/bench-whip.sh [LEVELS] [DURATION_S]
#
# Defaults "0 1 4 8 12", 60. ONAIR=/path/to/onair uses that binary instead of
# `cargo build --release`. On a machine with two cores or more onair runs on
# core 1 and the publishers on core 0 (taskset), so that they do not take
# each other's CPU; other processes on the machine still do (the load
# average is reported).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
build_deps
need_apt ffmpeg ffmpeg
need_apt taskset util-linux
need_py_module aiortc aiortc

levels=${1:-"0 1 4 8 12"}
duration_s=${2:-60}
warmup_s=10          # the hosts' feeds settle at their target depth
on_air_timeout_s=30  # ICE, DTLS and the jitter buffer filling, per level
publisher_sessions=${PUBLISHER_SESSIONS:-4}
max_rebuffering_pct=5
admin_token=bench-whip-admin
work=target/bench-whip
rm -rf "$work"
mkdir -p "$work"

if [ -z "${ONAIR:-}" ]; then
  cargo build --release --quiet --bin onair
fi
ONAIR=${ONAIR:-target/release/onair}

max_hosts=0
for n in $levels; do
  if [ "$n" -gt "$max_hosts" ]; then max_hosts=$n; fi
done
keys=()
for i in $(seq "$max_hosts"); do keys+=(--key "h$i=secret-h$i"); done

onair_cpu=()
publisher_cpu=()
if [ "$(nproc)" -ge 2 ]; then
  onair_cpu=(taskset -c 1)
  publisher_cpu=(taskset -c 0)
fi

# A 48 kHz stereo WAV of the fixture (speech-like content, not a pure tone,
# so that the publishers' Opus encoder and onair's decoder do real work).
ffmpeg -nostdin -hide_banner -loglevel error -i fixtures/host-a.flac -ar 48000 -ac 2 \
  -c:a pcm_s16le "$work/host.wav"

# Every process started here, killed on exit (also on error or Ctrl-C).
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

load_note() { echo "$1 $(uptime)" >>"$work/load.txt"; }

# start_broadcast NAME: `onair live` with WHIP ingest for every key; sets
# onair_pid and http_url (http://HOST:PORT, from its log).
start_broadcast() {
  local name=$1 log="$work/$1.log"
  : >"$log" # before the background process opens it, for the sed below
  RUST_LOG=info NO_COLOR=1 "${onair_cpu[@]}" "$ONAIR" live \
    --http 127.0.0.1:0 --webrtc-udp 127.0.0.1:0 --admin-token "$admin_token" \
    --store "$work/store-$name" --stream bench --window 60 "${keys[@]}" >"$log" 2>&1 &
  onair_pid=$!
  pids+=("$onair_pid")
  http_url=""
  for _ in $(seq 200); do
    http_url=$(sed -n 's|.*WHIP ingest: \(http://[^/]*\)/bench/whip .*|\1|p' "$log" | head -1)
    [ -n "$http_url" ] && return 0
    kill -0 "$onair_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "bench-whip: broadcast $name did not start; log:" >&2
  cat "$log" >&2
  exit 1
}

# publish_hosts N NAME: N hosts, PUBLISHER_SESSIONS per whip_publisher.py
# process, until SIGTERM; sets publisher_pids.
publish_hosts() {
  local n=$1 name=$2 first tokens i
  publisher_pids=()
  for ((first = 1; first <= n; first += publisher_sessions)); do
    tokens=()
    for ((i = first; i < first + publisher_sessions && i <= n; i++)); do
      tokens+=(--token "secret-h$i")
    done
    "${publisher_cpu[@]}" python3 scripts/whip_publisher.py "$work/host.wav" \
      --url "$http_url/bench/whip" "${tokens[@]}" >"$work/publisher-$name-$first.log" 2>&1 &
    publisher_pids+=($!)
    pids+=($!)
  done
}

# stop_publishers NAME: SIGTERM (each session DELETEs its Location), then
# every session must have reported `deleted: 200`.
stop_publishers() {
  local name=$1 pid log
  for pid in "${publisher_pids[@]}"; do kill -TERM "$pid"; done
  for pid in "${publisher_pids[@]}"; do
    wait "$pid" || { echo "bench-whip: publisher $pid of $name failed" >&2; cat "$work"/publisher-"$name"-*.log >&2; exit 1; }
  done
  for log in "$work"/publisher-"$name"-*.log; do
    if grep -q '"error"' "$log" || [ "$(grep -c '"deleted": 200' "$log")" != "$(grep -c '"posted": 201' "$log")" ]; then
      echo "bench-whip: a WHIP session of $name did not end with DELETE 200; $log:" >&2
      cat "$log" >&2
      exit 1
    fi
  done
}

# sample_level N NAME: waits until the N hosts are on air, WARMUP_S, then
# samples onair, the publishers and the control API every second for
# DURATION_S into $work/samples-NAME.jsonl. Fails if a WHIP session is
# missing at any sample, too many host samples are not on air, or a process
# exited.
sample_level() {
  python3 - "$1" "$work/samples-$2.jsonl" "$http_url" "$admin_token" "$on_air_timeout_s" \
    "$warmup_s" "$duration_s" "$max_rebuffering_pct" "$onair_pid" "${publisher_pids[@]}" <<'PY'
import json, sys, time, urllib.request

n, out, url, token = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
on_air_timeout, warmup, duration, max_rebuffering_pct = (float(a) for a in sys.argv[5:9])
onair, publishers = int(sys.argv[9]), [int(p) for p in sys.argv[10:]]
expected = {f"h{i}" for i in range(1, n + 1)}

def fail(why):
    sys.exit(f"bench-whip: {n} hosts: {why}")

def proc(pid):
    """(CPU ticks so far, RSS KiB) of a live process (proc(5): fields 14, 15
    of stat; the command name in field 2 may hold spaces)."""
    try:
        stat = open(f"/proc/{pid}/stat").read().rsplit(") ", 1)[1].split()
        rss = next(l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS"))
    except (FileNotFoundError, ProcessLookupError):
        fail(f"process {pid} exited early")
    return int(stat[11]) + int(stat[12]), int(rss)

def hosts():
    req = urllib.request.Request(f"{url}/control/hosts", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5) as reply:
        return {h["name"]: h for h in json.load(reply)}

def problems(listed, states=("on-air",)):
    """Why the control API's hosts are not exactly the N in WHIP sessions in
    one of `states`."""
    bad = [f"{name}: {h['state']}/{h['protocol']}" for name, h in sorted(listed.items())
           if (name in expected) != (h["state"] in states and h["protocol"] == "whip")]
    return ", ".join(bad)

deadline = time.monotonic() + on_air_timeout
while problems(hosts()):
    for pid in [onair] + publishers:
        proc(pid)
    if time.monotonic() > deadline:
        fail(f"not on air after {on_air_timeout:.0f} s: {problems(hosts())}")
    time.sleep(0.2)
time.sleep(warmup)

start = time.monotonic()
rebuffering = 0
with open(out, "w") as samples:
    for k in range(int(duration) + 1):
        time.sleep(max(0.0, start + k - time.monotonic()))
        t = time.time()
        listed = hosts()
        cpu, rss = proc(onair)
        pub = [proc(p)[0] for p in publishers]
        if problems(listed, ("on-air", "connected")):
            fail(f"at {k} s: {problems(listed, ('on-air', 'connected'))}")
        live = [listed[name] for name in sorted(expected)]
        rebuffering += sum(h["state"] != "on-air" for h in live)
        samples.write(json.dumps({
            "t": t, "cpu": cpu, "rss": rss, "publisher_cpu": sum(pub),
            "depth_ms": [h["depth_ms"] for h in live if h["state"] == "on-air"],
            "underruns": [h["underruns"] for h in live],
            "rebuffering": sum(h["state"] != "on-air" for h in live),
        }) + "\n")
if n and 100 * rebuffering / (n * (int(duration) + 1)) > max_rebuffering_pct:
    fail(f"{rebuffering} host samples of {n * (int(duration) + 1)} not on air")
PY
}

for n in $levels; do
  echo "bench-whip: $n WHIP hosts, $duration_s s after warm-up" >&2
  start_broadcast "n$n"
  publisher_pids=()
  if [ "$n" -gt 0 ]; then publish_hosts "$n" "n$n"; fi
  load_note "n$n-start"
  sample_level "$n" "n$n"
  load_note "n$n-end"
  if [ "$n" -gt 0 ]; then stop_publishers "n$n"; fi
  kill -TERM "$onair_pid"
  wait "$onair_pid" || { echo "bench-whip: onair of n$n exited with $?; log:" >&2; cat "$work/n$n.log" >&2; exit 1; }
  pids=()
done

python3 - "$work" "$(getconf CLK_TCK)" $levels <<'PY'
import json, statistics, sys

work, hz, levels = sys.argv[1], int(sys.argv[2]), [int(n) for n in sys.argv[3:]]

def percentile(values, p):
    """Nearest-rank percentile."""
    values = sorted(values)
    return values[min(len(values) - 1, max(0, -(-p * len(values) // 100) - 1))]

points, depths = [], []
print(f"{'hosts':>5} {'onair CPU %':>11} {'RSS first→last MiB':>19} {'depth p50/p99 ms':>16} "
      f"{'underruns':>9} {'not on air':>10} {'publisher CPU % per host':>24}")
for n in levels:
    rows = [json.loads(line) for line in open(f"{work}/samples-n{n}.jsonl")]
    span = rows[-1]["t"] - rows[0]["t"]
    cpu = 100.0 * (rows[-1]["cpu"] - rows[0]["cpu"]) / hz / span
    pub = 100.0 * (rows[-1]["publisher_cpu"] - rows[0]["publisher_cpu"]) / hz / span
    level_depths = [d for r in rows for d in r["depth_ms"]]
    depths += level_depths
    underruns = sum(rows[-1]["underruns"]) - sum(rows[0]["underruns"])
    rebuffering = sum(r["rebuffering"] for r in rows)
    points.append((n, cpu))
    depth = f"{percentile(level_depths, 50)}/{percentile(level_depths, 99)}" if n else "-"
    print(f"{n:>5} {cpu:>11.2f} {rows[0]['rss'] / 1024:>9.1f} → {rows[-1]['rss'] / 1024:<7.1f} "
          f"{depth:>16} {underruns:>9} {rebuffering:>10} {pub / n if n else 0:>24.2f}")

xs, ys = [p[0] for p in points], [p[1] for p in points]
mx, my = statistics.fmean(xs), statistics.fmean(ys)
slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)
base = my - slope * mx
ss_res = sum((y - (base + slope * x)) ** 2 for x, y in points)
ss_tot = sum((y - my) ** 2 for y in ys)
print(f"fit: onair CPU % = {base:.2f} + {slope:.3f} × hosts (R² {1 - ss_res / ss_tot:.4f}, "
      f"{len(points)} points, {span:.0f} s each)")
print(f"WHIP hosts one core sustains: (100 - {base:.2f}) / {slope:.3f} = {(100 - base) / slope:.0f}")
print(f"LiveFeed depth over all {len(depths)} on-air host samples: median {percentile(depths, 50)} ms, "
      f"p99 {percentile(depths, 99)} ms, min {min(depths)}, max {max(depths)}")
for line in open(f"{work}/load.txt"):
    what, rest = line.split(" ", 1)
    print(f"load at {what}: {rest.split('load average:')[1].strip()}")
PY
