#!/bin/bash
# Install the PyCam supervisor as a systemd service (and, on the master, the WittyPi hooks and schedule).
#
#   sudo systemd/install.sh --role master --config /etc/pycam/master.toml [--user pi] [--venv DIR]
#                           [--wittypi-dir /home/pi/wittypi] [--root DIR] [--no-systemctl]
#
# --root DIR installs below DIR instead of / (for packaging and tests); --no-systemctl skips daemon-reload/enable.
# Re-running it is safe: units are re-rendered, hook lines are added once.
set -euo pipefail

here="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
home="$(dirname "$here")"
role=""
config=""
user="${SUDO_USER:-pi}"
venv="$home/.venv"
wittypi_dir=""
root=""
systemctl=1

while [ $# -gt 0 ]; do
    case "$1" in
        --role) role="$2"; shift 2 ;;
        --config) config="$2"; shift 2 ;;
        --user) user="$2"; shift 2 ;;
        --venv) venv="$2"; shift 2 ;;
        --wittypi-dir) wittypi_dir="$2"; shift 2 ;;
        --root) root="$2"; shift 2 ;;
        --no-systemctl) systemctl=0; shift ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

case "$role" in
    master|slave) ;;
    *) echo "install.sh: --role master|slave is required" >&2; exit 2 ;;
esac
config="$(readlink -f "${config:-/etc/pycam/$role.toml}")"
venv="$(readlink -f "$venv")"
if [ ! -x "$venv/bin/pycam" ]; then
    echo "install.sh: $venv/bin/pycam not found; create the venv first (scripts/bootstrap.sh)" >&2
    exit 1
fi
if ! "$venv/bin/pycam" config check "$config" >/dev/null; then
    "$venv/bin/pycam" config check "$config" >&2 || true
    exit 1
fi

unit_dir="$root/etc/systemd/system"
mkdir -p "$unit_dir" "$root/etc/default"
unit="pycam-$role.service"
sed -e "s#@PYCAM_HOME@#$home#g" -e "s#@PYCAM_VENV@#$venv#g" -e "s#@PYCAM_CONFIG@#$config#g" \
    -e "s#@PYCAM_USER@#$user#g" "$here/$unit" > "$unit_dir/$unit.tmp"
mv "$unit_dir/$unit.tmp" "$unit_dir/$unit"
echo "installed $unit_dir/$unit"

# One place that tells root's hooks where the project's interpreter and config are.
cat > "$root/etc/default/pycam.tmp" <<DEFAULTS
# Written by systemd/install.sh. Read by the pycam units and the WittyPi hooks.
PYCAM_HOME="$home"
PYCAM_VENV="$venv"
PYCAM_CONFIG="$config"
DEFAULTS
mv "$root/etc/default/pycam.tmp" "$root/etc/default/pycam"
echo "wrote $root/etc/default/pycam"

if [ "$role" = master ]; then
    wittypi_dir="${wittypi_dir:-$(getent passwd "$user" | cut -d: -f6)/wittypi}"
    wittypi_dir="$root${wittypi_dir#"$root"}"
    mkdir -p "$wittypi_dir"
    for hook in afterStartup beforeShutdown; do
        target="$wittypi_dir/$hook.sh"
        line="$here/$hook.sh"
        [ -f "$target" ] || printf '#!/bin/bash\n' > "$target"
        grep -qxF "$line" "$target" || printf '%s\n' "$line" >> "$target"
        chmod +x "$target"
        echo "hooked $target -> $line"
    done
    "$venv/bin/pycam" schedule wittypi --config "$config" --out "$wittypi_dir/schedule.wpi"
    echo "WittyPi: load the schedule with $wittypi_dir/runScript.sh (the master's time zone must be UTC)"
else
    echo "slave: enable the halt line in /boot/firmware/config.txt, e.g. dtoverlay=gpio-shutdown,gpio_pin=<pin>"
fi

if [ "$systemctl" = 1 ]; then
    systemctl daemon-reload
    systemctl enable "$unit"
    echo "enabled $unit; start it with: sudo systemctl start $unit"
fi
