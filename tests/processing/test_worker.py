"""The processing worker child process: backlog, notifications, crash and restart without duplicate rows."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from controller.config import config_from_dict, load_config
from processing.events import Backlog, Idle, PairDone, Stopped
from processing.outputs import read_series
from processing.worker import Journal, ProcessingWorker

SEQ = "villarrica-2018-03-26"


def _data_root(shared_data: Path, tmp_path: Path, n_plume: int | None = None) -> Path:
    """A station data root (date folder) of links to the real Villarrica files."""
    day = tmp_path / "data" / "2018-03-26"
    day.mkdir(parents=True)
    src = shared_data / SEQ
    plume = sorted((src / "Seq_1").glob("*.png"))
    for f in plume[:n_plume] + [f for f in (src / "Cal_1").glob("*.png") if "_Dark" in f.name or "_Clear" in f.name]:
        (day / f.name).symlink_to(f)
    return tmp_path / "data"


def _rows(out: Path) -> dict[str, list]:
    return {p.name: read_series(p)["datetime"] for p in sorted(out.glob("emission_rates_*.csv"))}


def test_journal_survives_restart_and_trims(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.json")
    j.mark("pairs", "2024-01-01T120000")
    j.mark("pairs", "2024-01-05T120000")  # the first is now older than the kept horizon
    j2 = Journal(tmp_path / "j.json")
    assert ("pairs", "2024-01-05T120000") in j2 and ("pairs", "2024-01-01T120000") not in j2


@pytest.mark.slow
def test_worker_restarts_after_crash_without_duplicate_rows(shared_data: Path, tmp_path: Path, repo_root: Path) -> None:
    cfg = load_config(repo_root / "conf" / "villarrica.toml")
    root = _data_root(shared_data, tmp_path)
    out = tmp_path / "out"
    import threading

    crashes = []
    crashed = threading.Event()
    # The worker only reports the crash; restarting is the supervisor's (WorkerService): here the test restarts it.
    worker = ProcessingWorker(cfg, root, out, crashed=lambda code: (crashes.append(code), crashed.set()))
    worker.start()
    try:
        for _ in range(3):
            assert worker.wait_event("pair", 120) is not None
        first_pid = worker.pid
        os.kill(first_pid, signal.SIGKILL)  # the child we started, by its pid
        assert crashed.wait(120)
        worker.start()
        ev = worker.wait_event("idle", 120)  # the restarted child drained the rest of the backlog
        assert ev is not None
        assert worker.state == "running" and worker.pid != first_pid and worker.restarts == 1
        assert crashes == [-signal.SIGKILL]
    finally:
        worker.stop()
    assert worker.state == "stopped"
    rows = _rows(out)
    assert rows, "no emission rows written"
    for name, times in rows.items():
        assert len(times) == len(set(times)), f"duplicate rows in {name}"
    journal = Journal(out / "worker_journal.json")
    assert len(journal.done["pairs"]) == 10


@pytest.mark.slow
def test_worker_processes_notified_pairs(shared_data: Path, tmp_path: Path, repo_root: Path) -> None:
    cfg = load_config(repo_root / "conf" / "villarrica.toml")
    root = _data_root(shared_data, tmp_path, n_plume=4)  # 144408 A+B, 144412 B, 144416 A
    out = tmp_path / "out"
    worker = ProcessingWorker(cfg, root, out)
    worker.start()
    try:
        assert worker.wait_event("idle", 120) is not None
        assert len(Journal(out / "worker_journal.json").done["pairs"]) == 1
        # the B half of 144416 lands: the supervisor tells the worker its name
        src = shared_data / SEQ / "Seq_1" / "2018-03-26T144416_fltrB_1ag_99957ss_Plume.png"
        (root / "2018-03-26" / src.name).symlink_to(src)
        worker.notify(src.name)
        ev = worker.wait_event("pair", 60)
        assert ev is not None and ev.key == "2018-03-26T144416"
        worker.notify("../../etc/passwd")  # not a station name: ignored, never a path
        worker.notify(src.name)  # a duplicate notification does not reprocess
        worker.rescan()
        assert worker.wait_event("idle", 60) == Idle(0)
    finally:
        worker.stop()
    assert all(len(t) == len(set(t)) for t in _rows(out).values())


@pytest.mark.slow  # ~30 s: 34 rendered pairs and spectra, DOAS fits
def test_worker_uses_live_doas_calibration_and_continues_it_after_restart(tmp_path: Path) -> None:
    """Sim pairs and spectra through the worker's child state (in-process): the DOAS calibration takes over from
    the default slope once the FOV is found, each row records its method, and a restarted worker continues with
    the saved FOV and window instead of searching again."""
    import numpy as np

    from processing.livecal import STATE_NAME
    from processing.worker import _ChildState
    from tests.processing.sim_frames import T0, doas_sim_config, render_sequence, render_spectra

    cfg = doas_sim_config(tmp_path, flow_pyrlevel=2, velocity_method="xcorr", ring_buffer=20)
    data, out = tmp_path / "data", tmp_path / "out"
    scene = render_sequence(cfg, data, n_pairs=28, period_s=2.0)
    # the spectrometer starts 16 s after the cameras: pairs wait (held) for the DOAS calibration only while the FOV
    # search buffers their frames; older ones keep the default slope
    render_spectra(scene, data, 28, start=8)
    state = _ChildState(cfg, data, out, None)
    state.full_scan()
    assert state.livecal is not None and state.livecal.dcal.fov is not None
    assert (out / STATE_NAME).exists()
    path = out / "emission_rates_line1_xcorr.csv"
    rows = read_series(path)
    methods = rows["calibration"]
    assert "default" in methods and "doas" in methods, methods
    assert methods.index("doas") > max(i for i, m in enumerate(methods) if m == "default")  # no going back
    x = cfg.processing.pcs_lines[0][0]

    def rel_err(rows: dict, method: str) -> float:
        sel = [i for i, m in enumerate(rows["calibration"]) if m == method]
        times = [rows["datetime"][i] for i in sel]
        truth = [scene.flux_through_column(T0 + _offset(t), x) for t in times]
        return float(np.mean([rows["flux_(kg/s)"][i] for i in sel]) / np.mean(truth) - 1)

    assert abs(rel_err(rows, "doas")) < 0.10
    assert rel_err(rows, "default") > 0.3  # the default slope is 1.5x the scene's truth
    cal = read_series(out / "calibration_series.csv")
    assert set(cal["method"]) == {"doas"} and len(cal["datetime"]) >= 5

    # a restart: the new child state continues with the saved FOV; new pairs and spectra are calibrated at once
    render_sequence(cfg, data, n_pairs=34, period_s=2.0, darks=False)
    render_spectra(scene, data, 34)
    restarted = _ChildState(cfg, data, out, None)
    restarted.full_scan()
    assert restarted.livecal.dcal.fov.cx == state.livecal.dcal.fov.cx
    rows = read_series(path)
    assert len(rows["datetime"]) == len(set(rows["datetime"]))
    assert rows["calibration"][-6:] == ["doas"] * 6


@pytest.mark.slow  # ~40 s: 28 rendered pairs and spectra, DOAS fits, twice
def test_worker_restarted_before_its_fov_search_still_calibrates_the_pairs_it_held(tmp_path: Path) -> None:
    """A worker killed while its pairs wait for the FOV search: the restarted one redoes the held pairs and matches
    them to the DOAS results of their spectra (journalled as done, kept in the calibration state), so they are
    calibrated by DOAS like an uninterrupted day's (they were written with the fallback slope instead)."""
    from processing.livecal import STATE_NAME
    from processing.worker import _ChildState
    from tests.processing.sim_frames import doas_sim_config, render_sequence, render_spectra

    cfg = doas_sim_config(tmp_path, flow_pyrlevel=2, velocity_method="flow", ring_buffer=20)
    data, out = tmp_path / "data", tmp_path / "out"
    scene = render_sequence(cfg, data, n_pairs=12, period_s=2.0)
    render_spectra(scene, data, 12)
    first = _ChildState(cfg, data, out, None)
    first.full_scan()
    assert first.livecal.dcal.fov is None and len(first.stream.held) == 12  # waiting for 20 frames
    assert (out / STATE_NAME).exists()
    assert not (out / "emission_rates_line1_flow.csv").exists()
    del first  # killed: its frames are gone
    render_sequence(cfg, data, n_pairs=28, period_s=2.0, darks=False)
    render_spectra(scene, data, 28)
    restarted = _ChildState(cfg, data, out, None)
    restarted.full_scan()
    restarted.stream.flush()
    assert restarted.livecal.dcal.fov is not None
    rows = read_series(out / "emission_rates_line1_flow.csv")
    assert len(rows["datetime"]) == len(set(rows["datetime"])) >= 25
    uninterrupted = _ChildState(cfg, data, tmp_path / "uninterrupted", None)
    uninterrupted.full_scan()
    uninterrupted.stream.flush()
    same = read_series(tmp_path / "uninterrupted" / "emission_rates_line1_flow.csv")
    assert rows["datetime"] == same["datetime"]
    # the first pairs precede the first usable calibration point (min_points spectra) in both runs
    assert rows["calibration"] == same["calibration"] and rows["calibration"].count("doas") >= 20


