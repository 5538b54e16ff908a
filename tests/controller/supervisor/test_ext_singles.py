"""Singles through the real supervisors (issue 11, finding 1): TPA Plume during continuous capture is named with a
free second and echoed with that name; the slot images stay; a repeated action acts once."""

from __future__ import annotations

from controller.extport.client import ExtClient
from controller.storage.names import parse_name
from tests.controller.supervisor.conftest import run_async, wait_for
from tests.controller.supervisor.test_ext_actions import _started, _stop


@run_async
async def test_single_plume_during_continuous_capture_keeps_the_slot_image_and_echoes_its_file(station):
    pair = station(factor=20.0)
    master, slave, tasks = await _started(pair)
    root = pair.master_cfg.storage.data_root
    try:
        async with ExtClient(port=master.ext_port, timeout_s=10) as client:
            replies = await client.command([("TPA", "Plume"), ("TPB", "Plume")])
            files = {r["IDN"]: r["FIL"] for r in replies if "FIL" in r}
            assert set(files) == {"CM1", "CM2"}, replies
            # One message with the same action key many times acts once.
            again = await client.command([("TPA", "Plume")] * 50)
            assert len([r for r in again if "FIL" in r]) == 1, again
            # A second dark series while one runs is refused, not queued.
            darks = await client.command([("DKC", 1)])
            assert not any("ERR" in r for r in darks), darks
            assert {"ERR": "DKC", "IDN": "CM1"} in await client.command([("DKC", 1)])
        await wait_for(lambda: all(list(root.rglob(f)) for f in files.values()), 20, "single files on the master")
    finally:
        await _stop(master, tasks)
    period = pair.master_cfg.schedule.period_s
    for name in files.values():
        t = parse_name(name).time.timestamp()
        assert round(t) % period != 0  # not a slot's second: no slot image was replaced
    names = [p.name for p in root.rglob("*.png")]
    assert len(names) == len(set(names))
    journal = [r["name"] for r in master.journal.read(master.journal.path)]
    assert len(journal) == len(set(journal))  # no name captured twice on the master
