"""FRS drives the spectrometer's rate (issue 11, finding 8: it was accepted, persisted and echoed but the spectra
followed the camera slots): the spectrometer captures on its own slots every 1/FRS s, named on master time; a
rate whose spectra could not each have their own second is refused with ERR."""

from __future__ import annotations

import asyncio

from controller.acquisition import DeviceRunner, SlotLoop, SlotPlan
from controller.config import config_from_dict
from controller.extport.protocol import slot_period_s
from controller.hardware import factory
from controller.storage.names import parse_name
from controller.timekeeping.clock import ManualClock
from tests.controller.extport.harness import run
from tests.controller.extport.test_server import _client, _started
from tests.controller.test_acquisition_naming import START, Store, _pump

CFG = config_from_dict(
    {
        "camera": {"backend": "sim", "width": 48, "height": 36, "saturation_rows": 6, "auto_exposure": False},
        "spectrometer": {"backend": "sim", "integration_ms": 10, "auto_integration": False, "frame_rate_hz": 0.5},
        "logging": {"format": "console", "level": "info"},
    }
)


def test_frs_drives_the_spectrometer_on_its_own_slots():
    clock = ManualClock(START + 0.5)

    async def scenario():
        cam_sink, spc_sink = Store(), Store()
        cam = DeviceRunner("A", lambda: factory.open_camera(CFG, "A", clock), lambda: CFG, clock, cam_sink)
        spc = DeviceRunner("S", lambda: factory.open_spectrometer(CFG, clock), lambda: CFG, clock, spc_sink)
        assert await cam.open() and await spc.open()
        plan = SlotPlan(4.0, START)  # the cameras: FRC 0.25 Hz

        def period(key: str) -> float | None:
            return slot_period_s(CFG.spectrometer.frame_rate_hz) if key == "S" else None

        loop = SlotLoop(clock, {"A": cam, "S": spc}, plan=lambda: plan, period=period)
        task = asyncio.ensure_future(loop.run())
        try:
            await _pump(clock, lambda: len(cam_sink.names) >= 4, loop)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await cam.close()
            await spc.close()
        return cam_sink.names, spc_sink.names

    cams, spectra = asyncio.run(scenario())

    def times(names):
        return [parse_name(n).time.timestamp() - START for n in names]

    assert all(t % 4.0 == 0 for t in times(cams))
    spc_times = times(spectra)
    assert all(t % 2.0 == 0 for t in spc_times)  # every 1/FRS = 2 s, on master time
    assert all(b - a == 2.0 for a, b in zip(spc_times, spc_times[1:], strict=False))
    assert len(spectra) >= 2 * len(cams) - 2


def test_frs_above_one_per_second_is_refused_with_err_and_a_valid_one_is_in_force(tmp_path):
    async def body():
        st = await _started(tmp_path)
        async with _client(st) as c:
            assert await c.command([("FRS", 2.0)]) == [{"ERR": "FRS", "IDN": "SPC"}]
            assert await c.command([("FRS", 0.5)]) == [{"FRS": "0.50", "IDN": "SPC"}]
        assert st.slave_store.config.spectrometer.frame_rate_hz == 0.5
        await st.server.stop()

    run(body())
