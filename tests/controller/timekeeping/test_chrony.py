"""chrony's state read from `chronyc -c` output (recorded from Debian's chrony 4.3), and chrony.conf per role."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from controller.config import config_from_dict
from controller.errors import ProtocolError
from controller.timekeeping.chrony import ChronyReader, parse_sources_csv, parse_tracking_csv
from controller.timekeeping.chronyconf import render

# A slave following the master on the link network, and the master on its local stratum (chrony 4.3, -c -n).
SLAVE_TRACKING = (
    "A9FE0101,169.254.1.1,11,1796144513.426643645,-0.000001476,0.000000059,0.000000523,-0.138,0.002,0.258,"
    "0.000008998,0.000000930,0.5,Normal\n"
)
SLAVE_SOURCES = "^,*,169.254.1.1,10,-1,377,0,0.000000996,0.000001055,0.000004533\n"
MASTER_TRACKING = "7F7F0101,,10,1796144506.810183931,0.0,0.0,0.0,0.000,0.000,0.000,0.0,0.0,0.0,Normal\n"
UNSYNCED_TRACKING = "00000000,,0,0.000000000,0.0,0.0,0.0,0.000,0.000,0.000,1.0,1.0,0.0,Not synchronised\n"
BOOTING_SOURCES = "^,?,169.254.1.1,0,0,0,4294967295,0.0,0.0,0.0\n"


def reader(tracking: str | None, sources: str | None = "") -> ChronyReader:
    calls = []

    def run(cmd):
        calls.append(cmd)
        assert cmd[:3] == ["chronyc", "-h", "/run/test.sock"] and "-c" in cmd
        return tracking if cmd[-1] == "tracking" else sources

    r = ChronyReader(run, host="/run/test.sock")
    r.calls = calls
    return r


def test_slave_following_the_master_is_synchronised_with_the_master_selected():
    state = reader(SLAVE_TRACKING, SLAVE_SOURCES).status()
    assert state["synchronised"] and state["selected"] == "169.254.1.1" and state["reference"] == "169.254.1.1"
    assert state["offset_s"] == pytest.approx(0.000001476)  # chrony: 1.476 us fast -> source - clock is positive
    assert state["stratum"] == 11 and state["leap_status"] == "Normal"
    src = state["sources"][0]
    assert (src["mode"], src["state"], src["reach"]) == ("server", "selected", 0o377)


def test_master_on_local_stratum_is_synchronised_to_local():
    state = reader(MASTER_TRACKING).status()
    assert state["synchronised"] and state["reference"] == "local" and state["selected"] is None


def test_booting_slave_is_not_synchronised_and_its_master_unusable():
    state = reader(UNSYNCED_TRACKING, BOOTING_SOURCES).status()
    assert state["available"] and not state["synchronised"] and state["selected"] is None
    assert state["sources"][0]["state"] == "unusable"


def test_no_chronyd_or_garbage_is_unavailable_not_raised():
    assert reader(None).status()["available"] is False
    garbage = reader("503 No such source\n").status()
    assert garbage["available"] is False and "tracking" in garbage["error"]
    with pytest.raises(ProtocolError):
        parse_sources_csv("^,*,x\n")
    with pytest.raises(ProtocolError):
        parse_tracking_csv(SLAVE_TRACKING.replace("11,", "eleven,", 1))


def test_chrony_conf_for_each_role():
    master = config_from_dict({"station": {"name": "v"}, "clock": {"ntp_servers": ["ntp.example.org"]}})
    text = render(master, "master")
    assert "server ntp.example.org iburst" in text and "local stratum 10 orphan" in text
    assert "allow 169.254.0.0/16" in text and "refclock" not in text and "rtcsync" not in text
    gps = config_from_dict({"clock": {"gps_serial": "/dev/ttyAMA0"}})
    assert "refclock SHM 0 refid GPS" in render(gps, "master")
    sock = config_from_dict({"clock": {"gps_serial": "/dev/ttyAMA0", "gps_refclock": "sock"}})
    assert "refclock SOCK /run/chrony.ttyAMA0.sock refid GPS" in render(sock, "master")
    slave = render(config_from_dict({"network": {"master_host": "169.254.7.7"}}), "slave")
    assert "server 169.254.7.7 iburst" in slave and "makestep 1 -1" in slave
    assert "local" not in slave and "allow" not in slave  # the slave never serves nor claims time
    with pytest.raises(ValueError):
        render(master, "both")


@pytest.mark.skipif(shutil.which("chronyd") is None, reason="chrony not installed (scripts/bootstrap.sh)")
@pytest.mark.parametrize(
    ("role", "clock"),
    [("master", {}), ("master", {"gps_serial": "/dev/ttyAMA0", "ntp_servers": ["ntp.example.org"]}),
     ("master", {"gps_serial": "/dev/ttyACM0", "gps_refclock": "sock"}), ("slave", {})],
)  # fmt: skip
def test_chronyd_itself_accepts_each_rendered_conf(tmp_path, role, clock):
    conf = tmp_path / "chrony.conf"
    conf.write_text(render(config_from_dict({"clock": clock}), role))
    # -p: parse the configuration, print it and exit (no daemon, no clock touched)
    out = subprocess.run(["chronyd", "-p", "-f", str(conf)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert ("local stratum 10 orphan" in out.stdout) == (role == "master")
