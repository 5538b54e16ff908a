"""A/B pairing by capture slot time.

The station names both images of a slot with the same master-clock time, so pairs match exactly. The original's
archives came from two drifting clocks: `tolerance_s` pairs each A image with the nearest unused B image within
that many seconds instead. Only Plume images pair: calibration, dark, clear and test images never enter plume
processing (known failure 6).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from controller.errors import ProcessingError
from processing.images import ImageFile


@dataclass(frozen=True)
class ImagePair:
    a: ImageFile
    b: ImageFile

    @property
    def time(self) -> datetime:
        return self.a.name.time

    @property
    def key(self) -> str:
        """Identity of the pair in journals and outputs: the A image's slot time."""
        return self.a.name.time_key

    @property
    def offset_s(self) -> float:
        return (self.b.name.time - self.a.name.time).total_seconds()


def _plume_only(files: Iterable[ImageFile], band: str) -> list[ImageFile]:
    out = []
    for f in files:
        if f.name.band != band:
            continue
        if not f.is_plume:
            raise ProcessingError(f"{f.path.name} is a {f.name.kind} image; only Plume images enter plume processing")
        out.append(f)
    return sorted(out)


def pair_images(files: Iterable[ImageFile], tolerance_s: float = 0.0) -> tuple[list[ImagePair], list[ImageFile]]:
    """Pair A and B Plume images. Returns (pairs in time order, unpaired images)."""
    files = list(files)
    a_files = _plume_only(files, "A")
    b_files = _plume_only(files, "B")
    pairs: list[ImagePair] = []
    if tolerance_s <= 0:
        by_key = {f.name.time_key: f for f in b_files}
        used: set[str] = set()
        unpaired = []
        for a in a_files:
            b = by_key.get(a.name.time_key)
            if b is None or a.name.time_key in used:
                unpaired.append(a)
                continue
            used.add(a.name.time_key)
            pairs.append(ImagePair(a, b))
        unpaired += [b for b in b_files if b.name.time_key not in used]
        return pairs, sorted(unpaired)

    b_times = [b.name.time.timestamp() for b in b_files]
    taken = [False] * len(b_files)
    unpaired = []
    for a in a_files:
        t = a.name.time.timestamp()
        i = bisect.bisect_left(b_times, t - tolerance_s)
        best = None
        while i < len(b_times) and b_times[i] <= t + tolerance_s:
            if not taken[i] and (best is None or abs(b_times[i] - t) < abs(b_times[best] - t)):
                best = i
            i += 1
        if best is None:
            unpaired.append(a)
        else:
            taken[best] = True
            pairs.append(ImagePair(a, b_files[best]))
    unpaired += [b for b, used in zip(b_files, taken, strict=True) if not used]
    return pairs, sorted(unpaired)
