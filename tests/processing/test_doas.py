"""DOAS retrieval on the real 2019-05-29 spectra, on synthetic spectra from the forward model, and bad input."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from controller.bench.spectral import bench_doas, shared_references_config
from controller.config import ProcessingConfig
from controller.errors import ProcessingError
from processing.doas import (
    DOAS_CSV_COLUMNS,
    DoasRetrieval,
    Spectrum,
    load_spectrum,
    write_doas_results,
)
from processing.references import load_ils, load_references, load_two_column

# The 12 "Plume" files of 2019-05-29 are one pointing sequence: the first six (12:44:01-06) look at clear sky
# (the fit-window intensity is ~19100 counts), the last six (12:44:07-12) through the plume (~9900 counts, the
# SO2 bands at 310-315 nm halve the light). The file names all say Plume because the original named every
# continuous-capture spectrum so.
CLEAR_TIMES = ("124401", "124402", "124403", "124404", "124405", "124406")
PLUME_TIMES = ("124407", "124408", "124409", "124410", "124411", "124412")


def spectra_config(shared_data: Path, **changes) -> ProcessingConfig:
    return replace(shared_references_config(shared_data), **changes)


@pytest.fixture(scope="module")
def retrieval(shared_data: Path) -> DoasRetrieval:
    cfg = spectra_config(shared_data)
    return DoasRetrieval(load_references(cfg), cfg)


@pytest.fixture(scope="module")
def real_results(shared_data: Path, retrieval: DoasRetrieval) -> dict[str, object]:
    folder = shared_data / "spectra-2019-05-29"
    dark = load_spectrum(next(folder.glob("*_Dark.npy")))
    out = {}
    for path in sorted(folder.glob("*_Plume.npy")):
        out[path.name.split("T")[1][:6]] = retrieval.fit(load_spectrum(path), dark)
    return out


def test_real_spectra_separate_clear_from_plume(real_results):
    assert sorted(real_results) == sorted(CLEAR_TIMES + PLUME_TIMES)
    clear = np.array([real_results[t].so2 for t in CLEAR_TIMES])
    plume = np.array([real_results[t].so2 for t in PLUME_TIMES])
    assert all(real_results[t].success for t in real_results)
    # physics.md: the plume holds about 5e18 molecules/cm²
    assert np.all((plume > 2.5e18) & (plume < 1e19)), plume
    # every plume column far above the largest clear one (the data give ~45x; 5x leaves room for noise)
    assert plume.min() > 5 * np.abs(clear).max(), (plume, clear)
    # clear-sky columns are consistent with zero within 3 sigma of their own fit error
    for t in CLEAR_TIMES:
        r = real_results[t]
        assert abs(r.so2) < 3 * r.so2_err, (t, r.so2, r.so2_err)
    # the plume series is steady (same pointing, 1 s apart): spread small against the column
    assert plume.std() < 0.1 * plume.mean()


def test_real_fit_quality_and_errors_are_sane(real_results):
    for t, r in real_results.items():
        assert 0 < r.so2_err < 1e18, t
        assert r.rms_residual < 0.05, (t, r.rms_residual)
        assert abs(r.shift_nm) < 0.5
        assert r.n_points > 100
        assert r.so2_ppmm == pytest.approx(r.so2 / 2.504e15)


def test_ppmm_conversion_uses_config_factor(shared_data, real_results):
    cfg = spectra_config(shared_data, ppmm_to_molecules_cm2=2.687e15)
    ret = DoasRetrieval(load_references(cfg), cfg)
    folder = shared_data / "spectra-2019-05-29"
    r = ret.fit(load_spectrum(folder / "2019-05-29T124408_1000ss_1coadd_Plume.npy"))
    assert r.ppmm_factor == 2.687e15
    assert r.so2_ppmm == pytest.approx(r.so2 / 2.687e15)


def _synthetic(ret: DoasRetrieval, wl: np.ndarray, rng: np.random.Generator, **truth) -> Spectrum:
    counts = ret.forward(wl, **truth)
    stray = 700.0  # flat stray light + offset everywhere: removed by the 293-296 nm window
    noisy = counts + stray + rng.normal(0.0, 1.0, wl.size) * np.sqrt(np.maximum(counts, 1.0))
    return Spectrum(wl, noisy, source="synthetic")


@pytest.mark.parametrize("so2", [2e17, 1.5e18, 5e18, 1.2e19])
def test_synthetic_spectrum_recovers_known_column(shared_data, retrieval, so2):
    wl = load_spectrum(shared_data / "spectra-2019-05-29" / "2019-05-29T124401_1000ss_1coadd_Plume.npy")
    rng = np.random.default_rng(int(so2 / 1e15))
    truth = dict(so2=so2, o3=9e18, ring=0.03, poly=(1.0, 0.15, -0.05, 0.02), shift_nm=0.07, scale=2.0e4)
    r = retrieval.fit(_synthetic(retrieval, wl.wavelengths_nm, rng, **truth))
    assert r.success
    # within a few % (and within the noise for small columns)
    assert abs(r.so2 - so2) < max(0.03 * so2, 3 * r.so2_err), (r.so2, so2, r.so2_err)
    assert abs(r.so2 - so2) < 4 * r.so2_err + 1e-3 * so2
    assert r.shift_nm == pytest.approx(0.07, abs=0.01)


def test_synthetic_noise_free_is_exact(shared_data, retrieval):
    wl = load_spectrum(shared_data / "spectra-2019-05-29" / "2019-05-29T124401_1000ss_1coadd_Plume.npy")
    counts = retrieval.forward(wl.wavelengths_nm, so2=4e18, o3=1e19, ring=-0.05, poly=(1.0, 0.1), scale=1.5e4)
    r = retrieval.fit(Spectrum(wl.wavelengths_nm, counts))
    assert r.so2 == pytest.approx(4e18, rel=1e-4)
    assert r.o3 == pytest.approx(1e19, rel=1e-3)


def test_dark_is_subtracted(shared_data, retrieval):
    folder = shared_data / "spectra-2019-05-29"
    s = load_spectrum(folder / "2019-05-29T124409_1000ss_1coadd_Plume.npy")
    dark = load_spectrum(folder / "2019-05-29T124352_1000ss_1coadd_Dark.npy")
    with_dark, stray_d = retrieval.corrected_counts(s, dark)
    without, stray = retrieval.corrected_counts(s)
    # the dark has ~1023 counts everywhere: with it subtracted, the stray level drops by that much
    assert stray - stray_d == pytest.approx(
        dark.counts[(dark.wavelengths_nm > 293) & (dark.wavelengths_nm < 296)].mean(), rel=1e-6
    )
    assert not np.allclose(with_dark, without)


def test_bad_shape_raises(retrieval):
    wl = np.linspace(280, 420, 500)
    with pytest.raises(ProcessingError, match="equal length"):
        retrieval.fit(Spectrum(wl, np.ones(499)))
    with pytest.raises(ProcessingError, match="equal length"):
        retrieval.fit(Spectrum(np.vstack([wl, wl]), np.ones((2, 500))))


def test_window_outside_wavelength_range_raises(retrieval):
    wl = np.linspace(320, 420, 800)
    with pytest.raises(ProcessingError, match="fit window 308.0-318.0 nm outside"):
        retrieval.fit(Spectrum(wl, np.full(800, 1000.0)))


def test_stray_window_outside_range_raises(retrieval):
    wl = np.linspace(300, 420, 1000)
    with pytest.raises(ProcessingError, match="stray-light window"):
        retrieval.fit(Spectrum(wl, np.full(1000, 1000.0)))


def test_saturated_fit_window_raises(shared_data, retrieval):
    s = load_spectrum(shared_data / "spectra-2019-05-29" / "2019-05-29T124401_1000ss_1coadd_Plume.npy")
    counts = s.counts.copy()
    counts[(s.wavelengths_nm > 310) & (s.wavelengths_nm < 311)] = 65535.0
    with pytest.raises(ProcessingError, match="saturated"):
        retrieval.fit(Spectrum(s.wavelengths_nm, counts, source="x.npy"))


def test_bad_spectrum_file_raises(tmp_path):
    p = tmp_path / "2019-05-29T124401_1000ss_1coadd_Plume.npy"
    np.save(p, np.zeros((3, 100)))
    with pytest.raises(ProcessingError, match=r"expected \(2, N\)"):
        load_spectrum(p)


def test_missing_reference_names_file(shared_data, tmp_path):
    cfg = spectra_config(shared_data, so2_xsec=str(tmp_path / "nope.txt"))
    with pytest.raises(ProcessingError, match="processing.so2_xsec: file not found: .*nope.txt"):
        load_references(cfg)
    with pytest.raises(ProcessingError, match="processing.ils: no file configured|instrument line shape"):
        load_references(spectra_config(shared_data, ils=""))


def test_malformed_reference_names_file(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("# header\n300.0 abc\n301.0 2\n")
    with pytest.raises(ProcessingError, match="bad.txt"):
        load_two_column(bad, "processing.o3_xsec")
    one = tmp_path / "one.txt"
    one.write_text("1\n2\n3\n4\n")
    with pytest.raises(ProcessingError, match="two columns"):
        load_two_column(one, "processing.o3_xsec")
    flat = tmp_path / "ils.txt"
    flat.write_text("0 0\n0.1 0\n0.2 0\n")
    with pytest.raises(ProcessingError, match="no positive intensity"):
        load_ils(flat)


def test_references_units_and_ils(shared_data):
    refs = load_references(spectra_config(shared_data))
    so2 = refs.so2.on_grid(np.array([310.0, 315.0]))
    assert np.all((so2 > 1e-20) & (so2 < 1e-18))  # cm²/molecule
    assert 0.4 < refs.ils.fwhm_nm < 0.9
    assert refs.ils.kernel(0.02).sum() == pytest.approx(1.0)
    with pytest.raises(ProcessingError, match="Ring.txt: covers"):
        refs.ring.on_grid(np.array([240.0, 250.0]))


def test_write_doas_results_csv(tmp_path, real_results):
    rows = [real_results[t] for t in sorted(real_results)]
    path = write_doas_results(tmp_path / "doas_results.csv", rows, 2.504e15)
    from processing.outputs import meta_path

    # units and the factor are in the sidecar: the CSV starts with its header (pandas defaults read it)
    comments = meta_path(path).read_text().splitlines()
    assert any("2.504e+15" in c and "molecules/cm2" in c for c in comments)
    import pandas as pd

    df = pd.read_csv(path, comment="#")
    assert tuple(df.columns) == DOAS_CSV_COLUMNS
    assert len(df) == 12
    assert df["Column density"].iloc[-1] == pytest.approx(rows[-1].so2, rel=1e-6)
    assert pd.to_datetime(df["Time"]).is_monotonic_increasing


def test_bench_doas_reports_figures(shared_data):
    out = bench_doas(shared_data, repeats=1)
    assert out["n_spectra"] == 12 and out["doas_ms_per_spectrum"] > 0
    assert min(out["so2_molecules_cm2"][t] for t in PLUME_TIMES) > 2.5e18
