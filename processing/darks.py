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

    def correct(self, band: str, shutter_us: int, raw: np.ndarray) -> tuple[np.ndarray, DarkMatch]:
        """Dark-corrected float64 image (never integer: small values may go negative before clipping)."""
        match = self.get(band, shutter_us)
        if match.dark is not None and match.dark.shape == raw.shape:
            return np.subtract(raw, match.dark, dtype=np.float64), match  # one pass, no float copy of raw first
        return raw.astype(np.float64), match
