"""The sim scene's terrain: a dark volcano flank in the lower left of the image, seen through the same air as the plume.

Geometry (fractions of the image, so every image size has it): the skyline runs straight from (0, SKYLINE_Y0·h)
down to the bottom edge at x = SKYLINE_X1·w; the flank is below it, clear of the plume (centre 0.45 h) and of the
default PCS line (x = 400 of 648). Along each column the terrain distance falls linearly with the depth below the
skyline, from FAR_M on the skyline to NEAR_M at (1 - SKYLINE_Y0)·h below it (a slope rising away from the camera):
a straight vertical line on the flank has distances linear along it, as an operator's dilution line assumes.

Radiance (Campion et al. 2015, the model the scene dilutes the plume with): I = I_A · (a·T + 1 - T), T = exp(-ε·d),
with a = ALBEDO[band] the flank's own radiance relative to the sky (dark lava and ash) and I_A the horizon sky
radiance of that column (the sky at row SKYLINE_Y0·h: the air between camera and flank is lit like the horizon
sky), times the lens's vignetting as everything in the image.

What a station knows: `dilution_lines` gives vertical lines on the flank and the distances at their ends as read
off a map, each with an error of up to LINE_DISTANCE_ERROR (seeded); never the scene's distances or ε.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SKYLINE_Y0 = 0.86  # skyline height at the left edge (fraction of the image height)
SKYLINE_X1 = 0.30  # the skyline meets the bottom edge here (fraction of the width)
NEAR_M, FAR_M = 2000.0, 10000.0  # terrain distance at the bottom of the left edge and on the skyline
ALBEDO = {"A": 0.06, "B": 0.09}  # the flank's radiance relative to the horizon sky, without the air in between
LINE_X = (0.02, 0.07, 0.12)  # the dilution lines' columns (fractions of the width)
LINE_MARGIN_PX = 3  # the lines keep this far from the skyline and the image edge
LINE_DISTANCE_ERROR = 0.03  # relative error of a distance read off a map (uniform, seeded)
AMBIENT_ROWS = (0.79, 0.84)  # the sky region an operator picks above the flank (fractions of the height)


@dataclass(frozen=True)
class Terrain:
    """The flank's pixels and their distances (m) from the camera."""

    mask: np.ndarray  # bool (h, w)
    distance_m: np.ndarray  # float64 (h, w), NaN off the terrain
    horizon_row: int  # the row whose sky radiance dilutes the terrain

    @property
    def shape(self) -> tuple[int, int]:
        return self.mask.shape

    def skyline_y(self, x: np.ndarray | float) -> np.ndarray:
        h, w = self.shape
        return h * (SKYLINE_Y0 + (1.0 - SKYLINE_Y0) * np.asarray(x, dtype=np.float64) / (SKYLINE_X1 * w))

    def factor(self, band: str, ext_per_m: float) -> np.ndarray:
        """a·T + 1 - T on the terrain pixels (flattened in mask order): the radiance relative to the horizon sky."""
        t = np.exp(-ext_per_m * self.distance_m[self.mask])
        return ALBEDO[band] * t + 1.0 - t

    def dilution_lines(
        self, seed: int
    ) -> tuple[tuple[tuple[int, int, int, int], ...], tuple[tuple[float, float], ...]]:
        """Vertical lines on the flank (x0, y0, x1, y1) and the distances at their ends as an operator reads them
        off a map: the true ones times 1 ± up to LINE_DISTANCE_ERROR (seeded)."""
        h, w = self.shape
        rng = np.random.default_rng([seed, 0x7E2A])
        lines, dists = [], []
        for fx in LINE_X:
            x = int(round(fx * w))
            y0 = int(np.ceil(self.skyline_y(x))) + LINE_MARGIN_PX
            y1 = h - 1 - LINE_MARGIN_PX
            if y1 - y0 < 10:  # too small an image for this line
                continue
            err = 1.0 + rng.uniform(-LINE_DISTANCE_ERROR, LINE_DISTANCE_ERROR, 2)
            d0, d1 = self.distance_m[y0, x] * err[0], self.distance_m[y1, x] * err[1]
            lines.append((x, y0, x, y1))
            dists.append((round(float(d0), -1), round(float(d1), -1)))
        return tuple(lines), tuple(dists)

    def ambient_roi(self) -> tuple[int, int, int, int]:
        """x0, y0, x1, y1 of a sky region just above the flank, over the dilution lines (plume-free)."""
        h, w = self.shape
        return 0, int(AMBIENT_ROWS[0] * h), max(int(round(max(LINE_X) * w)) + 2, 2), int(AMBIENT_ROWS[1] * h)


def make_terrain(width: int, height: int) -> Terrain:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    skyline = height * (SKYLINE_Y0 + (1.0 - SKYLINE_Y0) * xx / (SKYLINE_X1 * width))
    mask = yy > skyline
    depth = np.clip((yy - skyline) / ((1.0 - SKYLINE_Y0) * height), 0.0, 1.0)
    distance = np.where(mask, FAR_M - (FAR_M - NEAR_M) * depth, np.nan)
    return Terrain(mask, distance, min(max(int(SKYLINE_Y0 * height) - 1, 0), height - 1))  # the sky's last row
