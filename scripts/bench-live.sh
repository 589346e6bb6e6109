#!/usr/bin/env bash
# Benchmarks of a live broadcast with RTMP hosts (docs/BENCHMARKS.md, "Live
# broadcast (RTMP)"):
#
# (a) Glass-to-ear: examples/glass_to_ear publishes a click every 1.5 s over
#     RTMP to `onair live` and follows the Opus rendition as an LL-HLS client;
#     latency from the write of the AAC frame holding a click to the download
#     of the part holding it (p50/p99/max, and where the time goes). Run at
#     --jitter-ms 200 (the default) and 60, GLASS_S seconds each.
# (b) CPU and memory per broadcast: BROADCASTS concurrent `onair live`
#     broadcasts (each with its in-process origin, no listeners), each with
#     two RTMP hosts published by ffmpeg (lavfi sine, AAC 128 kb/s stereo,
#     `-re`), for DURATION_S seconds. Every SAMPLE_S seconds the CPU time
#     (/proc/PID/stat utime + stime) and RSS (/proc/PID/status VmRSS) of each
#     onair process are read. Reports CPU % of one core per broadcast (median
#     over the broadcasts, measured after WARMUP_S), the two-host broadcasts
#     one core sustains in real time (100 / CPU %), and RSS at the first and
#     last sample. The ffmpeg publishers' CPU is reported apart, for context.
# (c) Memory over time: one such broadcast for LONG_S seconds, RSS every
#     LONG_SAMPLE_S seconds: first, last, maximum, and the slope over the
#     second half (flat or growing).
#
#   scripts/bench-live.sh [BROADCASTS] [DURATION_S] [LONG_S] [GLASS_S]
#
# Defaults 4, 60, 600, 60. LONG_S=0 skips (c), GLASS_S=0 skips (a).
# ONAIR=/path/to/onair and GLASS=/path/to/glass_to_ear use those binaries
# instead of `cargo build --release`. Nothing is pinned: the machine's load
# average is reported with the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
source scripts/bench-lib.sh
build_deps
need_apt ffmpeg ffmpeg

broadcasts=${1:-4}
duration_s=${2:-60}
long_s=${3:-600}
glass_s=${4:-60}
warmup_s=5        # ffmpeg connects and the jitter buffers fill
sample_s=5
long_sample_s=10
work=target/bench-live
rm -rf "$work"
mkdir -p "$work"

if [ -z "${ONAIR:-}" ] || [ -z "${GLASS:-}" ]; then
  cargo build --release --quiet --bin onair --example glass_to_ear
fi
ONAIR=${ONAIR:-target/release/onair}
GLASS=${GLASS:-target/release/examples/glass_to_ear}

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

# start_broadcast NAME: `onair live` with RTMP ingest for hosts a and b on a
# free port; sets broadcast_pid and rtmp_addr (HOST:PORT, from its log).
start_broadcast() {
  local name=$1 log="$work/$1.log"
  RUST_LOG=info NO_COLOR=1 "$ONAIR" live --rtmp 127.0.0.1:0 --http 127.0.0.1:0 \
    --store "$work/store-$name" --stream "$name" --window 60 \
    --key a=secret-a --key b=secret-b >"$log" 2>&1 &
  broadcast_pid=$!
  pids+=("$broadcast_pid")
  rtmp_addr=""
  for _ in $(seq 200); do
    rtmp_addr=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | sed -n 's|.*RTMP ingest: rtmp://\([^/]*\)/live/.*|\1|p' | head -1)
    [ -n "$rtmp_addr" ] && return 0
    kill -0 "$broadcast_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "bench-live: broadcast $name did not start; log:" >&2
  cat "$log" >&2
  exit 1
}

# publish ADDR KEY FREQUENCY NAME: an ffmpeg host, in real time (-re), until
# killed; sets publisher_pid.
publish() {
  ffmpeg -nostdin -hide_banner -loglevel error -re \
    -f lavfi -i "sine=frequency=$3:sample_rate=48000" -ac 2 -c:a aac -b:a 128k \
    -f flv "rtmp://$1/live/$2" >"$work/ffmpeg-$4.log" 2>&1 &
  publisher_pid=$!
  pids+=("$publisher_pid")
}

# sample OUT PID...: one line per process: seconds since the epoch, pid,
# CPU ticks, RSS KiB. Fails if a process has gone.
sample() {
  local out=$1 pid now
  shift
  now=$(date +%s.%N)
  for pid in "$@"; do
    kill -0 "$pid" 2>/dev/null || { echo "bench-live: process $pid exited early" >&2; exit 1; }
    echo "$now $pid $(cpu_ticks "$pid") $(rss_kb "$pid")" >>"$out"
  done
}

# ------------------------------------------------------------ (a) glass-to-ear
if [ "$glass_s" -gt 0 ]; then
  for jitter in 200 60; do
    echo "bench-live: glass-to-ear, --jitter-ms $jitter, $glass_s s" >&2
    load_note "glass-$jitter"
    "$GLASS" --onair "$ONAIR" --seconds "$glass_s" --jitter-ms "$jitter" | tee "$work/glass-$jitter.txt"
  done
fi

