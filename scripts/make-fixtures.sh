#!/usr/bin/env bash
# Regenerates the speech fixtures: two distinct host voices, ~9 s each,
# 48 kHz mono FLAC. Deterministic: espeak-ng renders identically run to run
# and `sox -D` disables dither, so the files are byte-identical each time.
# Needs: espeak-ng, sox, flac.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$here/fixtures"
mkdir -p "$out"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

speak() { # name voice speed pitch text
    local name=$1 voice=$2 speed=$3 pitch=$4 text=$5
    espeak-ng -v "$voice" -s "$speed" -p "$pitch" -w "$tmp/$name.wav" "$text"
    # espeak renders at 22.05 kHz; resample to the program rate, 16 bit.
    sox -D "$tmp/$name.wav" -r 48000 -c 1 -b 16 "$tmp/$name-48k.wav" rate -v
    flac --silent --force --best --no-padding -o "$out/$name.flac" "$tmp/$name-48k.wav"
}

speak host-a en-us 175 40 \
    "Good evening and welcome to the show. I am your first host. Tonight we talk about \
live audio on the web, low latency streaming, and why every sample counts."
speak host-b en-gb+f3 165 65 \
    "And I am the second host. Thanks for tuning in. Stay with us for the news, \
the weather, and a little music after the break. We will be right back."

for f in host-a host-b; do
    printf '%s: %s bytes, %s s\n' "$f" "$(stat -c %s "$out/$f.flac")" "$(soxi -D "$out/$f.flac")"
done
