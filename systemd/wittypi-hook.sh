#!/bin/bash
# Runs the PyCam power handoff for a WittyPi hook: wittypi-hook.sh after-startup|before-shutdown
#
# The WittyPi software runs its hooks as root, with root's environment: never call a bare python3 (root's Python
# lacks the project's libraries). The interpreter is the project's venv: PYCAM_VENV from /etc/default/pycam, or
# the .venv next to this script's install location (systemd/.. = the project folder).
set -u
action="${1:?usage: wittypi-hook.sh after-startup|before-shutdown}"
defaults="${PYCAM_DEFAULTS:-/etc/default/pycam}"
if [ -r "$defaults" ]; then
    # shellcheck disable=SC1090
    . "$defaults"
fi
here="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
home="${PYCAM_HOME:-$(dirname "$here")}"
venv="${PYCAM_VENV:-$home/.venv}"
config="${PYCAM_CONFIG:-/etc/pycam/master.toml}"
python="$venv/bin/python"
if [ ! -x "$python" ]; then
    echo "pycam-hook: no project interpreter at $python (set PYCAM_VENV in $defaults)" >&2
    exit 1
fi
# shellcheck disable=SC2086  # PYCAM_HOOK_ARGS holds extra options, split on purpose
exec "$python" -m controller.power.hook "$action" --config "$config" ${PYCAM_HOOK_ARGS:-}
