"""Scanning, pairing, darks, optical depth and registration on real station data and small synthetic cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from controller.errors import ProcessingError
from controller.storage.names import ImageName
from processing.background import BandBackground, choose_background
from processing.darks import DarkLibrary
from processing.images import ImageFile, read_image, scan_folder
from processing.pairing import pair_images
from processing.registration import Registration

T0 = datetime(2024, 1, 2, 12, 0, 0, tzinfo=UTC)


def _file(band: str, t: datetime, kind: str = "Plume", shutter: int = 1000) -> ImageFile:
    name = ImageName(t, band, 1, shutter, kind)
    return ImageFile(Path(str(name)), name)


def test_scan_sorts_roles_on_villarrica(shared_data: Path) -> None:
    scan = scan_folder(shared_data / "villarrica-2018-03-26")
    assert len(scan.plume) == 29 and len(scan.darks) == 6 and len(scan.clears) == 6 and len(scan.cells) == 18
    assert all(f.is_plume for f in scan.plume)
    assert not any("darkcorr" in f.path.name for f in scan.plume + scan.darks + scan.clears + scan.cells)


def test_scan_skips_files_being_written(tmp_path: Path) -> None:
    day = tmp_path / "2024-01-02"
    day.mkdir()
    name = str(ImageName(T0, "A", 1, 1000, "Plume"))
    (day / name).write_bytes(b"x")
    (day / (name.replace("T120000", "T120004"))).write_bytes(b"x")
    (day / (name.replace("T120000", "T120004") + ".lock")).write_bytes(b"")
    (day / ".tmp-abc.png").write_bytes(b"x")
    scan = scan_folder(tmp_path)
    assert [f.path.name for f in scan.plume] == [name]


def test_pairing_exact_by_slot_time() -> None:
    files = [
        _file("A", T0),
        _file("B", T0),
        _file("A", T0 + timedelta(seconds=4)),
        _file("B", T0 + timedelta(seconds=5)),
    ]
    pairs, unpaired = pair_images(files)
    assert [(p.a.name.time, p.b.name.time) for p in pairs] == [(T0, T0)]
    assert len(unpaired) == 2


def test_pairing_tolerance_for_drifting_archives() -> None:
    a = [_file("A", T0 + timedelta(seconds=4 * k)) for k in range(5)]
    b = [_file("B", T0 + timedelta(seconds=4 * k + 1)) for k in range(5)]
    assert pair_images(a + b)[0] == []
    pairs, unpaired = pair_images(a + b, tolerance_s=1.5)
    assert len(pairs) == 5 and not unpaired
    assert all(p.offset_s == 1.0 for p in pairs)
    assert len({p.b.path for p in pairs}) == 5  # one B per A


def test_pairing_villarrica_seq1(shared_data: Path) -> None:
    scan = scan_folder(shared_data / "villarrica-2018-03-26" / "Seq_1")
    pairs, unpaired = pair_images(scan.plume)
    assert len(pairs) == 10 and len(unpaired) == 9
    assert all(p.a.name.time == p.b.name.time for p in pairs)


@pytest.mark.parametrize("kind", ["Test", "Dark", "Clear", "304ppmm"])
def test_non_plume_images_never_enter_plume_processing(kind: str) -> None:
    """Known failure 6: test (and dark, clear, cell) images fed the plume calibration in the original."""
    files = [_file("A", T0, kind), _file("B", T0, kind)]
    with pytest.raises(ProcessingError, match="only Plume images"):
        pair_images(files)


def test_non_plume_images_are_not_in_the_plume_list(tmp_path: Path) -> None:
    for k, kind in enumerate(["Test", "Dark", "Clear", "1257ppmm", "Plume"]):
        for band in "AB":
            (tmp_path / str(ImageName(T0 + timedelta(seconds=4 * k), band, 1, 1000, kind))).write_bytes(b"x")
    scan = scan_folder(tmp_path)
    pairs, _ = pair_images(scan.plume)
    assert len(pairs) == 1 and pairs[0].a.name.kind == "Plume"
    assert (len(scan.tests), len(scan.darks), len(scan.clears), len(scan.cells)) == (2, 2, 2, 2)


def test_dark_library_exact_nearest_and_none() -> None:
    lib = DarkLibrary()
    lib.add("A", 1000, np.full((2, 2), 10, np.uint16))
    lib.add("A", 1000, np.full((2, 2), 12, np.uint16))
    lib.add("A", 5000, np.full((2, 2), 30, np.uint16))
    m = lib.get("A", 1000)
    assert m.exact and m.dark[0, 0] == 11.0
    m = lib.get("A", 4000)
    assert not m.exact and m.shutter_us == 5000
    assert lib.get("B", 1000).dark is None
    img, match = lib.correct("A", 1000, np.full((2, 2), 5, np.uint16))
    assert img.dtype == np.float64 and img[0, 0] == -6.0 and match.description == "1000us"


def test_background_choice_recorded() -> None:
    assert choose_background(5, {"A": True, "B": True}).mode == 5
    c = choose_background(5, {"A": True, "B": False})
    assert c.mode == 0 and "no Clear" in c.description


@pytest.mark.parametrize("mode", [0, 1, 5])
def test_optical_depth_of_a_synthetic_plume(mode: int) -> None:
    h, w = 243, 324
    yy, xx = np.mgrid[0:h, 0:w]
    sky = 1000.0 * (1.0 + 0.2 * yy / h + 0.1 * xx / w)
    tau_true = 0.3 * np.exp(-(((yy - 120) / 20.0) ** 2)) * (xx < 180)
    plume = sky * np.exp(-tau_true)
    bb = BandBackground(mode, sky if mode else None, sky_side="right")
    tau = bb.tau(plume)
    assert tau.dtype == np.float64
    assert abs(tau[120, 80] - 0.3) < 0.05
    assert abs(np.median(tau[5:40, 240:300])) < 0.02


def test_mode5_optical_depth_equals_pyplis_get_tau_image(shared_data: Path) -> None:
    """Our in-place mode 5 (BandBackground._tau_mode5) against pyplis's get_tau_image on a Villarrica plume image
    and on a synthetic one: the same numbers, not just close."""
    from pyplis import Img

    from controller.config import Config
    from processing.pipeline import build_setup

    root = shared_data / "villarrica-2018-03-26"
    scan = scan_folder(root)
    setup = build_setup(Config(), scan)
    h, w = 243, 324
    yy, xx = np.mgrid[0:h, 0:w]
    sky = 1000.0 * (1.0 + 0.2 * yy / h + 0.1 * xx / w)
    synthetic = (sky, sky * np.exp(-0.3 * np.exp(-(((yy - 120) / 20.0) ** 2)) * (xx < 180)))
    f = next(f for f in scan.plume if f.name.band == "A")
    real, _ = setup.darks.correct("A", f.name.shutter_us, read_image(f.path))
    for clear, plume in ((setup.clear["A"], real / (f.name.shutter_us * 1e-6)), synthetic):
        bb = BandBackground(5, clear, sky_side="right")
        ours = bb.tau(plume.copy())
        ref = Img(np.clip(plume, 1e-3, None))
        ref.edit_log["darkcorr"] = True
        bg = Img(np.clip(clear, 1e-3, None))
        bg.edit_log["darkcorr"] = True
        theirs = bb.model.get_tau_image(ref, bg, check_state=False).img
        assert ours.dtype == np.float64 and ours.shape == theirs.shape
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


def test_registration_keeps_negative_and_fractional_optical_depth() -> None:
    """The original cast optical depth to uint16 in registration, destroying negative and fractional values."""
    reg = Registration(np.array([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]]))
    tau = np.zeros((50, 60))
    tau[20:30, 20:30] = -0.125
    tau[10:15, 40:45] = 0.37
    for dtype in (np.float32, np.float64):
        out = reg.apply(tau.astype(dtype))
        assert out.dtype == dtype
        assert out.min() == pytest.approx(-0.125) and out.max() == pytest.approx(0.37)
        # WARP_INVERSE_MAP: out(x, y) = in(x + 2, y - 1)
        assert out[21, 18] == pytest.approx(-0.125) and out[11, 38] == pytest.approx(0.37)
    with pytest.raises(TypeError):
        reg.apply(tau.astype(np.uint16))


def test_optical_depth_is_float_through_the_pair_chain(shared_data: Path) -> None:
    """No integer cast of optical depth anywhere: real AA holds negative and fractional values."""
    from controller.config import Config
    from processing.pipeline import PairProcessor, build_setup

    root = shared_data / "villarrica-2018-03-26"
    scan = scan_folder(root)
    setup = build_setup(Config(), scan)
    setup.registration = Registration.from_file(root / "registration_cv.npy")
    proc = PairProcessor(Config(), setup)
    pair = pair_images(scan.plume)[0][0]
    aa, _ = proc.aa_image(pair)
    assert aa.dtype == np.float64
    assert (aa < 0).any() and (np.abs(aa - np.round(aa)) > 1e-3).mean() > 0.5


def test_stored_registration_matrix_aligns_villarrica(shared_data: Path) -> None:
    import cv2

    root = shared_data / "villarrica-2018-03-26" / "Seq_1"
    a = cv2.imread(str(root / "2018-03-26T144408_fltrA_1ag_1399829ss_Plume.png"), cv2.IMREAD_UNCHANGED).astype(float)
    b = cv2.imread(str(root / "2018-03-26T144408_fltrB_1ag_99957ss_Plume.png"), cv2.IMREAD_UNCHANGED).astype(float)
    reg = Registration.from_file(shared_data / "villarrica-2018-03-26" / "registration_cv.npy")

    def corr(x: np.ndarray, y: np.ndarray) -> float:
        gx, gy = np.gradient(x)[0][100:400, 100:500], np.gradient(y)[0][100:400, 100:500]
        return float(np.corrcoef(gx.ravel(), gy.ravel())[0, 1])

    assert corr(a, reg.apply(b)) > 0.6 > corr(a, b)


def test_ecc_recovers_a_shift() -> None:
    rng = np.random.default_rng(3)
    from scipy.ndimage import gaussian_filter

    a = gaussian_filter(rng.normal(size=(120, 160)), 3)
    m = np.array([[1.0, 0.0, 3.0], [0.0, 1.0, -2.0]])
    import cv2

    # B sees the scene shifted: A(x) = B(m(x)), the ECC convention of the stored matrices.
    b = cv2.warpAffine(a.astype(np.float32), m, (160, 120))
    reg = Registration.from_ecc(a, b)
    assert np.allclose(reg.matrix[:, 2], [3.0, -2.0], atol=0.2)
    back = reg.apply(b.astype(np.float64))
    assert np.abs(back - a)[10:-10, 10:-10].max() < 0.05 * np.abs(a).max()
