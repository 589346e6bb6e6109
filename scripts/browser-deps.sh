#!/usr/bin/env bash
# Installs what the browser tests (tests/browser.rs) need, only when missing:
# Debian's `chromium`, and under tests/browser/node_modules (ignored by git) the
# npm packages `playwright-core` (drives Chromium) and `hls.js@1` (the player the
# listener page loads when the browser has no native HLS; the origin serves this
# copy in tests, nothing is fetched from the internet at test time), and Debian's
# `coturn` (the TURN server the relay-only host test starts on loopback; its
# package's own service is left stopped).
# Fails loudly when something cannot be installed. Usage: scripts/browser-deps.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
  echo "browser-deps: installing chromium" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  command -v chromium >/dev/null 2>&1 || { echo "browser-deps: FAILED: chromium missing after install" >&2; exit 1; }
fi

if ! command -v turnserver >/dev/null 2>&1; then
  echo "browser-deps: installing coturn" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends coturn >/dev/null
  command -v turnserver >/dev/null 2>&1 || { echo "browser-deps: FAILED: turnserver missing after install" >&2; exit 1; }
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "browser-deps: installing nodejs and npm" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi

node_dir=tests/browser
if [ ! -f "$node_dir/node_modules/playwright-core/package.json" ] ||
   [ ! -f "$node_dir/node_modules/hls.js/dist/hls.min.js" ]; then
  echo "browser-deps: npm install playwright-core hls.js@1 into $node_dir/node_modules" >&2
  # --no-save: no package.json or lock file is written into the repository.
  npm install --prefix "$node_dir" --no-save --no-audit --no-fund --loglevel=error \
    playwright-core 'hls.js@1'
  [ -f "$node_dir/node_modules/hls.js/dist/hls.min.js" ] ||
    { echo "browser-deps: FAILED: hls.js missing after npm install" >&2; exit 1; }
fi
echo "browser-deps: chromium $(chromium --version 2>/dev/null | awk '{print $2}'), node $(node --version)" >&2
