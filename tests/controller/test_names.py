"""File names of the original PyCam: round trips, every real file name parses, malformed names say what is wrong."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.errors import FileNameError
from controller.storage.names import ImageName, SpectrumName, cell_ppmm, parse_name

times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)).map(
    lambda t: t.replace(microsecond=0, tzinfo=UTC)
)
kinds = st.one_of(
    st.sampled_from(["Plume", "Dark", "Clear", "Test"]), st.integers(0, 100_000).map(lambda n: f"{n}ppmm")
)


@given(times, st.sampled_from(["A", "B"]), st.integers(0, 64), st.integers(1, 6_000_000), kinds, st.booleans())
def test_image_name_round_trip(t, band, gain, shutter, kind, darkcorr):
    name = ImageName(t, band, gain, shutter, kind, darkcorr)
    assert ImageName.parse(str(name)) == name
    assert parse_name(str(name)) == name


@given(times, st.integers(1, 100_000), st.integers(1, 100), kinds)
def test_spectrum_name_round_trip(t, integration, coadd, kind):
    name = SpectrumName(t, integration, coadd, kind)
    assert SpectrumName.parse(str(name)) == name


def test_examples_from_the_spec():
    img = ImageName.parse("2018-03-26T144408_fltrA_1ag_1399829ss_Plume.png")
    assert (img.band, img.gain, img.shutter_us, img.kind) == ("A", 1, 1399829, "Plume")
    assert img.date_folder == "2018-03-26" and img.time_key == "2018-03-26T144408"
    spec = SpectrumName.parse("2019-05-29T124401_1000ss_1coadd_Plume.npy")
    assert (spec.integration_ms, spec.coadd) == (1000, 1)
    assert cell_ppmm(ImageName.parse("2018-03-26T143355_fltrA_1ag_1399829ss_1257ppmm.png").kind) == 1257
    assert ImageName.parse("2018-03-26T143321_fltrA_1ag_1399829ss_0ppmm_darkcorr.png").darkcorr


def test_every_real_file_name_parses(shared_data):
    files = sorted(shared_data.glob("**/*.png")) + sorted(shared_data.glob("**/*.npy"))
    station_files = [f for f in files if f.name != "registration_cv.npy"]  # a matrix, not a station file
    assert len(station_files) >= 80
    for path in station_files:
        parsed = parse_name(path.name)
        assert str(parsed) == path.name  # formatting gives back the exact name


@pytest.mark.parametrize(
    "name, says",
    [
        ("2018-03-26T144408_fltrA_1ag_1399829ss_Plume.jpg", "expected .png image or .npy spectrum"),
        ("2018-03-26T144408_fltrC_1ag_1399829ss_Plume.png", "filter field 'fltrC'"),
        ("2018-03-26T144408_fltrA_1.5ag_1399829ss_Plume.png", "gain field '1.5ag'"),
        ("2018-03-26T144408_fltrA_1ag_fastss_Plume.png", "shutter field 'fastss'"),
        ("2018-03-26T144408_fltrA_1ag_1399829ss_Smoke.png", "capture type 'Smoke'"),
        ("2018-03-26T254408_fltrA_1ag_1399829ss_Plume.png", "time field"),
        ("2018-03-26T144408_fltrA_1ag_Plume.png", "expected 5 fields"),
        ("2019-05-29T124401_1000ms_1coadd_Plume.npy", "integration field '1000ms'"),
        ("2019-05-29T124401_1000ss_onecoadd_Plume.npy", "co-add field"),
        ("2019-05-29T124401_1000ss_Plume.npy", "expected 4 fields"),
        ("registration_cv.npy", "expected 4 fields"),
        ("notes.txt", "not a station data file"),
    ],
)
def test_malformed_names_say_what_is_wrong(name, says):
    if name.endswith(".jpg"):
        with pytest.raises(FileNameError, match="must end in .png"):
            ImageName.parse(name)
    with pytest.raises(FileNameError) as info:
        parse_name(name)
    assert says in str(info.value)
    assert info.value.name == name


# Issue 11 finding 7: one file, one name; nothing a peer sends may raise anything but FileNameError.


def test_arabic_indic_digits_are_not_a_second_name_for_a_file():
    canonical = "2019-09-18T074335_fltrB_1ag_199994ss_Plume.png"
    assert parse_name(canonical)
    for forged in (
        "2019-09-18T074335_fltrB_\u0661ag_199994ss_Plume.png",
        "\u0662019-09-18T074335_fltrB_1ag_199994ss_Plume.png",
        "2019-09-18T074335_\u0661\u0660\u0660ss_1coadd_\u0661\u0662ppmm.npy",
    ):
        with pytest.raises(FileNameError):
            parse_name(forged)


def test_leading_zeros_are_not_a_second_name_for_a_file():
    assert str(parse_name("2019-09-18T074335_fltrB_1ag_199994ss_Plume.png")).startswith("2019")
    for forged in (
        "2019-09-18T074335_fltrB_001ag_199994ss_Plume.png",
        "2019-09-18T074335_fltrB_1ag_0199994ss_Plume.png",
        "2019-09-18T074335_0100ss_1coadd_Plume.npy",
        "2019-09-18T074335_100ss_01coadd_0412ppmm.npy",
    ):
        with pytest.raises(FileNameError, match="canonical|integer|not one of"):
            parse_name(forged)


@pytest.mark.parametrize("digits", [10, 4300, 5000])
def test_a_4300_digit_field_is_a_file_name_error_not_a_crash(digits):
    long = "9" * digits
    for name in (
        f"2019-09-18T074335_fltrB_{long}ag_199994ss_Plume.png",
        f"2019-09-18T074335_{long}ss_1coadd_Plume.npy",
        f"2019-09-18T074335_100ss_1coadd_{long}ppmm.npy",
    ):
        with pytest.raises(FileNameError):
            parse_name(name)


def test_nine_digit_fields_still_parse():
    name = "2019-09-18T074335_fltrB_1ag_999999999ss_123456789ppmm.png"
    assert parse_name(name).shutter_us == 999_999_999
