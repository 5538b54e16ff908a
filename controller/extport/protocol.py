"""The external control protocol of the original PyCam (spec/ext-protocol.md): keys, decoding, encoding, ordering.

A message is `KEY value KEY value ... END\\r\\n` (UTF-8). Everything here is explicit tables — a string from the
network selects an entry of `KEYS` or is refused; it never names an attribute, a function or a path.

- `MessageDecoder(max_bytes).feed(data)` turns a byte stream into `Message`s and `FrameError`s; it never raises.
- `parse_message(message)` checks every key and value against `KEYS` -> (`Command`s, `Refusal`s).
- `order_units(commands)` gives the order in which one message is applied (auto exposure off before a shutter
  speed, min/max pairs as one unit, LOG after settings, EXT/RST last).
- `encode_reply(reply)` writes a reply dict (`{"SSA": 5000, "IDN": "CM1"}`) as one message.

Reply dicts use the protocol keys in upper case; lower-case entries (e.g. `"reason"`) are for logs and the CLI
and are never sent on the wire.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from controller.storage.names import check_type

CAMERA_A = "CM1"
CAMERA_B = "CM2"
SPECTROMETER = "SPC"
EXTERNAL = "EXN"
IDENTITIES = (CAMERA_A, CAMERA_B, SPECTROMETER, EXTERNAL)
DEVICES = (CAMERA_A, CAMERA_B, SPECTROMETER)
CAMERAS = (CAMERA_A, CAMERA_B)
# The master hosts camera A; replies about the connection itself carry its identity.
MASTER_IDENTITY = CAMERA_A
MASTER_IDENTITIES = (CAMERA_A,)
SLAVE_IDENTITIES = (CAMERA_B, SPECTROMETER)

END = "END"
TERMINATOR = b"\r\n"
# ERR values for problems that are not about one key (the connection or the message as a whole).
ERR_MESSAGE = "MSG"  # over-long, not UTF-8, no END
ERR_AUTH = "AUTH"  # missing or wrong AUTH token
ERR_NETWORK = "NET"  # client address not in network.allowed_networks
ERR_MAX_CLIENTS = "MAX"  # network.max_clients reached
ERR_UNKNOWN = "UNK"  # an unknown key that is not even a printable token

Kind = Literal["meta", "setting", "action", "lifecycle", "log", "reply"]
ValueType = Literal["int", "float", "bool", "str"]


@dataclass(frozen=True)
class Target:
    """A config field a setting key writes: `section.field`, or one element of a tuple field."""

    section: str
    field: str
    index: int | None = None


@dataclass(frozen=True)
class KeySpec:
    key: str
    type: ValueType
    lo: float | None
    hi: float | None
    meaning: str
    devices: tuple[str, ...]
    kind: Kind
    targets: tuple[Target, ...] = ()
    lo_open: bool = False  # the range excludes `lo` (rates: 0 is refused)
    exclude: tuple[float, ...] = ()  # values refused inside the range (RWC 0)
    choices: tuple[str, ...] = ()  # allowed str values (IDN)
    pair: str = ""  # keys with the same pair are validated together (min < max)
    hook: str = ""  # StationActions hook of an action key
    hook_arg: str = ""  # its group argument ("cameras" / "spectrometer")

    def range_text(self) -> str:
        if self.type == "bool":
            return "1" if self.lo == 1 else "0 or 1"
        if self.type == "str":
            return ", ".join(self.choices) if self.choices else "one token"
        lo = f"({self.lo}" if self.lo_open else f"[{self.lo}"
        extra = "".join(f", not {x:g}" for x in self.exclude)
        return f"{lo}, {self.hi}]{extra}"


def _cam(key: str, tp: ValueType, lo, hi, meaning: str, fld: str, devices=CAMERAS, **kw) -> KeySpec:
    return KeySpec(key, tp, lo, hi, meaning, devices, "setting", (Target("camera", fld),), **kw)


def _spc(key: str, tp: ValueType, lo, hi, meaning: str, fld: str, index: int | None = None, **kw) -> KeySpec:
    target = (Target("spectrometer", fld, index),)
    return KeySpec(key, tp, lo, hi, meaning, (SPECTROMETER,), "setting", target, **kw)


def _act(key: str, meaning: str, devices: tuple[str, ...], hook: str, arg: str = "") -> KeySpec:
    return KeySpec(key, "bool", 1, 1, meaning, devices, "action", hook=hook, hook_arg=arg)


def _shot(key: str, meaning: str, device: str) -> KeySpec:
    return KeySpec(key, "str", None, None, meaning, (device,), "action", hook="capture_single")


_SPECS = (
    KeySpec("IDN", "str", None, None, "sender identity", (), "meta", choices=IDENTITIES),
    _cam("SSA", "int", 1, 6_000_001, "shutter speed of camera A (µs)", "shutter_us", (CAMERA_A,)),
    _cam("SSB", "int", 1, 6_000_001, "shutter speed of camera B (µs)", "shutter_us", (CAMERA_B,)),
    _spc("SSS", "int", 1, 10_001, "spectrometer integration time (ms)", "integration_ms"),
    # FRC also sets schedule.period_s (see changes_for): the cameras capture on the slot schedule.
    _cam("FRC", "float", 0.0, 1.0, "camera acquisition rate (Hz)", "frame_rate_hz", lo_open=True),
    # FRS drives the spectrometer's own slots (SlotLoop `period`); above 1 Hz the config check refuses it (ERR):
    # every spectrum's name needs its own second.
    _spc("FRS", "float", 0.0, 10.0, "spectrometer acquisition rate (Hz)", "frame_rate_hz", lo_open=True),
    _cam("ATA", "bool", 0, 1, "auto shutter, camera A", "auto_exposure", (CAMERA_A,)),
    _cam("ATB", "bool", 0, 1, "auto shutter, camera B", "auto_exposure", (CAMERA_B,)),
    _spc("ATS", "bool", 0, 1, "auto integration, spectrometer", "auto_integration"),
    _spc("CAD", "int", 1, 100, "co-adds per saved spectrum", "coadd"),
    _cam("SMN", "float", 0.0, 0.9, "camera min saturation (auto exposure)", "min_saturation", pair="cam_sat"),
    _cam("SMX", "float", 0.1, 1.0, "camera max saturation (auto exposure)", "max_saturation", pair="cam_sat"),
    _cam("PXC", "int", 1, 10_000, "camera: brightest pixels averaged for saturation", "saturation_pixels"),
    _cam("RWC", "int", -486, 486, "camera rows examined (+ from top, - from bottom)", "saturation_rows", exclude=(0,)),
    _spc("PXS", "int", 1, 2048, "spectrometer: brightest pixels averaged for saturation", "saturation_pixels"),
    _spc("WMN", "int", 300, 400, "spectrometer saturation window start (nm)", "saturation_window_nm", 0, pair="win"),
    _spc("WMX", "int", 300, 400, "spectrometer saturation window end (nm)", "saturation_window_nm", 1, pair="win"),
    _spc("SNS", "float", 0.0, 0.9, "spectrometer min saturation", "min_saturation", pair="spc_sat"),
    _spc("SXS", "float", 0.1, 1.0, "spectrometer max saturation", "max_saturation", pair="spc_sat"),
    _shot("TPA", "take one image A now (value: Plume, Dark, Clear, Test, <N>ppmm)", CAMERA_A),
    _shot("TPB", "take one image B now (value: Plume, Dark, Clear, Test, <N>ppmm)", CAMERA_B),
    _shot("TPS", "take one spectrum now (value: Plume, Dark, Clear, Test, <N>ppmm)", SPECTROMETER),
    _act("DKC", "run the dark series for the cameras", CAMERAS, "dark_series", "cameras"),
    _act("DKS", "run the dark series for the spectrometer", (SPECTROMETER,), "dark_series", "spectrometer"),
    KeySpec("DFC", "bool", 1, 1, "reply: camera dark series finished", CAMERAS, "reply"),
    KeySpec("DFS", "bool", 1, 1, "reply: spectrometer dark series finished", (SPECTROMETER,), "reply"),
    _act("STC", "start continuous capture, cameras", CAMERAS, "start_continuous", "cameras"),
    _act("SPC", "stop continuous capture, cameras", CAMERAS, "stop_continuous", "cameras"),
    _act("STS", "start continuous capture, spectrometer", (SPECTROMETER,), "start_continuous", "spectrometer"),
    _act("SPS", "stop continuous capture, spectrometer", (SPECTROMETER,), "stop_continuous", "spectrometer"),
    _act("RSC", "restart the camera backends", CAMERAS, "restart_backend", "cameras"),
    _act("RSS", "restart the spectrometer backend", (SPECTROMETER,), "restart_backend", "spectrometer"),
    # EXT/RST act once per Pi: CM1 stands for the master, CM2 for the slave.
    KeySpec("EXT", "bool", 1, 1, "stop acquisition and shut the supervisors down", CAMERAS, "lifecycle", hook="exit"),
    KeySpec("RST", "bool", 1, 1, "restart the supervisors", CAMERAS, "lifecycle", hook="restart"),
    KeySpec("LOG", "int", 0, 5, "0: ping; 1: every device replies with its settings", DEVICES, "log"),
    KeySpec("ERR", "str", None, None, "error reply", (), "reply"),
    # Added here: the echo of TPA/TPB/TPS names the file actually written (a second no other capture uses).
    KeySpec("FIL", "str", None, None, "reply: the file a single capture wrote", DEVICES, "reply"),
)
KEYS: dict[str, KeySpec] = {s.key: s for s in _SPECS}
# Keys this station adds to spec/ext-protocol.md (replies only; an original client may ignore them).
EXTENSION_KEYS = frozenset({"FIL"})
SETTING_KEYS: tuple[str, ...] = tuple(s.key for s in _SPECS if s.kind == "setting")
# The StationActions hooks action keys may call (checked by control.py against this closed set).
HOOKS = ("capture_single", "start_continuous", "stop_continuous", "dark_series", "restart_backend", "exit", "restart")

_INT = re.compile(r"[+-]?[0-9]{1,12}")
_FLOAT = re.compile(r"[+-]?(?:[0-9]{1,12}(?:\.[0-9]{0,12})?|\.[0-9]{1,12})")
_TOKEN = re.compile(r"[A-Za-z0-9_.+-]{1,32}")
MAX_STR_VALUE = 32


def setting_keys_for(identity: str) -> tuple[str, ...]:
    """The setting keys one device answers in LOG 1."""
    return tuple(k for k in SETTING_KEYS if identity in KEYS[k].devices)


SETTING_KEYS_BY_DEVICE = {d: setting_keys_for(d) for d in DEVICES}


# ------------------------------------------------------------------------------------------------------ framing


@dataclass(frozen=True)
class Message:
    """One decoded message: (key, raw value) tokens in the order sent."""

    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class FrameError:
    """A message that could not be decoded at all; answered with `ERR MSG`."""

    reason: str


class MessageDecoder:
    """Splits a byte stream into messages. Never raises: bad input becomes a `FrameError` and decoding goes on."""

    def __init__(self, max_bytes: int = 4096):
        self.max_bytes = max_bytes
        self._buf = bytearray()
        self._skipping = False  # inside an over-long message: drop bytes until its end

    def feed(self, data: bytes) -> list[Message | FrameError]:
        out: list[Message | FrameError] = []
        self._buf += data
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > self.max_bytes:
                    if not self._skipping:
                        out.append(FrameError(f"message longer than {self.max_bytes} bytes"))
                    self._skipping = True
                    self._buf.clear()
                return out
            line = bytes(self._buf[:end])
            del self._buf[: end + 1]
            if self._skipping:
                self._skipping = False
                continue
            if len(line) > self.max_bytes:
                out.append(FrameError(f"message longer than {self.max_bytes} bytes"))
                continue
            item = decode_line(line)
            if item is not None:
                out.append(item)

    @property
    def pending_bytes(self) -> int:
        return len(self._buf)


def decode_line(line: bytes) -> Message | FrameError | None:
    """One line without its `\\n` -> Message or FrameError; None for an empty line (keep-alive newlines)."""
    if line.endswith(b"\r"):
        line = line[:-1]
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return FrameError("not UTF-8 text")
    tokens = text.split()
    if not tokens:
        return None
    if tokens[-1] != END:
        return FrameError("message does not end with END")
    body = tokens[:-1]
    pairs = [(body[i], body[i + 1] if i + 1 < len(body) else "") for i in range(0, len(body), 2)]
    return Message(tuple(pairs))


# ------------------------------------------------------------------------------------------------------ values


@dataclass(frozen=True)
class Command:
    key: str
    value: Any
    raw: str

    @property
    def spec(self) -> KeySpec:
        return KEYS[self.key]


@dataclass(frozen=True)
class Refusal:
    """A key refused before it reached a device: answered `ERR <key> IDN <who>` with `reason` in the log."""

    key: str
    reason: str
    who: str = MASTER_IDENTITY

    def reply(self) -> dict:
        return err_reply(self.key, self.who, self.reason)


def err_reply(key: str, who: str, reason: str) -> dict:
    return {"ERR": key, "IDN": who, "reason": reason}


def safe_key(token: str) -> str:
    """The key to name in an ERR reply: the token itself when it is a short printable word."""
    return token if _TOKEN.fullmatch(token) and token.isascii() else ERR_UNKNOWN


def parse_value(spec: KeySpec, raw: str) -> Any:
    """The typed value of `raw` for `spec`, or ValueError saying what is allowed."""
    if raw == "":
        raise ValueError("missing value")
    if spec.type == "str":
        if not (raw.isascii() and raw.isprintable()) or len(raw) > MAX_STR_VALUE:
            raise ValueError(f"not a short ASCII token (max {MAX_STR_VALUE} characters)")
        if spec.choices and raw not in spec.choices:
            raise ValueError(f"{raw!r} is not one of {', '.join(spec.choices)}")
        if spec.hook == "capture_single":
            check_type(raw)
        return raw
    if spec.type in ("int", "bool"):
        if not _INT.fullmatch(raw):
            raise ValueError(f"{raw!r} is not an integer")
        value: Any = int(raw)
    else:
        if not _FLOAT.fullmatch(raw):
            raise ValueError(f"{raw!r} is not a number")
        # Two decimals on the wire; rounding on input makes the echo and LOG 1 exactly what is in force.
        value = round(float(raw), 2)
        if not math.isfinite(value):
            raise ValueError(f"{raw!r} is not a finite number")
    if spec.lo is not None and (value < spec.lo or (spec.lo_open and value == spec.lo)):
        raise ValueError(f"{raw} is out of range; allowed {spec.range_text()}")
    if spec.hi is not None and value > spec.hi:
        raise ValueError(f"{raw} is out of range; allowed {spec.range_text()}")
    if value in spec.exclude:
        raise ValueError(f"{raw} is not allowed; allowed {spec.range_text()}")
    if spec.type == "bool":
        return bool(value)
    return value


def parse_message(message: Message) -> tuple[list[Command], list[Refusal]]:
    """Check every key and value. Unknown keys and bad values become Refusals; the rest go on."""
    commands: list[Command] = []
    refusals: list[Refusal] = []
    for key, raw in message.pairs:
        spec = KEYS.get(key)
        if spec is None:
            refusals.append(Refusal(safe_key(key), "unknown key"))
            continue
        who = spec.devices[0] if spec.devices else MASTER_IDENTITY
        if spec.kind == "reply":
            refusals.append(Refusal(key, f"{key} is a reply, not a command", who))
            continue
        try:
            value = parse_value(spec, raw)
        except ValueError as e:
            refusals.append(Refusal(key, str(e), who))
            continue
        commands.append(Command(key, value, raw))
    return commands, refusals


def format_value(value: Any) -> str:
    """bool and int as integers, floats with two decimals, strings as they are."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.2f}"
    text = str(value)
    # A value is one token: whitespace would split it on the client's side.
    return "_".join(text.split()) or "-"


