#!/usr/bin/env bash
# Benchmark: package MINUTES (default 60) of two-host audio to Opus 64k + AAC 96k
# CMAF HLS with onair, and the closest ffmpeg job (amix, libopus 64k + aac 96k,
# hls fmp4 2 s segments) in the same run. Reports medians over RUNS (default 3)
# of CPU seconds, x realtime and peak RSS, the onair/ffmpeg CPU ratio, where
# onair's pipeline thread spent its time, and onair's peak RSS for a 1-minute
# run (memory must not grow with length).
#
#   scripts/bench-package.sh [MINUTES] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
build_deps
need_apt ffmpeg ffmpeg
need_apt /usr/bin/time time

minutes=${1:-60}
runs=${2:-3}
work=target/bench-package
mkdir -p "$work"
cargo build --release --quiet
onair=target/release/onair

# Inputs: the two speech fixtures looped to length (FLAC, 48 kHz mono).
for m in "$minutes" 1; do
  for h in a b; do
    f="$work/host-$h-${m}m.flac"
    [ -s "$f" ] || ffmpeg -v error -stream_loop -1 -i "fixtures/host-$h.flac" -t $((m * 60)) -c:a flac "$f"
  done
done

measure() { # measure LABEL CMD...: appends "label user sys wall rss_kb" to $work/runs.txt
  local label=$1; shift
  /usr/bin/time -o "$work/time.txt" -f "%U %S %e %M" "$@" >"$work/out.log" 2>&1 || { cat "$work/out.log" >&2; exit 1; }
  echo "$label $(cat "$work/time.txt")" >>"$work/runs.txt"
}

: >"$work/runs.txt"
: >"$work/stages.txt"
for i in $(seq "$runs"); do
  rm -rf "$work/onair-out"
  measure onair "$onair" package --input "$work/host-a-${minutes}m.flac" --input "$work/host-b-${minutes}m.flac:gain=-3" \
    --store "$work/onair-out" --stream bench
  sed 's/\x1b\[[0-9;]*m//g; s/"//g' "$work/out.log" | grep -o 'decode_s=[^ ]* mix_s=[^ ]* encode_s=[^ ]* package_s=[^ ]*' >>"$work/stages.txt"
  rm -rf "$work/ffmpeg-out"; mkdir -p "$work/ffmpeg-out/opus" "$work/ffmpeg-out/aac"
  measure ffmpeg ffmpeg -v error -i "$work/host-a-${minutes}m.flac" -i "$work/host-b-${minutes}m.flac" \
    -filter_complex "[1:a]volume=-3dB[b];[0:a][b]amix=inputs=2,asplit=2[o][a]" \
    -map "[o]" -c:a libopus -b:a 64k -ar 48000 -ac 2 -f hls -hls_segment_type fmp4 -hls_time 2 -hls_playlist_type vod "$work/ffmpeg-out/opus/index.m3u8" \
    -map "[a]" -c:a aac -b:a 96k -ar 48000 -ac 2 -f hls -hls_segment_type fmp4 -hls_time 2 -hls_playlist_type vod "$work/ffmpeg-out/aac/index.m3u8"
done
rm -rf "$work/onair-out"
measure onair-1min "$onair" package --input "$work/host-a-1m.flac" --input "$work/host-b-1m.flac:gain=-3" \
  --store "$work/onair-out" --stream bench

python3 - "$work/runs.txt" "$work/stages.txt" "$minutes" <<'PY'
import statistics, sys
runs, stages, minutes = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = {}
for line in open(runs):
    label, user, sys_, wall, rss = line.split()
    rows.setdefault(label, []).append((float(user) + float(sys_), float(wall), int(rss)))
program = minutes * 60
med = {k: (statistics.median(c for c, _, _ in v), statistics.median(w for _, w, _ in v),
           statistics.median(r for _, _, r in v)) for k, v in rows.items()}
print(f"program: {minutes} min of two-host audio, {len(rows['onair'])} runs each, medians")
print(f"{'job':<12}{'CPU s':>9}{'x realtime (CPU)':>18}{'wall s':>9}{'peak RSS MiB':>14}")
for k in ("onair", "ffmpeg", "onair-1min"):
    cpu, wall, rss = med[k]
    length = 60 if k == "onair-1min" else program
    print(f"{k:<12}{cpu:>9.2f}{length / cpu:>18.0f}{wall:>9.2f}{rss / 1024:>14.1f}")
print(f"onair/ffmpeg CPU ratio: {med['onair'][0] / med['ffmpeg'][0]:.3f}")
st = [dict(kv.split('=') for kv in l.split()) for l in open(stages) if l.strip()]
if st:
    m = {k: statistics.median(float(s[k]) for s in st) for k in st[0]}
    total = med['onair'][0]
    print("onair pipeline thread (median s): " + ", ".join(f"{k} {v:.2f}" for k, v in m.items()))
    codecs = m['decode_s'] + m['encode_s']
    print(f"everything but the codecs (decode+encode): {total - codecs:.2f} s of {total:.2f} s CPU "
          f"= {100 * (total - codecs) / total:.1f} %; packaging (CMAF+playlists) alone {100 * m['package_s'] / total:.2f} %")
PY
