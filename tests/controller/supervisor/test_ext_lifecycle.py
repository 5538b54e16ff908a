"""EXT, RST, RSS, TPS and DKS end to end: a client on the master's external port, the real master and slave
supervisors in process (loopback link, sim devices, fast ScaledClock)."""

from __future__ import annotations

import asyncio

import pytest

from controller.acquisition import dark_steps
from controller.storage.names import SpectrumName, parse_name
from controller.supervisor.statusfile import read_status
from tests.controller.supervisor.conftest import run_async, wait_for
from tests.controller.supervisor.test_ext_actions import _caps, _started, _stop


def _spectra(root, kind: str | None = None) -> list[SpectrumName]:
    names = [parse_name(p.name) for p in root.rglob("*.npy")]
    return [n for n in names if isinstance(n, SpectrumName) and (kind is None or n.kind == kind)]


async def _command(master, pairs) -> list[dict]:
    from controller.extport.client import ExtClient

    async with ExtClient(port=master.ext_port, timeout_s=10) as client:
        replies = await client.command(pairs)
    assert replies and not any("ERR" in r for r in replies), replies
    return replies


@pytest.mark.parametrize(("key", "exit_code"), [("EXT", 0), ("RST", 75)])
@run_async
async def test_exit_and_restart_stop_both_supervisors_cleanly(station, key, exit_code):
    pair = station(factor=20.0)
    master, slave, tasks = await _started(pair)
    replies = await _command(master, [(key, 1)])
    assert {r.get("IDN") for r in replies if key in r} == {"CM1", "CM2"}  # both Pis acted on it
    codes = await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert codes == [exit_code, exit_code]  # 75: the unit restarts the service; 0: it stays down
    assert master.station.state == "off" and slave.station.state == "off"
    # Cleanly: the slave's spool reached the master before it went down, and both recorded a clean exit.
    assert len(slave.spool) == 0
    for sup in (master, slave):
        status, _ = read_status(sup.state_dir)
        assert status["exited"] is True and status["state"] == "off"
        assert all(d.state == "closed" for d in sup.devices.values())
    assert not master.fault_counts.get("slot_loop_crashed")
    # The link closing because the slave was stopped on purpose is not a fault on either Pi.
    assert not master.fault_counts.get("link_lost") and not slave.fault_counts.get("link_lost")


@run_async
async def test_rss_restarts_the_spectrometer_backend_only(station):
    pair = station(factor=20.0)
    master, slave, tasks = await _started(pair)
    spectro, cam_b, cam_a = slave.devices["S"].device, slave.devices["B"].device, master.devices["A"].device
    await _command(master, [("RSS", 1)])
    await wait_for(lambda: slave.devices["S"].device is not spectro, 10, "spectrometer reopened")
    n = _caps(slave, "S")
    await wait_for(lambda: _caps(slave, "S") >= n + 2, 20, "spectra after the restart")
    assert spectro._closed  # the old backend was released, not leaked
    assert slave.devices["B"].device is cam_b and master.devices["A"].device is cam_a
    seen = [(new, trigger) for _, _, new, trigger in slave.devices["S"].machine.history]
    assert ("recovering", "recover") in seen and seen[-1] == ("continuous", "reopened")
    assert master.station.state == "acquire" and slave.station.state == "acquire"
    await _stop(master, tasks)


@run_async
async def test_tps_takes_one_spectrum_named_with_the_requested_type(station):
    pair = station(factor=20.0)
    root = pair.master_cfg.storage.data_root
    master, slave, tasks = await _started(pair)
    asked_at = master.master_time()
    await _command(master, [("TPS", "Clear")])
    await wait_for(lambda: _spectra(root, "Clear"), 20, "the Clear spectrum on the master")
    await asyncio.sleep(0.5)  # several slots more: still exactly one
    (clear,) = _spectra(root, "Clear")
    assert clear.time.timestamp() >= int(asked_at)
    assert not [p for p in root.rglob("*_Clear.png")]  # the cameras took nothing
    n = _caps(slave, "S")
    await wait_for(lambda: _caps(slave, "S") > n, 10, "continuous spectra go on")
    assert slave.devices["S"].state == "continuous"
    await _stop(master, tasks)


@run_async
async def test_dks_runs_the_spectrometer_dark_series(station):
    pair = station(factor=20.0)
    root = pair.master_cfg.storage.data_root
    spec = pair.slave_cfg.spectrometer
    steps = sorted(set(dark_steps(tuple(spec.integration_list_ms))) | {spec.integration_ms})
    master, slave, tasks = await _started(pair)
    from controller.extport.client import ExtClient

    async with ExtClient(port=master.ext_port, timeout_s=10) as client:
        replies = await client.command([("DKS", 1)])
        assert replies and not any("ERR" in r for r in replies), replies
        # The slave's spectrometer finished: the client hears "DFS 1 IDN SPC" (relayed by the master).
        done = None
        while done is None:
            reply = await client.receive(30)
            done = reply if "DFS" in reply else None
        assert done == {"DFS": "1", "IDN": "SPC"}
    await wait_for(lambda: len(_spectra(root, "Dark")) == len(steps), 30, "spectrometer darks on the master")
    assert sorted(n.integration_ms for n in _spectra(root, "Dark")) == steps
    assert not [p for p in root.rglob("*_Dark.png")]  # no camera darks
    seen = [new for _, _, new, _ in slave.devices["S"].machine.history]
    assert "dark_series" in seen
    await wait_for(lambda: slave.devices["S"].state == "continuous", 10, "back to continuous")
    n = _caps(slave, "S")
    await wait_for(lambda: _caps(slave, "S") > n, 10, "continuous spectra go on")
    await _stop(master, tasks)
