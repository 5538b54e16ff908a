#!/bin/bash
# Install PyCam on one Pi: the supervisor's systemd unit, the station config, chrony, the Ocean Optics udev rules,
# the link key and, on the master, the WittyPi hooks and schedule.
#
#   sudo systemd/install.sh --role master|slave --config FILE [--user U] [--wittypi-dir DIR] [--link-key FILE]
#                           [--venv DIR] [--root DIR] [--no-systemctl]
#
# --user U        the service user (default: pycam, created when missing; a given user must exist)
# --link-key FILE the station's link key to install (the slave gets the master's; the master makes one if none)
# --root DIR      render everything below DIR and touch nothing else (tests, image builds; the user may not exist)
# --no-systemctl  do not reload, enable or restart anything
# Re-running it is safe: files are re-rendered, the key and the control-port token are kept, hook lines added once.
set -euo pipefail

die() {
    echo "install.sh: $*" >&2
    exit 1
}
trap 'die "failed at line $LINENO: $BASH_COMMAND"' ERR

here="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
home="$(dirname "$here")"
role=""
config=""
user=""
venv="$home/.venv"
wittypi_dir=""
link_key=""
root=""
systemctl=1
groups=(gpio i2c plugdev video dialout)

while [ $# -gt 0 ]; do
    case "$1" in
        --role | --config | --user | --venv | --wittypi-dir | --link-key | --root)
            [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value"
            case "$1" in
                --role) role="$2" ;;
                --config) config="$2" ;;
                --user) user="$2" ;;
                --venv) venv="$2" ;;
                --wittypi-dir) wittypi_dir="$2" ;;
                --link-key) link_key="$2" ;;
                --root) root="$(readlink -m "$2")" ;;
            esac
            shift 2 ;;
        --no-systemctl) systemctl=0; shift ;;
        -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

case "$role" in
    master | slave) ;;
    *) die "--role master|slave is required" ;;
esac
[ -n "$config" ] || die "--config FILE is required"
[ -f "$config" ] || die "config file \"$config\" not found"
config="$(readlink -f "$config")"
[ -z "$link_key" ] || [ -f "$link_key" ] || die "link key file \"$link_key\" not found"
[ -n "$root" ] || [ "$(id -u)" = 0 ] || die "run it as root (or render into a folder with --root DIR)"
[ "$root" != / ] || root=""
live=1  # changing this machine (users, groups, ownership, services); not with --root
[ -z "$root" ] || { live=0; systemctl=0; }
venv="$(readlink -m "$venv")"
[ -x "$venv/bin/pycam" ] || die "$venv/bin/pycam not found: create the venv first (scripts/bootstrap.sh or pip install)"
export PYTHONPATH="$home${PYTHONPATH:+:$PYTHONPATH}"
quiet() {  # run a step; on failure its last message line becomes the installer's one error line
    local out
    if ! out="$("$@" 2>&1)"; then
        die "$(printf '%s\n' "$out" | grep -v '^[[:space:]]*$' | tail -n 1 | sed -e 's/^install.sh: //' -e 's/^Error: //')"
    fi
    [ -z "$out" ] || printf '%s\n' "$out"
}
py() { quiet "$venv/bin/python" "$@"; }

if ! check="$("$venv/bin/pycam" config check "$config" 2>&1)"; then
    die "$(printf '%s' "$check" | grep -v '^\s*$' | tail -n 1)"
fi

# ------------------------------------------------------------------------------------------ user and groups
if [ -z "$user" ]; then
    user=pycam
    if [ "$live" = 1 ] && ! id "$user" >/dev/null 2>&1; then
        useradd --system --home-dir /var/lib/pycam --no-create-home --shell /usr/sbin/nologin "$user"
        echo "created system user $user"
    fi
fi
user_exists=0
if id "$user" >/dev/null 2>&1; then
    user_exists=1
elif [ "$live" = 1 ]; then
    die "user \"$user\" does not exist (create it or use --user)"
fi
group="$user"
[ "$user_exists" = 0 ] || group="$(id -gn "$user")"
if [ "$live" = 1 ]; then
    for g in "${groups[@]}"; do
        getent group "$g" >/dev/null || { groupadd --system "$g"; echo "created group $g"; }
        id -nG "$user" | tr ' ' '\n' | grep -qx "$g" || { usermod -aG "$g" "$user"; echo "added $user to $g"; }
    done
fi
as_root=0
[ "$(id -u)" != 0 ] || as_root=1
own() {  # hand files to the service user when it exists here (not a user that only exists on the target)
    [ "$user_exists" = 0 ] || [ "$as_root" = 0 ] || chown "$user:$group" "$@"
}

# ---------------------------------------------------------------------------------------- station config
installed_config="/etc/pycam/$role.toml"
py "$here/render.py" config --role "$role" --config "$config" --out "$root$installed_config"
# Readable by the service user (the master's holds the control-port token), by nobody else.
[ "$as_root" = 0 ] || chown "root:$([ "$user_exists" = 1 ] && echo "$group" || echo root)" "$root$installed_config"
eval "$("$venv/bin/python" "$here/render.py" facts --role "$role" --config "$root$installed_config")"