# ------------------------------------------------- (b) CPU and memory per broadcast
echo "bench-live: $broadcasts broadcasts x 2 ffmpeg hosts, $duration_s s" >&2
onair_pids=()
ffmpeg_pids=()
for i in $(seq "$broadcasts"); do
  start_broadcast "b$i"
  onair_pids+=("$broadcast_pid")
  publish "$rtmp_addr" secret-a 440 "b$i-a"
  ffmpeg_pids+=("$publisher_pid")
  publish "$rtmp_addr" secret-b 660 "b$i-b"
  ffmpeg_pids+=("$publisher_pid")
done
sleep "$warmup_s"
load_note "concurrent-start"
: >"$work/onair-samples.txt"
: >"$work/ffmpeg-samples.txt"
for _ in $(seq 0 "$sample_s" "$duration_s"); do
  sample "$work/onair-samples.txt" "${onair_pids[@]}"
  sample "$work/ffmpeg-samples.txt" "${ffmpeg_pids[@]}"
  sleep "$sample_s"
done
load_note "concurrent-end"
# Both hosts of every broadcast must have been on air (the studio logs
# "host connected") and still be publishing (checked by `sample`).
for i in $(seq "$broadcasts"); do
  hosts=$(grep -c 'host connected' "$work/b$i.log" || true)
  if [ "$hosts" != 2 ]; then
    echo "bench-live: broadcast b$i had $hosts host connections, expected 2; log:" >&2
    cat "$work/b$i.log" >&2
    exit 1
  fi
done
for pid in "${onair_pids[@]}" "${ffmpeg_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
for pid in "${onair_pids[@]}" "${ffmpeg_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
pids=()

# ------------------------------------------------------------- (c) long run
: >"$work/long-samples.txt"
if [ "$long_s" -gt 0 ]; then
  echo "bench-live: one broadcast x 2 ffmpeg hosts, $long_s s" >&2
  start_broadcast long
  long_pid=$broadcast_pid
  publish "$rtmp_addr" secret-a 440 long-a
  publish "$rtmp_addr" secret-b 660 long-b
  load_note "long-start"
  for _ in $(seq 0 "$long_sample_s" "$long_s"); do
    sample "$work/long-samples.txt" "$long_pid"
    sleep "$long_sample_s"
  done
  load_note "long-end"
fi

python3 - "$work" "$broadcasts" "$duration_s" "$(getconf CLK_TCK)" "$long_s" <<'PY'
import statistics, sys
work, broadcasts, duration_s, hz, long_s = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
med = statistics.median

def series(path):
    """{pid: [(t, ticks, rss_kib), ...]} from sample lines."""
    out = {}
    for line in open(path):
        t, pid, ticks, rss = line.split()
        out.setdefault(pid, []).append((float(t), int(ticks), int(rss)))
    return out

def cpu_percent(rows):
    (t0, c0, _), (t1, c1, _) = rows[0], rows[-1]
    return 100.0 * (c1 - c0) / hz / (t1 - t0)

import glob, os
for path in sorted(glob.glob(f"{work}/glass-*.txt"), key=lambda p: -int(p.rsplit("-", 1)[1][:-4])):
    print(f"== (a) {os.path.basename(path)}")
    print(open(path).read().rstrip())

onair = series(f"{work}/onair-samples.txt")
ffmpeg = series(f"{work}/ffmpeg-samples.txt")
cpu = sorted(cpu_percent(r) for r in onair.values())
ff = sorted(cpu_percent(r) for r in ffmpeg.values())
rss0 = [r[0][2] for r in onair.values()]
rss1 = [r[-1][2] for r in onair.values()]
span = med(r[-1][0] - r[0][0] for r in onair.values())
print(f"== (b) {broadcasts} concurrent broadcasts x 2 RTMP hosts (ffmpeg AAC 128k), measured over {span:.0f} s")
print(f"onair CPU per broadcast: median {med(cpu):.2f} % of one core (min {cpu[0]:.2f}, max {cpu[-1]:.2f})")
print(f"two-host broadcasts one core sustains in real time: {100 / med(cpu):.0f}")
print(f"onair RSS per broadcast: first sample median {med(rss0) / 1024:.1f} MiB, last {med(rss1) / 1024:.1f} MiB "
      f"(max last {max(rss1) / 1024:.1f} MiB)")
print(f"ffmpeg publisher CPU (context, not counted): median {med(ff):.2f} % of one core per host")

long = series(f"{work}/long-samples.txt")
if long_s and long:
    [rows] = long.values()
    t0 = rows[0][0]
    half = [r for r in rows if r[0] - t0 >= (rows[-1][0] - t0) / 2]
    n = len(half)
    mt = sum(r[0] for r in half) / n
    mr = sum(r[2] for r in half) / n
    slope = sum((r[0] - mt) * (r[2] - mr) for r in half) / max(sum((r[0] - mt) ** 2 for r in half), 1e-9)
    print(f"== (c) one broadcast x 2 RTMP hosts, {rows[-1][0] - t0:.0f} s, RSS every {rows[1][0] - t0:.0f} s")
    print(f"RSS first {rows[0][2] / 1024:.1f} MiB, at 60 s {next(r[2] for r in rows if r[0] - t0 >= 55) / 1024:.1f} MiB, "
          f"last {rows[-1][2] / 1024:.1f} MiB, max {max(r[2] for r in rows) / 1024:.1f} MiB; "
          f"second-half slope {slope * 60:.1f} KiB/min")
    print(f"CPU over the run: {cpu_percent(rows):.2f} % of one core")
for line in open(f"{work}/load.txt"):
    what, rest = line.split(" ", 1)
    print(f"load at {what}: {rest.split('load average:')[1].strip()}")
PY
