"""Emission rate formula, errors, ICA, PCS lines and geometry."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from controller.config import Config
from controller.errors import ConfigError
from processing.emission import (
    KG_PER_MOLECULE,
    emission_rate,
    ica_mass,
    offset_line,
    pcs_lines,
    read_line_file,
)
from processing.geometry import geometry_from_config


def test_emission_rate_by_hand() -> None:
    # 100 pixels of 1e17 molecules/cm², 5 m/s, 2 m steps
    s = np.full(100, 1e17)
    phi, err = emission_rate(s, 5.0, 2.0, 0.0, 0.0, 0.0)
    assert phi == pytest.approx(100 * 1e17 * 1e4 * 64.066e-3 / 6.022e23 * 5.0 * 2.0)
    assert err == 0.0
    phi2, err2 = emission_rate(s, 5.0, 2.0, 1e16, 0.5, 0.2)
    assert phi2 == pytest.approx(phi)
    # three relative errors of 10 % each, fully correlated along the line, in quadrature
    assert err2 == pytest.approx(phi * np.sqrt(3) * 0.1)


def test_emission_rate_matches_pyplis() -> None:
    from pyplis.fluxcalc import det_emission_rate
    from scipy.constants import N_A as N_A_SCIPY

    rng = np.random.default_rng(0)
    s = rng.uniform(0, 5e17, 300)
    v = rng.uniform(3, 9, 300)
    dx = rng.uniform(2, 3, 300)
    ours = emission_rate(s, v, dx, 0.1 * s, 0.2 * v, 0.05 * dx)
    # pyplis takes the molar mass in the unit it returns (kg/mol -> kg/s) and scipy's N_A
    theirs = det_emission_rate(s, v, dx, 0.1 * s, 0.2 * v, 0.05 * dx, mmol=64.066e-3)
    scale = N_A_SCIPY / 6.022e23
    assert ours[0] == pytest.approx(theirs[0] * scale, rel=1e-9)
    assert ours[1] == pytest.approx(theirs[1] * scale, rel=1e-9)


def test_ica_mass() -> None:
    s = np.array([1e17, 2e17, 3e17])
    assert ica_mass(s, 2.0) == pytest.approx(6e17 * 1e4 * KG_PER_MOLECULE * 2.0)


def test_pcs_lines_from_config_and_original_files(shared_data: Path) -> None:
    root = shared_data / "villarrica-2018-03-26"
    coords1, o1 = read_line_file(str(root / "pcs_line_1.txt"))
    coords2, o2 = read_line_file(str(root / "pcs_line_2.txt"))
    assert coords1 == (273, 236, 408, 101) and o1 == "left"
    proc = dataclasses.replace(Config().processing, pcs_lines=(coords1, coords2), pcs_line_normals=(o1, o2))
    lines = pcs_lines(proc, (486, 648))
    assert [line.line_id for line in lines] == ["1", "2"]
    # "left" on these lines points up-left, where the Villarrica plume drifts
    n = lines[0].normal_vector
    assert n[0] < 0 and n[1] < 0
    shifted = offset_line(lines[0], 20)
    assert shifted.x0 < lines[0].x0 and shifted.y0 < lines[0].y0
    with pytest.raises(ConfigError, match="pcs_lines"):
        pcs_lines(dataclasses.replace(proc, pcs_lines=((0, 0, 700, 10),)), (486, 648))
    with pytest.raises(ConfigError, match="pcs_line_normals"):
        pcs_lines(dataclasses.replace(proc, pcs_line_normals=("up",)), (486, 648))


def test_fixed_plume_distance_pixel_size() -> None:
    cfg = Config()
    cfg = dataclasses.replace(cfg, processing=dataclasses.replace(cfg.processing, plume_distance_m=5000.0))
    g = geometry_from_config(cfg, (486, 648))
    assert g.pixel_size_m() == pytest.approx(5000 * 5.6e-6 / 12e-3)
    assert g.at_pyrlevel(1).shape == (243, 324)
    assert g.at_pyrlevel(1)[100, 100] == pytest.approx(2 * g.pixel_size_m())


def test_meas_geometry_villarrica() -> None:
    from controller.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[2] / "conf" / "villarrica.toml")
    g = geometry_from_config(cfg, (486, 648))
    # camera about 5 km from the summit: plume distance 4-7 km, pixel size d * 5.6 µm / 12 mm
    assert 4000 < g.plume_distance_m < 7000
    assert g.pixel_size_m() == pytest.approx(g.plume_distance_m * 5.6e-6 / 12e-3, rel=0.05)
    assert g.method == "pyplis MeasGeometry"


def test_emission_rate_is_positive_whichever_way_the_line_points() -> None:
    """Sign convention: positive in the direction the plume crosses the line, whatever the line's orientation (the
    pyplis Etna example gave only negative rates because its normal pointed against the plume)."""
    from datetime import datetime, timedelta

    from controller.sim.scene import SO2_SIGMA_EFF_CM2, SimScene
    from processing.background import BackgroundChoice
    from processing.darks import DarkLibrary
    from processing.pipeline import Calibration, PairProcessor, Setup
    from processing.registration import Registration
    from tests.processing.sim_frames import T0, sim_config

    line = (400, 40, 400, 446)
    flipped = (400, 446, 400, 40)
    cfg = sim_config(
        flow_pyrlevel=2,
        xcorr_min_window_s=15.0,
        pcs_lines=(line, line, flipped),
        pcs_line_normals=("right", "left", "right"),
    )
    scene = SimScene(cfg.sim, cfg.camera, cfg.spectrometer)
    cal = Calibration(1.0 / SO2_SIGMA_EFF_CM2, 0.0)
    proc = PairProcessor(cfg, Setup(DarkLibrary(), BackgroundChoice(0, "test"), {}, Registration(), cal))
    t0 = datetime(2024, 3, 1, 12)
    rng = np.random.default_rng(8)
    flux: dict[tuple[str, str], list[float]] = {}
    crossing: dict[tuple[str, str], set[int]] = {}
    for k in range(30):
        aa = SO2_SIGMA_EFF_CM2 * scene.column_field(T0 + 2 * k) + 0.02 * rng.standard_normal((486, 648))
        res = proc.process_aa(str(k), t0 + timedelta(seconds=2 * k), aa)
        for r in res.lines:
            flux.setdefault((r.line_id, r.method), []).append(r.flux)
            crossing.setdefault((r.line_id, r.method), set()).add(r.velocity.crossing)
    truth = scene.truth(T0)["emission_rate_kg_s"]
    for method in ("flow", "xcorr"):
        means = {lid: float(np.median(flux[(lid, method)])) for lid in "123"}
        assert all(m > 0 for m in means.values()), (method, means)
        for lid in "23":
            assert means[lid] == pytest.approx(means["1"], rel=0.1), (method, means)
        assert means["1"] == pytest.approx(truth, rel=0.25), (method, means, truth)
        # the configured normal of line 1 and 3 points one way, that of line 2 the other: the data say which
        assert crossing[("1", method)] == crossing[("3", method)] != crossing[("2", method)]


def test_pcs_lines_outside_the_image_are_a_config_error_on_every_pair_not_a_worker_crash(shared_data):
    """A small sim frame (160x120) with lines drawn for 648x486: the first pair raised ConfigError, every later
    one AttributeError (the processor was left half set up), and the worker crashed until it was disabled."""
    from datetime import datetime

    from processing.images import scan_folder
    from processing.pipeline import PairProcessor, build_setup

    cfg = Config()
    cfg = dataclasses.replace(cfg, processing=dataclasses.replace(cfg.processing, pcs_lines=((10, 10, 400, 300),)))
    scan = scan_folder(shared_data / "pairs-2019-09-18")
    processor = PairProcessor(cfg, build_setup(cfg, scan))
    aa = np.zeros((120, 160))
    for _ in range(2):
        with pytest.raises(ConfigError, match="outside 160x120"):
            processor.process_aa("k", datetime(2024, 1, 1), aa)
