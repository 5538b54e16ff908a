"""Finding and reading station files: a folder scan that sorts images and spectra by what they are.

Works on the station layout (date folders under the data root), on flat folders and on the original's archives
(sub-folders such as Cal_1/, Seq_1/). Files being written (temp files, `.lock` sidecars) are skipped. Only `Plume`
images may enter plume processing: Test, Dark, Clear and gas-cell images are kept apart (known failure 6).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from controller.errors import FileNameError, ProcessingError
from controller.logging import get_logger
from controller.storage.atomic import is_temp_or_locked
from controller.storage.names import ImageName, SpectrumName, cell_ppmm, parse_name

log = get_logger("processing.images")

PLUME_KIND = "Plume"


@dataclass(frozen=True, order=True)
class StationFile:
    """A station file on disk with its parsed name, ordered by time (then band, then name)."""

    sort_key: tuple = field(init=False, repr=False)
    path: Path = field(compare=False)
    name: ImageName | SpectrumName = field(compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sort_key", (self.name.time, getattr(self.name, "band", ""), self.path.name))


class ImageFile(StationFile):
    name: ImageName

    @property
    def is_plume(self) -> bool:
        return self.name.kind == PLUME_KIND and not self.name.darkcorr


class SpectrumFile(StationFile):
    name: SpectrumName


@dataclass
class FolderScan:
    """Station files of a folder, sorted by time and split by role."""

    plume: list[ImageFile] = field(default_factory=list)
    darks: list[ImageFile] = field(default_factory=list)
    clears: list[ImageFile] = field(default_factory=list)
    cells: list[ImageFile] = field(default_factory=list)
    tests: list[ImageFile] = field(default_factory=list)
    spectra: list[SpectrumFile] = field(default_factory=list)
    dark_spectra: list[SpectrumFile] = field(default_factory=list)
    clear_spectra: list[SpectrumFile] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.__dict__.items()}


def classify(path: Path) -> ImageFile | SpectrumFile | None:
    """Parse a station file name; None for anything that is not one (or is still being written)."""
    if is_temp_or_locked(path) or path.suffix not in (".png", ".npy"):
        return None
    try:
        name = parse_name(path.name)
    except FileNameError:
        return None
    if isinstance(name, ImageName):
        return ImageFile(path, name)
    return SpectrumFile(path, name)


def add_to_scan(scan: FolderScan, item: ImageFile | SpectrumFile) -> None:
    """Put one classified file into its list (not sorted; callers sort once)."""
    if isinstance(item, SpectrumFile):
        kind = item.name.kind
        target = {"Dark": scan.dark_spectra, "Clear": scan.clear_spectra}.get(kind, scan.spectra)
        if kind in ("Plume", "Dark", "Clear"):
            target.append(item)
        return
    name = item.name
    if name.darkcorr:  # derived copies of the original; we dark-correct raw files ourselves
        scan.skipped.append(item.path)
    elif name.kind == PLUME_KIND:
        scan.plume.append(item)
    elif name.kind == "Dark":
        scan.darks.append(item)
    elif name.kind == "Clear":
        scan.clears.append(item)
    elif cell_ppmm(name.kind) is not None:
        scan.cells.append(item)
    else:
        scan.tests.append(item)


def scan_folder(folder: str | Path, paths: Iterable[Path] | None = None) -> FolderScan:
    """Scan `folder` recursively (or only `paths`) and sort every station file into its role."""
    folder = Path(folder)
    if paths is None:
        if not folder.is_dir():
            raise ProcessingError(f"{folder} is not a folder")
        paths = (p for p in folder.rglob("*") if p.is_file())
    scan = FolderScan()
    for path in paths:
        if path.suffix.lower() in FITS_SUFFIXES:
            items = classify_ecii_fits(path)
        else:
            item = classify(path)
            items = [] if item is None else [item]
        if not items:
            scan.skipped.append(path)
        for item in items:
            add_to_scan(scan, item)
    for lst in scan.__dict__.values():
        lst.sort()
    return scan


def read_image(path: str | Path) -> np.ndarray:
    """Read a station image: a 16-bit single-channel PNG (OpenCV, ~2 ms per 648 x 486 frame), or an ECII FITS."""
    import cv2

    path = Path(path)
    if path.suffix.lower() in FITS_SUFFIXES:
        return read_fits(path)
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # None when missing or not an image
    if arr is None or arr.ndim != 2:
        raise ProcessingError(f"cannot read image {path}: not a single-channel PNG")
    return arr


def read_spectrum(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a station spectrum (.npy, shape (2, N)): (wavelengths_nm, counts)."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ProcessingError(f"cannot read spectrum {path}: {e}") from e
    if arr.ndim != 2 or arr.shape[0] != 2:
        raise ProcessingError(f"spectrum {path} has shape {arr.shape}, expected (2, N)")
    return arr[0].astype(np.float64), arr[1].astype(np.float64)


# ------------------------------------------------------------------------------------- pyplis's ECII FITS files

# pyplis's ECII camera (cam_info "ecII", `custom_image_import.load_ecII_fits`), e.g. its Etna test data
# pyplis/data/testdata_minimal: EC2_<serial>_<id>_<YYYYmmddHHMMSSff>_<filter>_<place>.fts, acquisition time (STIME)
# and exposure (EXP, µs) in the FITS header. F01 is the on-band filter (camera A), F02 the off-band (camera B);
# D0L / D1L are the offset and dark images at the low read gain (the gain of the plume images), used as darks of
# both bands (the nearest exposure is subtracted); the high-gain D0H / D1H are not used.
FITS_SUFFIXES = (".fts", ".fits")
ECII_BANDS = {"F01": "A", "F02": "B"}
ECII_DARKS = ("D0L", "D1L")


def read_fits(path: str | Path) -> np.ndarray:
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as hdu:
            arr = np.asarray(hdu[0].data)
    except (OSError, ValueError, IndexError) as e:
        raise ProcessingError(f"cannot read FITS image {path}: {e}") from e
    if arr.ndim != 2:
        raise ProcessingError(f"FITS image {path}: not a single 2-D image ({arr.shape})")
    return arr


def classify_ecii_fits(path: Path) -> list[ImageFile]:
    """The station files an ECII FITS image stands for: one Plume image of its band, or a Dark of both bands;
    [] when it is none of these (other names, high-gain darks, unreadable headers)."""
    from datetime import UTC, datetime

    from astropy.io import fits

    parts = path.stem.split("_")
    if len(parts) < 5 or (parts[4] not in ECII_BANDS and parts[4] not in ECII_DARKS):
        return []
    try:
        header = fits.getheader(path)
        time = datetime.strptime(header["STIME"], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
        shutter_us = max(1, int(round(float(header["EXP"]))))
    except (OSError, KeyError, ValueError) as e:
        log.warning("fits_header_unreadable", file=path.name, error=str(e))
        return []
    if parts[4] in ECII_BANDS:
        return [ImageFile(path, ImageName(time, ECII_BANDS[parts[4]], 1, shutter_us, PLUME_KIND))]
    return [ImageFile(path, ImageName(time, band, 1, shutter_us, "Dark")) for band in ("A", "B")]