def _offset(t) -> float:  # noqa: ANN001
    """Seconds from the sim epoch T0 to a row's time (rows are naive UTC)."""
    from datetime import UTC, datetime

    from tests.processing.sim_frames import T0

    return (t - datetime.fromtimestamp(T0, UTC).replace(tzinfo=None)).total_seconds()


def test_child_events_are_read_continuously_and_the_buffer_stays_bounded(tmp_path: Path) -> None:
    """Thousands of pair events: every one reaches on_event, at most EVENTS_KEPT stay buffered for wait_event."""
    from processing.worker import EVENTS_KEPT

    class Reader:
        def __init__(self, events: list) -> None:
            self.events = iter(events)

        def recv(self):  # noqa: ANN202
            try:
                return next(self.events)
            except StopIteration:
                raise EOFError from None

        def close(self) -> None:
            pass

    seen = []
    worker = ProcessingWorker(config_from_dict({}), tmp_path / "data", tmp_path / "out", on_event=seen.append)
    n = 5 * EVENTS_KEPT
    worker._pump(Reader([Backlog(n)] + [PairDone(f"k{i}", 1) for i in range(n)] + [Idle(n)]))
    assert len(seen) == n + 2 and worker.events_received == n + 2
    assert worker.events_buffered == EVENTS_KEPT
    assert worker.wait_event("idle", 0.1) == Idle(n)
    assert worker.events_buffered == 0 and worker.wait_event("pair", 0.05) is None


