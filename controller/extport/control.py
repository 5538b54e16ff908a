"""What the external port's commands do: settings through the SettingsStore, actions through the supervisor.

Pieces:
- `ExtController` (protocol): `async handle_message(commands, sender) -> list[reply dict]` (one decoded message,
  applied in `protocol.order_units` order), `async handle(key, value, sender)` for one key, and
  `current_settings(identity) -> dict` (the values in force, as LOG 1 reports them).
- `DeviceControl(store, actions, identities)`: the devices of this Pi. Settings go through `SettingsStore.update`
  (validated, persisted atomically, then in force) and are echoed as `KEY value IDN <device>`; a refused one is
  answered `ERR KEY IDN <device>` and the reason is logged (and kept in the reply's `reason`). Actions call the
  `StationActions` hooks, by an explicit table (protocol.HOOKS), never by a name from the network.
- `RemoteDeviceControl(request)`: the devices of the other Pi, reached through the link's
  `request("ext", {"commands": [[key, raw], ...], "sender": ...}, timeout_s)`; a LinkError (link down or timed out)
  is answered at once with `ERR KEY IDN <device>` for each remote device that should have acted.
- `MasterControl(local, remote)`: routes each key of a message to the Pi(s) whose devices act on it.
- `ext_request_handler(control)`: the slave's handler for the link's "ext" requests.

Integration by the supervisor (S2):

    store = SettingsStore(cfg.storage.state_dir, cfg)            # master and slave alike; use store.config
    # master
    local = DeviceControl(store, actions, protocol.MASTER_IDENTITIES)
    remote = RemoteDeviceControl(link.request)                    # MasterLink.request
    server = ExtServer(store.config, MasterControl(local, remote))
    port = await server.start()                                   # write `port` to the status file
    ...  server.broadcast({"DFC": 1, "IDN": "CM1"})               # when a dark series finishes
    await server.stop()
    # slave
    link.on_request("ext", ext_request_handler(DeviceControl(store, actions, protocol.SLAVE_IDENTITIES)))

`actions` implements `StationActions`. Hooks must return promptly (queue the work: a single capture goes into
the next free slot, a dark series runs in the background and its end is announced with DFC/DFS via
`ExtServer.broadcast`); `exit()`/`restart()` must schedule the shutdown, not await it, so the echo still goes out.
A hook refuses by raising (a PycamError with a readable message): the client gets ERR, the log gets the reason.
Device arguments are identities: "CM1" camera A, "CM2" camera B, "SPC" spectrometer; group arguments are
"cameras" / "spectrometer". Setting changes reach the devices through `store.add_listener` / `store.config`.
`DeviceControl(..., live_values=f)`: `f(identity) -> {"SSA": us, ...}` makes LOG 1 report the values the devices
use right now where they differ from the settings (the shutter auto exposure chose).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from controller.errors import ConfigError, LinkError, PycamError, StorageError
from controller.extport import protocol
from controller.extport.protocol import Command, KeySpec, Refusal, err_reply
from controller.logging import get_logger
from controller.settings import SettingsStore

Reply = dict[str, Any]
Request = Callable[[str, dict, float], Awaitable[dict]]
MANUAL_KEYS = {"SSA": "ATA", "SSB": "ATB", "SSS": "ATS"}  # refused while this auto key is on


class StationActions(Protocol):
    """Hooks the supervisor provides; each returns promptly and raises to refuse."""

    async def capture_single(self, device: str, kind: str) -> str | None: ...
    async def start_continuous(self, kind: str) -> None: ...
    async def stop_continuous(self, kind: str) -> None: ...
    async def dark_series(self, kind: str) -> None: ...
    async def restart_backend(self, kind: str) -> None: ...
    async def exit(self) -> None: ...
    async def restart(self) -> None: ...


class ExtController(Protocol):
    identities: tuple[str, ...]

    async def handle_message(self, commands: list[Command], sender: str) -> list[Reply]: ...
    async def handle(self, key: str, value: Any, sender: str) -> list[Reply]: ...
    def current_settings(self, identity: str) -> dict[str, Any]: ...


def command_from(key: str, value: Any) -> Command | Refusal:
    """A Command from a key and a typed or raw value, checked against the key table."""
    spec = protocol.KEYS.get(key)
    if spec is None:
        return Refusal(protocol.safe_key(key), "unknown key")
    raw = value if isinstance(value, str) else protocol.format_value(value)
    commands, refusals = protocol.parse_message(protocol.Message(((key, raw),)))
    return commands[0] if commands else refusals[0]


class _SingleKey:
    async def handle_message(self, commands: list[Command], sender: str) -> list[Reply]:
        raise NotImplementedError

    async def handle(self, key: str, value: Any, sender: str) -> list[Reply]:
        cmd = command_from(key, value)
        if isinstance(cmd, Refusal):
            return [cmd.reply()]
        return await self.handle_message([cmd], sender)


class DeviceControl(_SingleKey):
    """The devices of this Pi (`identities`), their settings in `store`, their actions in `actions`."""

    def __init__(
        self,
        store: SettingsStore,
        actions: StationActions,
        identities: Iterable[str],
        live_values: Callable[[str], dict[str, Any]] | None = None,
    ):
        self.store = store
        self.actions = actions
        self.identities = tuple(identities)
        # Values the devices use right now where they differ from the settings (the shutter auto exposure chose).
        self._live_values = live_values
        self._settings_lock = asyncio.Lock()
        self._log = get_logger("extport.control", devices=",".join(self.identities))

    def _acting(self, spec: KeySpec) -> list[str]:
        return [d for d in spec.devices if d in self.identities]

    def current_settings(self, identity: str) -> dict[str, Any]:
        config = self.store.config
        values = {key: protocol.read_setting(key, config) for key in protocol.setting_keys_for(identity)}
        if self._live_values is not None:
            values.update({k: v for k, v in self._live_values(identity).items() if k in values})
        return values

    async def handle_message(self, commands: list[Command], sender: str) -> list[Reply]:
        replies: list[Reply] = []
        units = [u for u in protocol.order_units(commands) if self._acting_unit(u) or u.commands[0].spec.kind == "log"]
        settings = [u for u in units if u.commands[0].spec.kind == "setting"]
        if settings:
            replies += await self._apply_settings(settings, sender)
        for unit in units:
            kind = unit.commands[0].spec.kind
            if kind in ("action", "lifecycle"):
                replies += await self._run_action(unit.commands[0], self._acting_unit(unit), sender)
            elif kind == "log":
                replies += self._log_reply(unit.commands[0])
        return replies

    def _acting_unit(self, unit: protocol.Unit) -> list[str]:
        return sorted({d for c in unit.commands for d in self._acting(c.spec)}, key=protocol.DEVICES.index)

    async def _apply_settings(self, units: list[protocol.Unit], sender: str) -> list[Reply]:
        """Every setting unit of one message, checked in order against the config the earlier ones make, then
        persisted ONCE (one settings.json write per message, however many keys it has). A refused unit is
        answered ERR and the others go on."""
        replies: list[Reply] = []
        accepted: list[tuple[list[Command], list[str]]] = []
        async with self._settings_lock:  # read-modify-write of the config in force (WMN alone keeps WMX)
            pending: dict[str, dict[str, Any]] = {}
            config = self.store.config
            for unit in units:
                acting, keys = self._acting_unit(unit), unit.keys
                manual = next((c.key for c in unit.commands if self._manual_refused(c.key, config)), None)
                if manual:
                    auto_key = MANUAL_KEYS[manual]
                    replies += self._refuse(keys, acting, f"{manual} refused while {auto_key} is 1 (send {auto_key} 0)")
                    continue
                trial = {s: dict(f) for s, f in pending.items()}
                for section, fields in protocol.changes_for(unit.commands, config).items():
                    trial.setdefault(section, {}).update(fields)
                try:
                    config = self.store.check(trial)
                except ConfigError as e:
                    replies += self._refuse(keys, acting, str(e))
                    continue
                pending = trial
                accepted.append((unit.commands, acting))
            if accepted:
                try:
                    # fsync of the settings file: off the loop.
                    await asyncio.get_running_loop().run_in_executor(None, self.store.update, pending)
                except (ConfigError, StorageError) as e:
                    keys = [c.key for cmds, _ in accepted for c in cmds]
                    acting = sorted({d for _, a in accepted for d in a}, key=protocol.DEVICES.index)
                    return replies + self._refuse(keys, acting, str(e))
        for cmds, acting in accepted:
            self._log.info("ext_setting", keys=[c.key for c in cmds], values=[c.value for c in cmds], sender=sender)
            replies += [{c.key: c.value, "IDN": d} for c in cmds for d in acting]
        return replies

    @staticmethod
    def _manual_refused(key: str, config: Any) -> bool:
        auto_key = MANUAL_KEYS.get(key)
        return bool(auto_key and protocol.read_setting(auto_key, config))

    def _refuse(self, keys: list[str], acting: list[str], reason: str) -> list[Reply]:
        self._log.warning("ext_refused", keys=keys, devices=acting, reason=reason)
        return [err_reply(k, d, reason) for k in keys for d in acting]

    async def _run_action(self, cmd: Command, acting: list[str], sender: str) -> list[Reply]:
        spec = cmd.spec
        files: dict[str, str] = {}
        try:
            if spec.hook == "capture_single":
                for device in acting:
                    name = await self.actions.capture_single(device, cmd.value)
                    if name:
                        files[device] = name
            elif spec.hook == "start_continuous":
                await self.actions.start_continuous(spec.hook_arg)
            elif spec.hook == "stop_continuous":
                await self.actions.stop_continuous(spec.hook_arg)
            elif spec.hook == "dark_series":
                await self.actions.dark_series(spec.hook_arg)
            elif spec.hook == "restart_backend":
                await self.actions.restart_backend(spec.hook_arg)
            elif spec.hook == "exit":
                await self.actions.exit()
            elif spec.hook == "restart":
                await self.actions.restart()
            else:
                return self._refuse([cmd.key], acting, f"{cmd.key} has no action here")
        except PycamError as e:
            return self._refuse([cmd.key], acting, str(e))
        except Exception as e:  # a hook bug must not take the client (or the port) down with it
            self._log.exception("ext_action_failed", key=cmd.key)
            return self._refuse([cmd.key], acting, f"{cmd.key} failed: {type(e).__name__}: {e}")
        self._log.info("ext_action", key=cmd.key, value=cmd.value, devices=acting, sender=sender)
        # A lifecycle key acts once per Pi: echo it with this Pi's first identity.
        echo_from = acting[:1] if spec.kind == "lifecycle" else acting
        # A single capture's echo names the file actually written (FIL), a name no other capture has.
        return [{cmd.key: cmd.value, **({"FIL": files[d]} if d in files else {}), "IDN": d} for d in echo_from]

    def _log_reply(self, cmd: Command) -> list[Reply]:
        if cmd.value == 0:
            return [{"LOG": 0, "private": True}]
        if cmd.value == 1:
            acting = [d for d in protocol.DEVICES if d in self.identities]
            return [{**self.current_settings(d), "IDN": d, "private": True} for d in acting]
        who = self.identities[0] if self.identities else protocol.MASTER_IDENTITY
        return [err_reply("LOG", who, f"LOG {cmd.value} is not supported (0: ping, 1: settings)")]


class RemoteDeviceControl(_SingleKey):
    """Devices on the other Pi, reached with the link's `request`; ERR at once when the link cannot deliver."""

    def __init__(
        self,
        request: Request,
        identities: Iterable[str] = protocol.SLAVE_IDENTITIES,
        timeout_s: float = 5.0,
    ):
        self._request = request
        self.identities = tuple(identities)
        self.timeout_s = timeout_s
        self._last: dict[str, dict[str, Any]] = {}
        self._log = get_logger("extport.remote", devices=",".join(self.identities))

    def _acting(self, cmd: Command) -> list[str]:
        return [d for d in cmd.spec.devices if d in self.identities]

    def current_settings(self, identity: str) -> dict[str, Any]:
        """The last settings the other Pi reported (LOG 1); empty before the first report."""
        return dict(self._last.get(identity, {}))

    async def handle_message(self, commands: list[Command], sender: str) -> list[Reply]:
        mine = [c for c in commands if self._acting(c)]
        if not mine:
            return []
        body = {"commands": [[c.key, c.raw] for c in mine], "sender": sender}
        try:
            # The link honours timeout_s; the margin only guards against a request that never returns.
            answer = await asyncio.wait_for(self._request("ext", body, self.timeout_s), self.timeout_s + 1.0)
        except (LinkError, TimeoutError) as e:
            reason = f"slave unreachable: {e}"
            self._log.warning("ext_forward_failed", keys=[c.key for c in mine], reason=reason)
            return [err_reply(c.key, d, reason) for c in mine for d in self._acting(c)]
        replies = _checked_replies(answer)
        if replies is None:
            self._log.warning("ext_bad_answer", answer=repr(answer)[:200])
            return [err_reply(c.key, d, "malformed answer from the slave") for c in mine for d in self._acting(c)]
        for reply in replies:  # echoes and LOG 1 report values in force: remember them for current_settings
            if reply.get("IDN") in self.identities and "ERR" not in reply:
                known = self._last.setdefault(reply["IDN"], {})
                known.update({k: v for k, v in reply.items() if k in protocol.SETTING_KEYS})
        return replies


