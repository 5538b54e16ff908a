"""The pair chain's scratch buffers and in-thread light-dilution fits (processing.pipeline.PairProcessor._band):
faster, never a different or a shared result."""

from __future__ import annotations

import numpy as np
import pytest

from controller.config import load_config
from processing.images import scan_folder
from processing.pairing import pair_images
from processing.pipeline import PairProcessor, build_setup


@pytest.fixture(scope="module")
def villarrica(repo_root, shared_data):
    cfg = load_config(repo_root / "conf" / "villarrica.toml")
    scan = scan_folder(shared_data / "villarrica-2018-03-26")
    pairs, _ = pair_images(scan.plume, cfg.processing.pair_tolerance_s)
    return cfg, build_setup(cfg, scan), pairs


def test_aa_of_a_pair_is_not_overwritten_by_the_next_pairs(villarrica) -> None:
    """The bands' intensities, optical depths and registered B live in buffers reused pair after pair: the AA
    handed out (kept by the worker's live calibration) must not be one of them."""
    cfg, setup, pairs = villarrica
    proc = PairProcessor(cfg, setup)
    first, _ = proc.aa_image(pairs[0])
    kept = first.copy()
    second, _ = proc.aa_image(pairs[1])
    third, _ = proc.aa_image(pairs[2])
    assert np.array_equal(first, kept)
    assert not np.shares_memory(first, second) and not np.shares_memory(second, third)
    assert all(not np.shares_memory(third, buf) for buf in proc._buffers.values())


def test_dilution_fits_in_the_band_threads_give_the_same_aa(villarrica) -> None:
    """The first pair's bands are fitted after both are read (the processor learns the image shape then); later
    pairs' in their own threads, their optical depths computed in place: the same pair gives the same AA, to the
    last bit, and the same extinction coefficients."""
    cfg, setup, pairs = villarrica
    proc = PairProcessor(cfg, setup)
    once, _ = proc.aa_image(pairs[3])  # fits after the bands
    fits = dict(proc.dilution.fits)
    again, _ = proc.aa_image(pairs[3])  # fits in the band threads
    assert proc.dilution is not None and proc.dilution_state()["corrected"]
    assert np.array_equal(once, again)
    assert {b: f.ext for b, f in proc.dilution.fits.items()} == {b: f.ext for b, f in fits.items()}