def test_child_says_backlog_once_and_idle_when_its_queue_empties(tmp_path: Path, monkeypatch) -> None:
    """The child loop (in-process, a fake state): a burst of notifications -> one backlog, one idle, nothing per
    pair, and a requested rescan answers with its token."""
    import queue as stdqueue

    from processing import worker as worker_mod

    class Events:
        def __init__(self) -> None:
            self.sent: list = []

        def send(self, event) -> None:  # noqa: ANN001
            self.sent.append(event)

    class FakeState(worker_mod._ChildState):
        def __init__(self, cfg, data_root, out_dir, events) -> None:  # noqa: ANN001
            self.events = events
            self.stored: list[str] = []

        def full_scan(self, token=None) -> None:  # noqa: ANN001
            self.emit(Idle(0, token))

        def on_stored(self, name: str) -> None:
            self.stored.append(name)

    monkeypatch.setattr(worker_mod, "_ChildState", FakeState)
    monkeypatch.setattr(worker_mod, "fix_mmap_threshold", lambda: None)
    commands: stdqueue.Queue = stdqueue.Queue()
    n = 4 * worker_mod.BACKLOG_PAIRS * 2
    for i in range(n):
        commands.put(("stored", f"file{i}"))
    commands.put(("rescan", 3))
    commands.put(("stop",))
    events = Events()
    worker_mod.run_child(config_from_dict({}), str(tmp_path), str(tmp_path / "out"), commands, events)
    kinds = [e.kind for e in events.sent]
    assert kinds == ["idle", "backlog", "idle", "idle", "stopped"], events.sent
    assert events.sent[1] == Backlog((n + 1) // 2) and events.sent[3] == Idle(0, 3) and events.sent[4] == Stopped()
