"""Dark images by band and shutter speed, for dark correction: I = raw - dark(band, exposure)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from controller.logging import get_logger
from processing.images import ImageFile, read_image

log = get_logger("processing.darks")


@dataclass(frozen=True)
class DarkMatch:
    """The dark used for one image: `exact` False when the nearest exposure stood in; `dark` None when none."""

    dark: np.ndarray | None
    shutter_us: int | None
    exact: bool

    @property
    def description(self) -> str:
        if self.dark is None:
            return "none"
        return f"{self.shutter_us}us" + ("" if self.exact else " (nearest)")


class DarkLibrary:
    """Mean dark frame per (band, shutter_us). Several darks at the same setting are averaged (less noise)."""

    def __init__(self) -> None:
        self._sums: dict[tuple[str, int], np.ndarray] = {}
        self._counts: dict[tuple[str, int], int] = {}
        self._warned: set[tuple[str, int]] = set()

    def add(self, band: str, shutter_us: int, pixels: np.ndarray) -> None:
        key = (band, int(shutter_us))
        arr = pixels.astype(np.float64)
        if key in self._sums:
            if self._sums[key].shape != arr.shape:
                log.warning("dark_shape_mismatch", band=band, shutter_us=shutter_us, shape=arr.shape)
                return
            self._sums[key] += arr
            self._counts[key] += 1
        else:
            self._sums[key] = arr
            self._counts[key] = 1

    @classmethod
    def from_files(cls, files: Iterable[ImageFile], reader: Callable[[str], np.ndarray] = read_image) -> DarkLibrary:
        lib = cls()
        for f in files:
            lib.add(f.name.band, f.name.shutter_us, reader(f.path))
        return lib

    def __len__(self) -> int:
        return len(self._sums)

    def keys(self) -> list[tuple[str, int]]:
        return sorted(self._sums)

    def get(self, band: str, shutter_us: int) -> DarkMatch:
        """The dark for `band` at `shutter_us`; the nearest exposure (warned once) when there is no exact one."""
        key = (band, int(shutter_us))
        if key in self._sums:
            return DarkMatch(self._mean(key), key[1], True)
        candidates = [s for b, s in self._sums if b == band]
        if not candidates:
            if key not in self._warned:
                self._warned.add(key)
                log.warning(
                    "no_dark_for_band",
                    band=band,
                    shutter_us=shutter_us,
                    detail="images of this band are NOT dark corrected; add Dark images to the folder",
                )
            return DarkMatch(None, None, False)
        nearest = min(candidates, key=lambda s: (abs(s - key[1]), s))
        if key not in self._warned:
            self._warned.add(key)
            log.warning("dark_nearest_exposure", band=band, shutter_us=shutter_us, used_shutter_us=nearest)
        return DarkMatch(self._mean((band, nearest)), nearest, False)

    def _mean(self, key: tuple[str, int]) -> np.ndarray:
        """The mean dark of `key`, computed once per set of darks (every pair needs it)."""
        cache = self.__dict__.setdefault("_means", {})
        if cache.get(key, (None, -1))[1] != self._counts[key]:
            cache[key] = (self._sums[key] / self._counts[key], self._counts[key])
        return cache[key][0]

    def correct(
        self, band: str, shutter_us: int, raw: np.ndarray, out: np.ndarray | None = None
    ) -> tuple[np.ndarray, DarkMatch]:
        """Dark-corrected float64 image (never integer: small values may go negative before clipping); into `out`
        (a float64 array of raw's shape, reused pair after pair) when given."""
        match = self.get(band, shutter_us)
        if out is not None and (out.shape != raw.shape or out.dtype != np.float64):
            out = None
        if match.dark is not None and match.dark.shape == raw.shape:
            # one pass, no float copy of raw first
            return np.subtract(raw, match.dark, out=out, dtype=np.float64), match
        if out is None:
            return raw.astype(np.float64), match
        np.copyto(out, raw)
        return out, match


@dataclass(frozen=True)
class SpectrumDark:
    """One dark spectrum: when, at which integration time and co-adds, its mean counts, and its file."""

    time: float  # epoch seconds
    integration_ms: int
    coadd: int
    counts: np.ndarray
    name: str


class SpectrumDarks:
    """Dark spectra for the DOAS retrieval, matched like the camera darks: by integration time and co-adds.

    `match` gives the newest dark taken at or before the spectrum with the same integration time and co-adds; else
    one with the same integration time (co-adds change only the noise of a mean spectrum); at each of those, when
    none is older than the spectrum, the oldest after it (the day's dark series may come after the first spectra).
    With no dark at its integration time (auto integration chose one the dark series skipped), the dark is
    interpolated per pixel between the two nearest integration times (offset + dark current x time). A spectrum
    with no dark at all is fitted without one (warned once per setting): the stray-light window then removes the
    offset but not the detector's fixed pattern.
    """

    KEEP = 8  # darks kept per (integration, co-adds): a day's series or two

    def __init__(self) -> None:
        self._darks: dict[tuple[int, int], list[SpectrumDark]] = {}
        self._warned: set[tuple[int, int]] = set()

    def __len__(self) -> int:
        return sum(len(v) for v in self._darks.values())

    def add(self, dark: SpectrumDark) -> None:
        lst = self._darks.setdefault((dark.integration_ms, dark.coadd), [])
        if any(d.name == dark.name for d in lst):
            return
        lst.append(dark)
        lst.sort(key=lambda d: d.time)
        del lst[: max(0, len(lst) - self.KEEP)]

    def match(self, time: float, integration_ms: int, coadd: int) -> SpectrumDark | None:
        exact = self._darks.get((integration_ms, coadd), [])
        same_int = [d for (i, _), lst in self._darks.items() if i == integration_ms for d in lst]
        for candidates in (exact, same_int):
            if candidates:
                return _newest_before(candidates, time)
        key = (integration_ms, coadd)
        others = sorted({i for i, _ in self._darks}, key=lambda i: (abs(i - integration_ms), i))[:2]
        if len(others) == 2:
            # dark = offset + dark current x integration time, per pixel: from the two nearest integration times
            (i0, i1) = sorted(others)
            d0 = _newest_before([d for (i, _), lst in self._darks.items() if i == i0 for d in lst], time)
            d1 = _newest_before([d for (i, _), lst in self._darks.items() if i == i1 for d in lst], time)
            if d0.counts.shape == d1.counts.shape:
                w = (integration_ms - i0) / (i1 - i0)
                counts = d0.counts + w * (d1.counts - d0.counts)
                if key not in self._warned:
                    self._warned.add(key)
                    log.info("dark_spectrum_interpolated", integration_ms=integration_ms, from_ms=[i0, i1])
                return SpectrumDark(time, integration_ms, coadd, counts, f"{d0.name}+{d1.name}")
        if key not in self._warned:
            self._warned.add(key)
            log.warning(
                "no_dark_spectrum", integration_ms=integration_ms, coadd=coadd,
                detail="spectra at this integration time are fitted WITHOUT a dark; the daily dark series adds one",
            )  # fmt: skip
        return None


def _newest_before(candidates: list[SpectrumDark], time: float) -> SpectrumDark:
    before = [d for d in candidates if d.time <= time]
    return max(before, key=lambda d: d.time) if before else min(candidates, key=lambda d: d.time)
