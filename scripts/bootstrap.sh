#!/usr/bin/env bash
# Creates or updates the project's virtual environment (.venv) with the given extras.
# Sourced by scripts/sim and scripts/test; safe to run again (does nothing when up to date).
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
extras=${1:-processing,dev}
venv="$top/.venv"

need_apt=()
python3 -c "import ensurepip, venv" 2>/dev/null || need_apt+=(python3-venv)
[ -e /usr/lib/x86_64-linux-gnu/libusb-1.0.so.0 ] || [ -e /usr/lib/aarch64-linux-gnu/libusb-1.0.so.0 ] \
  || need_apt+=(libusb-1.0-0)
command -v ip >/dev/null || need_apt+=(iproute2)
# chrony: the station's time system (the two-chronyd test runs it in network namespaces, never on this clock);
# systemd-analyze and setpriv: the install rehearsal (tests/e2e/test_install_rehearsal.py).
command -v chronyd >/dev/null || need_apt+=(chrony)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
command -v setpriv >/dev/null || need_apt+=(util-linux)
# Delivery to the observatory (rsync over ssh) and its tests (a real sshd); the status page's browser test.
command -v rsync >/dev/null || need_apt+=(rsync)
command -v ssh >/dev/null || need_apt+=(openssh-client)
[ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
command -v chromium >/dev/null || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing system packages: ${need_apt[*]}" >&2
    # No daemon a package brings may start here (chronyd would discipline this machine's clock): policy-rc.d 101.
    policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      policy=/usr/sbin/policy-rc.d
      printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy"
    fi
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    [ -z "$policy" ] || rm -f "$policy"
  else
    echo "bootstrap: please install these system packages first: ${need_apt[*]}" >&2
  fi
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "bootstrap: creating $venv" >&2
  python3 -m venv "$venv"
fi
stamp="$venv/.installed-$(cat "$top/pyproject.toml" | sha256sum | cut -c1-16)-${extras//,/_}"
if [ ! -e "$stamp" ]; then
  echo "bootstrap: installing the project with extras [$extras] (first run takes a few minutes)" >&2
  "$venv/bin/python" -m pip install -q --upgrade "pip>=23" >&2
  "$venv/bin/python" -m pip install -q -e "$top[$extras]" >&2
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi
