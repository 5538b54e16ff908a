"""The master's external control port (controller/extport) as a service: the original PyCam protocol for the
station's clients, local settings and actions on this Pi, the slave's over the link; bad input on the port becomes
a rate-limited fault. The station acquires without its port rather than not at all."""

from __future__ import annotations

import time
from typing import Any

from controller.extport.server import ExtServer
from controller.link.master import MasterLink
from controller.settings import SettingsStore
from controller.supervisor.actions import ANNOUNCE_KEYS, SupervisorActions
from controller.supervisor.services import ServiceContext

EXT_FAULT_EVENTS = ("ext_bad_message", "ext_refused", "ext_client_refused")


class ExtService:
    name = "ext_port"

    def __init__(self, ctx: ServiceContext, settings: SettingsStore, actions: SupervisorActions, link: MasterLink):
        self.ctx = ctx
        self.settings = settings
        self.actions = actions
        self.link = link
        self.server: ExtServer | None = None  # once started
        self.port: int | None = None
        self._last_fault = 0.0

    async def start(self) -> None:
        from controller.extport import protocol
        from controller.extport.control import DeviceControl, MasterControl, RemoteDeviceControl

        local = DeviceControl(self.settings, self.actions, protocol.MASTER_IDENTITIES)
        remote = RemoteDeviceControl(self.link.request)
        self.server = ExtServer(self.settings.config, MasterControl(local, remote), on_bad_input=self._bad_input)
        try:
            self.port = await self.server.start()
        except OSError as e:
            # The station acquires without its control port rather than not at all; status says so.
            self.ctx.log.error("ext_port_unavailable", error=str(e))
            self.ctx.note_fault("ext_port_unavailable", {"error": str(e)})
            self.server = None
        self.link.on_request("announce", self.announce_request)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()

    def status(self) -> dict[str, Any]:
        return {"port": self.port, "up": self.server is not None}

    def _bad_input(self, event: str, kw: dict) -> None:
        if event not in EXT_FAULT_EVENTS:
            return
        now = time.monotonic()
        if now - self._last_fault >= 1.0:  # a stream of garbage is one fault, not hundreds
            self._last_fault = now
            info = {k: v for k, v in kw.items() if isinstance(v, str | int | float)}
            self.ctx.note_fault("ext_bad_input", {"ext_event": event, **info})

    async def announce_request(self, body: dict) -> dict:
        """The slave's "dark series finished" (DFC/DFS) for the external clients; nothing else is relayed."""
        keys = set(body) - {"IDN"}
        if not keys or not keys <= ANNOUNCE_KEYS or body.get("IDN") not in ("CM2", "SPC"):
            return {"ok": False, "error": f"not an announcement: {sorted(body)}"}
        if self.server is not None:
            self.server.broadcast({k: body[k] for k in (*sorted(keys), "IDN")})
        return {"ok": True}