def _checked_replies(answer: Any) -> list[Reply] | None:
    """Replies from the other Pi, if they have the expected shape (scalars keyed by strings)."""
    if not isinstance(answer, dict) or not isinstance(answer.get("replies"), list):
        return None
    out = []
    for reply in answer["replies"]:
        if not isinstance(reply, dict) or not all(
            isinstance(k, str) and isinstance(v, str | int | float | bool) for k, v in reply.items()
        ):
            return None
        out.append(reply)
    return out


class MasterControl(_SingleKey):
    """The master's controller: LOG 0 answered here, every other key routed to the Pi(s) that act on it.

    Both Pis work on one message concurrently; EXT and RST go to the slave first, then to the master.
    """

    def __init__(self, local: DeviceControl, remote: RemoteDeviceControl | None = None):
        self.local = local
        self.remote = remote
        self.identities = local.identities + (remote.identities if remote else ())

    def current_settings(self, identity: str) -> dict[str, Any]:
        if identity in self.local.identities or self.remote is None:
            return self.local.current_settings(identity)
        return self.remote.current_settings(identity)

    async def handle_message(self, commands: list[Command], sender: str) -> list[Reply]:
        pings = [c for c in commands if c.key == "LOG" and c.value == 0]
        rest = [c for c in commands if c not in pings]
        lifecycle = [c for c in rest if c.spec.kind == "lifecycle"]
        normal = [c for c in rest if c.spec.kind != "lifecycle"]
        pong: list[Reply] = [{"LOG": 0, "private": True} for _ in pings[:1]]  # last, like LOG in order_units
        if self.remote is None:
            return await self.local.handle_message(normal + lifecycle, sender) + pong
        local_r, remote_r = await asyncio.gather(
            self.local.handle_message(normal, sender), self.remote.handle_message(normal, sender)
        )
        replies = local_r + remote_r
        if lifecycle:
            replies += await self.remote.handle_message(lifecycle, sender)
            replies += await self.local.handle_message(lifecycle, sender)
        return replies + pong


def ext_request_handler(control: ExtController) -> Callable[[dict], Awaitable[dict]]:
    """The slave's handler for "ext" link requests: parse the forwarded keys again, apply, return the replies."""
    log = get_logger("extport.slave")

    async def handle(body: dict) -> dict:
        items = body.get("commands") if isinstance(body, dict) else None
        sender = body.get("sender") if isinstance(body, dict) else None
        if not isinstance(items, list) or not all(
            isinstance(i, list) and len(i) == 2 and all(isinstance(t, str) for t in i) for i in items
        ):
            log.warning("ext_request_malformed", body=repr(body)[:200])
            return {"replies": [err_reply(protocol.ERR_MESSAGE, control.identities[0], "malformed ext request")]}
        commands, refusals = protocol.parse_message(protocol.Message(tuple((k, v) for k, v in items)))
        sender = sender if sender in protocol.IDENTITIES else protocol.EXTERNAL
        replies = [r.reply() for r in refusals] + await control.handle_message(commands, sender)
        return {"replies": replies}

    return handle