def encode_pairs(pairs: list[tuple[str, Any]]) -> bytes:
    return ("".join(f"{k} {format_value(v)} " for k, v in pairs) + END + "\r\n").encode("utf-8")


def encode_reply(reply: dict) -> bytes:
    """One reply dict -> one message; upper-case keys only, IDN last."""
    pairs = [(k, v) for k, v in reply.items() if k.isupper() and k != "IDN"]
    if "IDN" in reply:
        pairs.append(("IDN", reply["IDN"]))
    return encode_pairs(pairs)


def coalesce(replies: list[dict]) -> list[dict]:
    """The replies to one message as few lines as the protocol allows: one per answering device (IDN) and kind -
    echo, private answer (LOG 0 / LOG 1), ERR. ERR lines name every refused key, comma-separated
    (`ERR FOO,BAR IDN CM1`); a key repeated in one message is echoed once, with its last value."""
    groups: dict[tuple[str, Any], dict] = {}
    for reply in replies:
        if "ERR" in reply:
            kind = "err"
        elif reply.get("private"):
            kind = "private"
        else:
            kind = "echo"
        group = groups.get((kind, reply.get("IDN")))
        if group is None:
            groups[(kind, reply.get("IDN"))] = dict(reply)
        elif kind == "err":
            keys = group["ERR"].split(",")
            if reply["ERR"] not in keys:
                group["ERR"] = ",".join([*keys, reply["ERR"]])
            reasons = group.get("reason", "")
            if reply.get("reason") and reply["reason"] not in reasons and len(reasons) < 1000:
                group["reason"] = f"{reasons}; {reply['ERR']}: {reply['reason']}" if reasons else reply["reason"]
        else:
            idn = group.pop("IDN", None)
            group.update({k: v for k, v in reply.items() if k != "IDN"})
            if idn is not None:
                group["IDN"] = idn
    return list(groups.values())


