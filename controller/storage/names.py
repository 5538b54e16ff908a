"""File names of the original PyCam (spec/file-formats.md): format and parse, with errors that say what is wrong.

Images:  {time:%Y-%m-%dT%H%M%S}_{fltrA|fltrB}_{gain}ag_{shutter_us}ss_{type}[_darkcorr].png
Spectra: {time:%Y-%m-%dT%H%M%S}_{int_ms}ss_{coadd}coadd_{type}.npy
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from controller.errors import FileNameError

TIME_FORMAT = "%Y-%m-%dT%H%M%S"
BANDS = {"A": "fltrA", "B": "fltrB"}
FILTER_TO_BAND = {v: k for k, v in BANDS.items()}
PLAIN_TYPES = ("Plume", "Dark", "Clear", "Test")
# One name per file: numbers are ASCII digits without leading zeros (`[0-9]`, not `\d`, which also matches
# Arabic-Indic and other Unicode digits), of bounded length (int() of thousands of digits raises ValueError).
MAX_DIGITS = 9
MAX_NAME_CHARS = 128
_NUMBER = f"(?:0|[1-9][0-9]{{0,{MAX_DIGITS - 1}}})"
_NUMBER_RE = re.compile(_NUMBER)
_CELL = re.compile(rf"^({_NUMBER})ppmm$")
_TIME = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{6}$")


def _number(field: str, suffix: str, name: str, what: str) -> int:
    """The integer of a `<N><suffix>` field in canonical form, else FileNameError naming the field."""
    if field.endswith(suffix) and _NUMBER_RE.fullmatch(field[: -len(suffix)]):
        return int(field[: -len(suffix)])
    raise FileNameError(
        name, f"{what} field {field[:40]!r} is not <integer>{suffix} (ASCII digits, no leading zeros, <= {MAX_DIGITS})"
    )


def check_type(kind: str) -> str:
    """A capture type: Plume, Dark, Clear, Test or a gas cell `<N>ppmm`. Returns it, or raises ValueError."""
    if kind in PLAIN_TYPES or _CELL.match(kind):
        return kind
    raise ValueError(f"capture type {kind!r} is not one of {', '.join(PLAIN_TYPES)} or <N>ppmm")


def cell_ppmm(kind: str) -> int | None:
    """The gas cell column of a `<N>ppmm` type, else None."""
    m = _CELL.match(kind)
    return int(m.group(1)) if m else None


def format_time(ts: float | datetime) -> str:
    if not isinstance(ts, datetime):
        ts = datetime.fromtimestamp(ts, tz=UTC)
    if ts.year < 1000:
        return ts.strftime(TIME_FORMAT)  # never parsed back (four year digits): kept as strftime writes it
    # TIME_FORMAT written out: a data store's start-up scan formats every name it holds (canonical check)
    return f"{ts.year}-{ts.month:02d}-{ts.day:02d}T{ts.hour:02d}{ts.minute:02d}{ts.second:02d}"


def _parse_time(text: str, name: str) -> datetime:
    """TIME_FORMAT read by hand (strptime is most of a parse's cost, and a start-up scan parses every name)."""
    if not _TIME.match(text):
        raise FileNameError(name, f"time field {text[:40]!r} is not YYYY-MM-DDTHHMMSS")
    try:
        return datetime(
            int(text[0:4]), int(text[5:7]), int(text[8:10]), int(text[11:13]), int(text[13:15]), int(text[15:17]),
            tzinfo=UTC,
        )  # fmt: skip
    except ValueError as e:
        raise FileNameError(name, f"time field {text!r} is not YYYY-MM-DDTHHMMSS") from e


class _TimedName:
    """What image and spectrum names share: the capture time, as the time key and the date folder."""

    __slots__ = ()  # records are slotted: a data store's index holds one per stored file
    time: datetime

    @property
    def time_key(self) -> str:
        return format_time(self.time)

    @property
    def date_folder(self) -> str:
        return self.time_key[:10]


@dataclass(frozen=True, slots=True)
class ImageName(_TimedName):
    time: datetime
    band: str  # "A" or "B"
    gain: int
    shutter_us: int
    kind: str  # Plume, Dark, Clear, Test, <N>ppmm
    darkcorr: bool = False

    def __str__(self) -> str:
        suffix = "_darkcorr" if self.darkcorr else ""
        return f"{format_time(self.time)}_{BANDS[self.band]}_{self.gain}ag_{self.shutter_us}ss_{self.kind}{suffix}.png"

    @classmethod
    def parse(cls, name: str) -> ImageName:
        if not name.endswith(".png"):
            raise FileNameError(name, "an image name must end in .png")
        parts = name[:-4].split("_")
        darkcorr = parts[-1] == "darkcorr"
        if darkcorr:
            parts = parts[:-1]
        if len(parts) != 5:
            raise FileNameError(name, f"expected 5 fields time_fltrX_<gain>ag_<shutter>ss_<type>, found {len(parts)}")
        time_s, fltr, gain_s, ss_s, kind = parts
        t = _parse_time(time_s, name)
        if fltr not in FILTER_TO_BAND:
            raise FileNameError(name, f"filter field {fltr!r} is not fltrA or fltrB")
        gain = _number(gain_s, "ag", name, "gain")
        shutter_us = _number(ss_s, "ss", name, "shutter")
        kind = _check_kind(kind, name)
        return _canonical(cls(t, FILTER_TO_BAND[fltr], gain, shutter_us, kind, darkcorr), name)


@dataclass(frozen=True, slots=True)
class SpectrumName(_TimedName):
    time: datetime
    integration_ms: int
    coadd: int
    kind: str

    def __str__(self) -> str:
        return f"{format_time(self.time)}_{self.integration_ms}ss_{self.coadd}coadd_{self.kind}.npy"

    @classmethod
    def parse(cls, name: str) -> SpectrumName:
        if not name.endswith(".npy"):
            raise FileNameError(name, "a spectrum name must end in .npy")
        parts = name[:-4].split("_")
        if len(parts) != 4:
            raise FileNameError(name, f"expected 4 fields time_<ms>ss_<n>coadd_<type>, found {len(parts)}")
        time_s, ss_s, co_s, kind = parts
        t = _parse_time(time_s, name)
        integration_ms = _number(ss_s, "ss", name, "integration")
        coadd = _number(co_s, "coadd", name, "co-add")
        kind = _check_kind(kind, name)
        return _canonical(cls(t, integration_ms, coadd, kind), name)


_Parsed = TypeVar("_Parsed", ImageName, SpectrumName)


def _check_kind(kind: str, name: str) -> str:
    """The capture type, interned: a data store's index holds a record per stored file, most of one type."""
    try:
        return sys.intern(check_type(kind))
    except ValueError as e:
        raise FileNameError(name, str(e)) from e


def _canonical(parsed: _Parsed, name: str) -> _Parsed:
    """Refuse a name that parses but is not how this file is written (one file, one name)."""
    if str(parsed) != name:
        raise FileNameError(name, f"not in canonical form (that file is written {str(parsed)!r})")
    return parsed


def parse_name(name: str | ImageName | SpectrumName) -> ImageName | SpectrumName:
    """Parse an image or spectrum file name (by its extension). Only the canonical form of a name is accepted.
    A name parsed already (a record passed on from where it came in) is returned as it is, not parsed again."""
    if isinstance(name, ImageName | SpectrumName):
        return name
    if not isinstance(name, str) or len(name) > MAX_NAME_CHARS:
        raise FileNameError(str(name)[:60], f"not a station file name (longer than {MAX_NAME_CHARS} characters)")
    if name.endswith(".png"):
        return ImageName.parse(name)
    if name.endswith(".npy"):
        return SpectrumName.parse(name)
    raise FileNameError(name, "not a station data file (expected .png image or .npy spectrum)")
