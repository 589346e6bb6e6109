#!/usr/bin/env bash
# Installs the CDN and load peers (Debian nginx and wrk) when missing.
#
#   source scripts/cdn-deps.sh && cdn_deps     # from another script
#   scripts/cdn-deps.sh                        # standalone
#
# tests/cdn.rs runs nginx as a caching CDN in front of the origin and fails
# loudly when it is missing; scripts/bench-origin.sh also needs wrk. Only our
# own `nginx -c CONF -p DIR -g 'daemon off;'` instances ever run: the packaged
# system service is kept from starting when the package is installed.
set -euo pipefail

# shellcheck source=scripts/deps.sh
source "$(dirname "${BASH_SOURCE[0]}")/deps.sh"

# Debian installs nginx to /usr/sbin, which a non-login PATH may lack.
case ":$PATH:" in *:/usr/sbin:*) ;; *) export PATH="$PATH:/usr/sbin" ;; esac

# Waits (at most 5 minutes) while another apt-get or dpkg holds the lock.
wait_for_apt() {
  local i
  for i in $(seq 300); do
    pgrep -x apt-get >/dev/null || pgrep -x dpkg >/dev/null || return 0
    [ "$i" = 1 ] && echo "cdn-deps: waiting for another apt-get/dpkg to finish" >&2
    sleep 1
  done
  echo "cdn-deps: apt-get/dpkg still busy after 5 minutes" >&2
  return 1
}

cdn_deps() {
  if ! command -v nginx >/dev/null 2>&1; then
    wait_for_apt
    # Debian's nginx package starts the system service on port 80 after
    # installing it; policy-rc.d exit 101 ("action forbidden") prevents that.
    local made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
      chmod +x /usr/sbin/policy-rc.d
      made_policy=1
    fi
    local status=0
    # A subshell, so that a failed install (need_apt exits) still removes it.
    (need_apt nginx nginx) || status=$?
    if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
    [ "$status" = 0 ] || return "$status"
  fi
  if ! command -v wrk >/dev/null 2>&1; then
    wait_for_apt
    need_apt wrk wrk
  fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  cdn_deps
fi