def expand_reply(reply: dict[str, str]) -> list[dict[str, str]]:
    """A received (possibly coalesced) reply line as one dict per key, as the original sent them: echoes
    `{KEY: value, "IDN": who}` (FIL stays with the TPx key it names), ERR lines one `{"ERR": key, "IDN": who}`
    per refused key. A LOG 1 answer (all settings of one device) stays whole."""
    idn = {"IDN": reply["IDN"]} if "IDN" in reply else {}
    if "ERR" in reply:
        return [{"ERR": key, **idn} for key in reply["ERR"].split(",") if key]
    keys = [k for k in reply if k not in ("IDN", "FIL")]
    every_setting = set(SETTING_KEYS_BY_DEVICE.get(reply.get("IDN", ""), ()))
    if len(keys) <= 1 or (every_setting and every_setting <= set(keys)):
        return [dict(reply)]
    out = []
    for k in keys:
        item = {k: reply[k]}
        if "FIL" in reply and KEYS.get(k) is not None and KEYS[k].hook == "capture_single":
            item["FIL"] = reply["FIL"]
        out.append({**item, **idn})
    return out


def encode_command(pairs: list[tuple[str, Any]]) -> bytes:
    """A client message; values already typed or raw tokens."""
    return encode_pairs(pairs)


def reply_from_pairs(pairs: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """A received reply as a dict of raw tokens (client side)."""
    return {k: v for k, v in pairs}


# ------------------------------------------------------------------------------------------------------ ordering


@dataclass
class Unit:
    """Commands applied as one step: a single key, or a min/max pair validated together."""

    rank: int
    commands: list[Command] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        return [c.key for c in self.commands]


def _rank(cmd: Command) -> int:
    spec = cmd.spec
    if spec.kind == "meta":
        return 0
    if spec.kind == "setting":
        if spec.type == "bool":  # auto exposure: off before manual values, on after them (start values)
            return 10 if not cmd.value else 50
        if cmd.key in ("SSA", "SSB", "SSS"):
            return 40
        return 30 if spec.pair else 20
    if spec.kind == "action":
        return 60
    if spec.kind == "log":
        return 80  # LOG 1 reports what the rest of the message set
    return 90  # EXT / RST last


def order_units(commands: list[Command]) -> list[Unit]:
    """The order one message is applied in; stable (token order) within a rank, pairs merged into one unit."""
    units: list[Unit] = []
    pairs: dict[str, Unit] = {}
    for cmd in commands:
        pair = cmd.spec.pair
        if pair:
            if pair not in pairs:
                pairs[pair] = Unit(_rank(cmd))
                units.append(pairs[pair])
            pairs[pair].commands.append(cmd)
        else:
            units.append(Unit(_rank(cmd), [cmd]))
    return sorted(units, key=lambda u: u.rank)


# ------------------------------------------------------------------------------------------------ config mapping


def slot_period_s(rate_hz: float) -> float:
    """The capture slot period for a camera rate: the nearest whole number of slots per minute (1 - 60)."""
    per_minute = min(60, max(1, round(60.0 * rate_hz)))
    return 60.0 / per_minute


def changes_for(commands: list[Command], config: Any) -> dict[str, dict[str, Any]]:
    """Config changes (section -> field -> value) that setting commands make, given the config in force."""
    changes: dict[str, dict[str, Any]] = {}
    for cmd in commands:
        for target in cmd.spec.targets:
            section = changes.setdefault(target.section, {})
            if target.index is None:
                section[target.field] = cmd.value
            else:
                current = list(section.get(target.field, getattr(getattr(config, target.section), target.field)))
                current[target.index] = cmd.value
                section[target.field] = tuple(current)
        if cmd.key == "FRC":
            changes.setdefault("schedule", {})["period_s"] = slot_period_s(cmd.value)
    return changes


def read_setting(key: str, config: Any) -> Any:
    """The value of a setting key in `config` (the device's effective config)."""
    target = KEYS[key].targets[0]
    value = getattr(getattr(config, target.section), target.field)
    return value[target.index] if target.index is not None else value
