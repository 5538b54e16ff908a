"""Only the station's own networks may dial the master's link port."""

from __future__ import annotations

import structlog

from controller.netaccess import AddressFilter
from tests.controller.link.conftest import LinkPair, link_config, run


def test_address_filter_networks_and_mapped_ipv6():
    allowed = AddressFilter(["127.0.0.0/8", "169.254.0.0/16"])
    assert allowed.allows("169.254.1.2")
    assert allowed.allows("::ffff:127.0.0.1")
    assert not allowed.allows("10.0.0.1")
    assert not allowed.allows("not-an-address")
    assert not allowed.allows_peername(None)


def test_link_refuses_a_slave_outside_the_allowed_networks(tmp_path, port):
    async def scenario():
        master_cfg = link_config(port, link_allowed_networks=["10.0.0.0/8"])
        pair = LinkPair(tmp_path, master_cfg, slave_cfg=link_config(port))
        with structlog.testing.capture_logs() as logs:
            await pair.start_master()
            slave = await pair.start_slave()
            connected = await slave.wait_connected(0.6)
            await pair.stop()
        return connected, logs

    connected, logs = run(scenario())
    assert connected is False
    assert any(e["event"] == "link_peer_refused" for e in logs)


def test_link_accepts_a_slave_inside_the_allowed_networks(tmp_path, port):
    async def scenario():
        pair = LinkPair(tmp_path, link_config(port, link_allowed_networks=["127.0.0.0/8"]))
        await pair.start_master()
        slave = await pair.start_slave()
        connected = await slave.wait_connected(30)
        await pair.stop()
        return connected

    assert run(scenario()) is True