# --------------------------------------------------------------------------------------------- the unit
unit="pycam-$role.service"
unit_dir="$root/etc/systemd/system"
mkdir -p "$unit_dir" "$root/etc/default"
py "$here/render.py" unit --role "$role" --config "$root$installed_config" --template "$here/$unit" \
    --sandbox "$here/sandbox.conf" --out "$unit_dir/$unit" --set "PYCAM_HOME=$home" --set "PYCAM_VENV=$venv" \
    --set "PYCAM_CONFIG=$installed_config" --set "PYCAM_USER=$user" --set "PYCAM_GROUP=$group"
echo "installed $unit_dir/$unit"

# One place that tells root's hooks where the project's interpreter and config are.
cat > "$root/etc/default/pycam.tmp" <<DEFAULTS
# Written by systemd/install.sh. Read by the pycam units and the WittyPi hooks.
PYCAM_HOME="$home"
PYCAM_VENV="$venv"
PYCAM_CONFIG="$installed_config"
DEFAULTS
mv "$root/etc/default/pycam.tmp" "$root/etc/default/pycam"

# --------------------------------------------------------------------------- state directory and link key
# systemd creates StateDirectory= itself; made here too so the key can be put in before the first start.
state_dir="$root/var/lib/pycam"
install -d -m 0750 "$state_dir"
own "$state_dir"
key="$root$PYCAM_KEY_FILE"
mkdir -p "$(dirname "$key")"
if [ -n "$link_key" ]; then
    [ "$(stat -c %s "$link_key")" -ge 32 ] || die "link key file \"$link_key\" is shorter than 32 bytes"
    install -m 0600 "$link_key" "$key"
    echo "installed link key $key"
elif [ ! -s "$key" ] && [ "$role" = master ]; then
    (umask 077 && head -c 32 /dev/urandom > "$key.tmp" && mv "$key.tmp" "$key")
    echo "created link key $key: copy it to the slave (install.sh --role slave --link-key FILE)"
elif [ ! -s "$key" ]; then
    echo "slave: no link key yet: re-run with --link-key FILE (the master's $PYCAM_KEY_FILE)" >&2
fi
if [ -f "$key" ]; then
    chmod 0600 "$key"
    own "$key"
fi

# The data folder on the master's disk (the slave's spool, when it is not in the state directory) is the user's.
data_dir="$PYCAM_SPOOL_DIR"
[ "$role" = slave ] || data_dir="$PYCAM_DATA_ROOT"
if [ "$live" = 1 ] && [ -n "$PYCAM_MOUNT_POINT" ] && ! mountpoint -q "$PYCAM_MOUNT_POINT" 2>/dev/null; then
    echo "$role: $PYCAM_MOUNT_POINT (storage.mount_point) is not mounted now: mount the data disk before starting $unit" >&2
elif [ "$live" = 1 ]; then
    install -d -m 0750 "$data_dir"
    own "$data_dir"
fi

# ------------------------------------------------------------------------------------------ udev rules
rules="$root/etc/udev/rules.d/60-pycam-oceanoptics.rules"
install -D -m 0644 "$here/60-pycam-oceanoptics.rules" "$rules"
echo "installed $rules"
if [ "$live" = 1 ] && command -v udevadm >/dev/null; then
    udevadm control --reload-rules || echo "udevadm: rules not reloaded (re-plug the spectrometer)" >&2
fi

# ---------------------------------------------------------------------------------------------- chrony
chrony_conf="$root/etc/chrony/chrony.conf"
mkdir -p "$(dirname "$chrony_conf")"
if [ -f "$chrony_conf" ] && ! grep -q "^# chrony for PyCam station" "$chrony_conf" && [ ! -e "$chrony_conf.pycam-orig" ]; then
    cp -p "$chrony_conf" "$chrony_conf.pycam-orig"
fi
py -m controller.timekeeping.chronyconf --role "$role" --config "$root$installed_config" --out "$chrony_conf"
echo "installed $chrony_conf ($role)"
if [ "$role" = master ]; then
    # The WittyPi software sets the clock from its RTC at boot: chrony starts after it and serves that time.
    install -D -m 0644 /dev/stdin "$root/etc/systemd/system/chrony.service.d/pycam.conf" <<'DROPIN'
# Written by systemd/install.sh: serve the time the WittyPi software set from its RTC, not the time before it.
[Unit]
After=wittypi.service
DROPIN
fi
if [ "$live" = 1 ] && ! command -v chronyd >/dev/null; then
    die "chrony is not installed: apt-get install -y chrony, then run this again"
fi

# -------------------------------------------------------------------------------------- WittyPi (master)
if [ "$role" = master ]; then
    if [ -z "$wittypi_dir" ]; then
        found=("$root"/home/*/wittypi)
        [ -d "${found[0]}" ] || die "WittyPi software not found under /home/*/wittypi: give --wittypi-dir DIR"
        wittypi_dir="${found[0]#"$root"}"
    fi
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
    quiet "$venv/bin/pycam" schedule wittypi --config "$root$installed_config" --out "$wittypi_dir/schedule.wpi"
    echo "WittyPi: load the schedule with $wittypi_dir/runScript.sh (the master's time zone must be UTC)"
else
    echo "slave: enable the halt line in /boot/firmware/config.txt, e.g. dtoverlay=gpio-shutdown,gpio_pin=<pin>"
fi

if [ "$systemctl" = 1 ]; then
    systemctl daemon-reload
    systemctl enable chrony.service
    systemctl reload-or-restart chrony.service  # chrony has no reload: this restarts it with the new config
    systemctl enable "$unit"
    echo "enabled $unit; start it with: sudo systemctl start $unit"
fi
