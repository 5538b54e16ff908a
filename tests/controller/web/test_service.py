"""The web service in-process: access control as the control port's, the JSON API, thumbnails, metrics."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import cv2
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.config import config_from_dict
from controller.storage.datastore import DataStore
from controller.storage.index import StoreIndex
from controller.storage.names import ImageName
from controller.web.service import WebService

DAY = "2024-03-01"
STATUS = {
    "state": "acquire", "machines": {"station": "acquire", "acquisition.A": "continuous"}, "captures": {"A": 7},
    "storage": {"free_mb": 100.0, "paused": False}, "temperatures": {"cpu-thermal": 41.5},
    "clock": {"offset_ms": 2.0, "offset_ok": True, "source": {"best": "ntp", "synchronised": True}},
    "link": {"connected": True}, "fault_counts": {"link_lost": 2}, "worker_pairs": 5,
    "power_board": {"board": "wittypi4", "input_voltage_v": 12.3, "output_voltage_v": 5.1, "temperature_c": 20.0},
    "delivery": {"backlog_files": 3, "backlog_bytes": 1000, "lag_s": 12.5, "delivered_files": 9, "failures_in_a_row": 0,
                 "bytes_sent": 5000, "bytes_matched": 700},
}  # fmt: skip


def _cfg(tmp: Path, **network):
    return config_from_dict(
        {
            "network": network,
            "storage": {"data_root": str(tmp / "data"), "state_dir": str(tmp / "state")},
            "web": {"enabled": True, "bind": "127.0.0.1", "port": 0, "thumbnail_px": 64},
        }
    )


async def _serve(tmp: Path, fn, **network):
    index = StoreIndex(tmp / "data")  # the data store's, in the supervisor
    svc = WebService(_cfg(tmp, **network), lambda: dict(STATUS), tmp / "processed", lambda: DAY, lambda: index)
    await svc.start()
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{svc.port}") as http:
            return await fn(http, svc)
    finally:
        await svc.stop()


def _get(tmp, path, **network):
    async def fn(http, svc):
        async with http.get(path) as r:
            return r.status, await r.read(), dict(r.headers)

    return asyncio.run(_serve(tmp, fn, **network))


def test_refuses_peers_outside_the_allowed_networks(tmp_path):
    assert _get(tmp_path, "/api/status", allowed_networks=["10.0.0.0/8"])[0] == 403
    assert _get(tmp_path, "/api/status")[0] == 200  # default networks include loopback


@pytest.mark.parametrize(
    "path,headers,code",
    [("/api/status", {}, 401), ("/api/status?token=wrong", {}, 401), ("/api/status?token=s3cret", {}, 200),
     ("/metrics", {"Authorization": "Bearer s3cret"}, 200), ("/", {"Authorization": "Bearer nope"}, 401)],
)  # fmt: skip
def test_needs_the_control_port_token_when_one_is_set(tmp_path, path, headers, code):
    async def fn(http, svc):
        async with http.get(path, headers=headers) as r:
            return r.status

    assert asyncio.run(_serve(tmp_path, fn, auth_token="s3cret")) == code


def test_read_only(tmp_path):
    async def fn(http, svc):
        async with http.post("/api/status", data=b"{}") as r:
            return r.status

    assert asyncio.run(_serve(tmp_path, fn)) == 405


def test_status_json_and_metrics_come_from_one_snapshot(tmp_path):
    code, body, _ = _get(tmp_path, "/api/status")
    data = json.loads(body)
    assert code == 200 and data["state"] == "acquire" and data["today"] == DAY and data["daily_plot"] is None
    code, body, headers = _get(tmp_path, "/metrics")
    assert code == 200 and headers["Content-Type"].startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(body.decode()) for s in fam.samples}  # fmt: skip
    assert samples[("pycam_station_state", (("state", "acquire"),))] == 1
    assert samples[("pycam_captures_total", (("device", "A"),))] == 7
    assert samples[("pycam_delivery_lag_seconds", ())] == 12.5
    assert samples[("pycam_delivery_backlog_files", ())] == 3
    assert samples[("pycam_delivery_bytes_sent_total", ())] == 5000
    assert samples[("pycam_clock_synchronised", ())] == 1
    assert samples[("pycam_faults_total", (("kind", "link_lost"),))] == 2
    assert samples[("pycam_disk_free_bytes", ())] == 100 * 2**20
    assert samples[("pycam_voltage_volts", (("line", "input"),))] == 12.3
    assert samples[("pycam_temperature_celsius", (("sensor", "wittypi4_board"),))] == 20.0
    assert all(name.startswith("pycam_") for name, _ in samples)


def _write_products(processed: Path) -> None:
    from processing.outputs import EMISSION_COLUMNS, CsvSeries, emission_csv_name

    csv = CsvSeries(processed / emission_csv_name("0", "flow"), EMISSION_COLUMNS, ["# SO2 in kg/s"])
    for i, flux in enumerate((0.31, 0.33)):
        csv.append([f"{DAY} 11:0{i}:00", flux, 0.05, 5.0, 0.5, 1.0, 1.0, 0.1, "doas"])
    csv.append(["2024-03-02 11:00:00", 9.9, 0.05, 5.0, 0.5, 1.0, 1.0, 0.1, "doas"])  # another day
    (processed / f"plot_{DAY}.png").write_bytes(cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes())


def test_emissions_of_a_day_and_its_plot(tmp_path):
    processed = tmp_path / "processed"
    _write_products(processed)

    async def fn(http, svc):
        out = {}
        for path in (f"/api/emissions?day={DAY}", "/api/emissions?day=2024-3-1", f"/plot.png?day={DAY}",
                     "/plot.png?day=2024-03-05", "/metrics", "/api/status"):  # fmt: skip
            async with http.get(path) as r:
                out[path] = (r.status, await r.read())
        return out

    got = asyncio.run(_serve(tmp_path, fn))
    data = json.loads(got[f"/api/emissions?day={DAY}"][1])
    rows = data["emissions"]["emission_rates_line0_flow"]
    assert [r["flux_(kg/s)"] for r in rows] == [0.31, 0.33] and data["plot"] == f"plot_{DAY}.png"
    assert got["/api/emissions?day=2024-3-1"][0] == 400
    assert got[f"/plot.png?day={DAY}"][0] == 200 and got["/plot.png?day=2024-03-05"][0] == 404
    assert b'pycam_emission_rate_kg_per_s{series="emission_rates_line0_flow"} 0.33' in got["/metrics"][1]
    assert json.loads(got["/api/status"][1])["daily_plot"] == f"plot_{DAY}.png"


def test_thumbnails_of_the_newest_a_b_and_aa(tmp_path):
    store = DataStore(tmp_path / "data")
    t0 = datetime(2024, 3, 1, 11, 0, 0, tzinfo=UTC)
    rng = np.random.default_rng(1)
    for s in (0, 4):
        t = t0.replace(second=s)
        for band, level in (("A", 300), ("B", 600)):
            store.save_image(ImageName(t, band, 1, 10000, "Plume"), rng.integers(level, level + 50, (120, 160)))
    store.save_image(ImageName(t0.replace(second=8), "A", 1, 10000, "Plume"), np.full((120, 160), 500))

    async def fn(http, svc):
        out = {}
        for which in ("A", "B", "AA", "C"):
            async with http.get(f"/img/{which}.png") as r:
                out[which] = (r.status, await r.read(), r.headers.get("X-Source-File"))
        async with http.get("/api/status") as r:
            out["images"] = (await r.json())["images"]
        return out

    got = asyncio.run(_serve(tmp_path, fn))
    assert got["A"][2].startswith("2024-03-01T110008") and got["B"][2].startswith("2024-03-01T110004")
    assert got["AA"][2].startswith("2024-03-01T110004")  # the newest slot with both bands
    assert got["C"][0] == 404
    for which, channels in (("A", None), ("AA", 3)):
        img = cv2.imdecode(np.frombuffer(got[which][1], np.uint8), cv2.IMREAD_UNCHANGED)
        assert max(img.shape[:2]) == 64 and (img.ndim == 3) == (channels == 3)
    assert got["images"] == {"A": got["A"][2], "B": got["B"][2], "AA": got["AA"][2]}


def test_no_images_yet_is_a_404_and_none_in_status(tmp_path):
    assert _get(tmp_path, "/img/AA.png")[0] == 404
    assert json.loads(_get(tmp_path, "/api/status")[1])["images"] == {"A": None, "B": None, "AA": None}


def test_a_day_folder_of_daily_products_is_read_once_not_beside_the_running_csv(tmp_path):
    """The worker keeps a running CSV and the day's own copy under daily/YYYY-MM-DD/: rows are not doubled."""
    processed = tmp_path / "processed"
    _write_products(processed)
    _write_products(processed / "daily" / DAY)
    from controller.web.results import emissions, latest_emissions

    rows = emissions(processed, DAY)
    assert list(rows) == ["emission_rates_line0_flow"] and len(rows["emission_rates_line0_flow"]) == 2
    assert latest_emissions(processed, DAY) == {"emission_rates_line0_flow": 0.33}
