"""The status page in a real browser: Debian's headless Chromium loads it from a running sim master, the page's
script fills the station state into the DOM from /api/status, no console errors, and a screenshot is kept."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO_ROOT / "test-artifacts"
STATION_STATES = {"boot", "sync", "acquire", "degraded", "paused", "process", "sleep", "shutdown", "fault", "diagnose"}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)"),
]


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / f"chromium-profile-{len(list(tmp.glob('chromium-profile-*')))}"
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=8000", *args,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def console_messages(stderr: str) -> list[str]:
    """Chromium's console messages (errors, uncaught exceptions, failed loads) from its stderr log."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def test_console_check_sees_a_script_error(tmp_path):
    """The console check itself: a page with an uncaught error is caught (so an empty list means something)."""
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>notDefined();</script></body></html>")
    r = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert any("notDefined" in m for m in console_messages(r.stderr))


def _todays_products(processed: Path) -> str:
    """Today's emission CSV, DOAS CSV and plot as the worker writes them (the master below runs no worker)."""
    from datetime import UTC, datetime, timedelta

    import cv2
    import numpy as np

    from processing.doas import DOAS_CSV_COLUMNS
    from processing.outputs import EMISSION_COLUMNS, CsvSeries, emission_csv_name

    now = datetime.now(UTC).replace(microsecond=0)
    day = now.strftime("%Y-%m-%d")
    start = now.replace(hour=0, minute=0, second=0) if now.hour == 0 else now - timedelta(hours=1)
    flux = CsvSeries(processed / emission_csv_name("0", "flow"), EMISSION_COLUMNS)
    doas = CsvSeries(processed / "doas_results.csv", DOAS_CSV_COLUMNS)
    for i in range(12):
        t = (start + timedelta(minutes=5 * i)).strftime("%Y-%m-%d %H:%M:%S")
        flux.append([t, 0.3 + 0.02 * i, 0.05, 5.0, 0.5, 1.0, 1.0, 0.1, "doas"])
        doas.append([t, 2.504e17 * (1 + i), 1.0e16, 0.0])  # 100 ppm·m steps
    plot = np.full((200, 400, 3), 255, np.uint8)
    cv2.putText(plot, f"plot {day}", (20, 100), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 2)
    cv2.imwrite(str(processed / f"plot_{day}.png"), plot)
    return day


def test_status_page_in_chromium_shows_the_station_state_without_console_errors(tmp_path, sim_master):
    master = sim_master()
    status = master.wait(
        lambda s: s["state"] in ("acquire", "degraded") and (s.get("images") or {}).get("A"), 120,
        "the master acquiring with an A image",
    )  # fmt: skip
    r = chromium(tmp_path, "--dump-dom", master.url)
    assert r.returncode == 0, r.stderr[-2000:]
    m = re.search(r'id="station-state">([^<]*)<', r.stdout)
    assert m, r.stdout[:2000]
    shown = m.group(1)
    assert shown in STATION_STATES, f"the page shows {shown!r}, not a station state (its script did not run?)"
    after = master.status()
    assert shown in (status["state"], after["state"])
    assert 'id="img-A"' in r.stdout and "img/A.png" in r.stdout  # the thumbnail is wired in
    assert re.search(r"<td>acquisition.A</td><td>\w+</td>", r.stdout), "machines table not filled"
    assert "No emission-rate plot for" in r.stdout  # processing off: the fallback message, not a broken image
    assert console_messages(r.stderr) == []

    # With today's products (as the worker writes them): the plot, the latest rate, both series drawn.
    day = _todays_products(tmp_path / "processed")
    r = chromium(tmp_path, "--dump-dom", master.url)
    assert f"plot.png?day={day}" in r.stdout and "No emission-rate plot" not in r.stdout
    assert "emission_rates_line0_flow: 0.520 kg/s" in r.stdout
    assert r.stdout.count("<polyline") == 2, "the emission and DOAS series are not drawn"
    assert "12 spectra today; latest 3.005e+18 ± 1.000e+16 molecules/cm² (1200 ppm·m)" in r.stdout
    assert console_messages(r.stderr) == []

    ARTIFACTS.mkdir(exist_ok=True)
    shot = tmp_path / "status-page.png"
    r = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1800", "--hide-scrollbars", master.url)
    assert shot.is_file() and shot.stat().st_size > 10_000, r.stderr[-2000:]
    assert console_messages(r.stderr) == []
    shutil.copy(shot, ARTIFACTS / "status-page.png")
