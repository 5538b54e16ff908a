"""The slave's hello heard twice (link listener and wake_slave) moves the power machine to `up` once, no error."""

from __future__ import annotations

import asyncio

import structlog

from tests.controller.power.test_handoff import Rig
from tests.states.table_checks import changes


def test_hello_from_listener_during_wake_and_from_wake_slave_is_one_change():
    async def main():
        rig = Rig(boots_after=1)
        handoff = rig.start()
        link_up = rig.link.set_connected

        # As on the master: the link's listener reports the hello as soon as the link comes up, while
        # wake_slave() is still waiting for the same hello.
        def on_up(up: bool) -> None:
            link_up(up)
            asyncio.get_running_loop().create_task(handoff.link_changed(up))

        rig.link.set_connected = on_up
        up = await asyncio.wait_for(handoff.wake_slave(), 60)
        await asyncio.sleep(0.01)  # the listener's task, if it has not run yet
        await handoff.link_changed(True)  # a replayed report changes nothing either
        return up, handoff.state

    with structlog.testing.capture_logs() as logs:
        up, state = asyncio.run(main())
    assert up is True and state == "up"
    power = changes(logs, "power")
    assert power[0] == ("slave_off", "waking", "wake")
    assert [c for c in power if c[2] == "hello"] == [("waking", "up", "hello")], power


def test_hello_and_loss_reported_twice_without_error():
    async def main():
        rig = Rig(boots_after=None)
        handoff = rig.start()
        rig.link.set_connected(True)
        await handoff.link_changed(True)
        await handoff.link_changed(True)
        assert await handoff.wake_slave() is True
        await handoff.link_changed(False)
        await handoff.link_changed(False)
        return handoff.state

    with structlog.testing.capture_logs() as logs:
        state = asyncio.run(main())
    assert state == "unreachable"
    assert changes(logs, "power") == [("slave_off", "up", "hello"), ("up", "unreachable", "link_lost")]
