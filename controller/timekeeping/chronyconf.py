"""chrony.conf for each Pi, from the station config: the installer writes it (systemd/install.sh runs
`python -m controller.timekeeping.chronyconf --role ROLE --config FILE --out PATH`).

Master: serves time on the link network (`allow 169.254.0.0/16`) and, with no upstream, its own clock at local
stratum 10 (`local stratum 10 orphan`). Its clock is set at boot by the WittyPi software from the WittyPi's RTC
(its daemon's rtc_to_system, as today), so there is no `rtcsync`/`rtcfile`: the WittyPi RTC is not a kernel RTC and
the WittyPi software writes it back itself (system_to_rtc). Upstream NTP servers (`clock.ntp_servers`) and a GPS
(`clock.gps_serial`, NMEA read by gpsd, handed to chrony through gpsd's shared memory segment 0 or the socket gpsd
opens at /run/chrony.<device>.sock: `clock.gps_refclock`) are followed when configured; NMEA time without PPS is
good to ~0.1-0.3 s, so the GPS carries a delay and does not outrank a reachable NTP server.

Slave: follows the master only (`server <master> iburst`), steps whenever it is more than 1 s off (`makestep 1 -1`:
the slave has no RTC and boots hours off after every halt), slews below that. It serves nobody and claims no
local stratum: a slave that cannot reach the master stays unsynchronised, and the supervisor does not acquire.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

LINK_NETWORK = "169.254.0.0/16"
GPS_DELAY_S = 0.5  # NMEA sentence latency spread without PPS (gpsd's and chrony's usual figure for NMEA)
GPS_OFFSET_S = 0.0  # measure on site against NTP and set it here if the receiver is known to be late


def _gps_refclock(cfg: Any) -> list[str]:
    if not cfg.clock.gps_serial:
        return []
    device = Path(cfg.clock.gps_serial).name
    if cfg.clock.gps_refclock == "sock":
        line = f"refclock SOCK /run/chrony.{device}.sock refid GPS delay {GPS_DELAY_S}"
    else:
        line = f"refclock SHM 0 refid GPS precision 1e-1 offset {GPS_OFFSET_S} delay {GPS_DELAY_S}"
    return [
        f'# GPS {cfg.clock.gps_serial} through gpsd (apt install gpsd; /etc/default/gpsd: DEVICES="{cfg.clock.gps_serial}"',
        f'# GPSD_OPTIONS="-n"; with a SOCK refclock gpsd writes to /run/chrony.{device}.sock)',
        line,
    ]


def render(cfg: Any, role: str, chrony_dir: str = "/var/lib/chrony", extra: Iterable[str] = ()) -> str:
    """chrony.conf text for `role`. `chrony_dir` holds the drift file; `extra` lines are appended (tests give a
    private pidfile and command socket there)."""
    lines = [
        f"# chrony for PyCam station {cfg.station.name!r}, {role}. Written by systemd/install.sh from the station",
        "# config (controller/timekeeping/chronyconf.py): edit the config and re-run the installer, not this file.",
    ]
    if role == "master":
        lines += [f"server {host} iburst" for host in cfg.clock.ntp_servers]
        lines += _gps_refclock(cfg)
        lines += [
            "# No upstream reachable: serve the clock the WittyPi software set from its RTC at boot.",
            "local stratum 10 orphan",
            f"allow {LINK_NETWORK}",
            "makestep 1.0 3",
        ]
    elif role == "slave":
        lines += [
            f"server {cfg.network.master_host} iburst minpoll 0 maxpoll 4 prefer",
            "# No RTC here: step whenever more than 1 s off (first sync after every boot), slew below.",
            "makestep 1 -1",
        ]
    else:
        raise ValueError(f"role must be master or slave, not {role!r}")
    lines += [f"driftfile {chrony_dir}/chrony.drift", "leapsectz right/UTC", *extra]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from controller.config import load_config
    from controller.errors import ConfigError
    from controller.storage.atomic import atomic_write_text

    parser = argparse.ArgumentParser(prog="chronyconf", description="write this Pi's chrony.conf")
    parser.add_argument("--role", choices=("master", "slave"), required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        sys.stderr.write(f"chronyconf: {e}\n")
        return 1
    atomic_write_text(Path(args.out), render(cfg, args.role))
    return 0


if __name__ == "__main__":
    sys.exit(main())
