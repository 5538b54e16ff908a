"""Which peers may talk to the station's TCP ports (external control port and master<->slave link)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable


class AddressFilter:
    """Allows a peer when its address lies in one of the configured networks (IPv4-mapped IPv6 included)."""

    def __init__(self, networks: Iterable[str]):
        self.networks = tuple(ipaddress.ip_network(n, strict=False) for n in networks)

    def allows(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self.networks)

    def allows_peername(self, peername: object) -> bool:
        """`transport.get_extra_info("peername")`: a tuple for TCP; anything else (no address) is refused."""
        return isinstance(peername, tuple) and bool(peername) and self.allows(str(peername[0]))
