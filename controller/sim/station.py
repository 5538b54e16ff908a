"""`pycam sim station`: a master and a slave supervisor as separate processes, simulated hardware, a compressed day.

Both processes run `pycam run` with a ScaledClock sharing one start epoch and factor. As root with `ip netns`
available they run in two network namespaces joined by a veth pair (a real network between two "Pis"); otherwise
on loopback, where the slave reaches the master through a fault proxy so a link drop can be injected.

Timeline (sim time): boot and sync, the daily dark series, the acquisition window (`hours` long), the process phase,
shutdown. The summary compares what the Pis captured (their capture journals) with what the master stored, and the
worker's emission rates with the scene's truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from controller.link.auth import create_key
from controller.logging import get_logger
from controller.sim.faultdrive import drive_faults
from controller.sim.host import (
    DATA_FS,
    NETNS,
    NETNS_ADDR,
    NETNS_PORTS,
    data_fs_marks,
    mount_tmpfs,
    netns_available,
    netns_down,
    netns_up,
    unmount_keep_copy,
)
from controller.sim.observe import (
    observatory_summary,
    report_progress,
    screenshot_page,
    start_observatory,
    web_and_delivery_config,
)
from controller.sim.pace import MIN_FRACTION, start_pace
from controller.sim.procs import Proc, ProcessMonitor
from controller.sim.scene import ILS_FWHM_NM, SIM_AIR, station_dilution
from controller.sim.summary import check_fault_visibility, summarize

log = get_logger("sim.station")


DAY = datetime(2024, 3, 1, tzinfo=UTC)
WINDOW_START = DAY + timedelta(hours=11)
LEAD = timedelta(minutes=10)  # sim time from boot to the window: sync and the dark series fit in it
DARK_BEFORE = timedelta(minutes=5)


# The sim scene is slowed so the 60 s slots see the plume move as far as 2 s slots at 8 m/s would (about 7 px):
# the same image motion the processing is validated on, with 30x fewer slots to render and process.
SIM_WIND_M_S = 0.27

SIM_EMISSION_KG_S = 0.34

SIM_PERIOD_S = 60.0
# What the processing is told: a surveyed plume distance (the scene's is 5000 m) with its error, never the scene's.
SIM_PLUME_DISTANCE_M = 4950.0
SIM_PLUME_DISTANCE_ERR_M = 150.0


# The shared reference spectra (sao2010, SO2, O3, Ring), next to the repository as in the project's layout.
REFERENCES_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "references"


REFERENCE_FILES = {
    "solar_reference": "sao2010.txt", "so2_xsec": "SO2_293K.txt", "o3_xsec": "O3_Voigt_223K.txt",
    "ring_spectrum": "Ring.txt",
}  # fmt: skip


SIM_ILS_NAME = "sim_gaussian_ils.txt"


# The cross-correlation speed's ring buffer (processing.ring_buffer): about 20 min of 60 s slots; no speed before
# it spans 15 min (the lag between its lines is ~3 min; 8 slots read it short: 0.7 m/s for 0.27 seen).
SIM_RING_BUFFER, SIM_XCORR_MIN_WINDOW_S = 20, 900.0


# The DOAS calibration's FOV search waits for this many pairs matched to spectra (processing.fov_frames), each slot's
# spectrum co-adds SIM_SPECTRA_COADD scans: with 20 single spectra (3-4 % column noise) the FOV was 5-12 px off across
# the plume, with 100 still up to 10 px; co-added, 60-100 find it within 3 px (tests/processing/test_fov_station.py).
# On whole station days 10 scans left the centre 0-3 px off across the plume (2 of 16 days at 3 px: the check's edge);
# 20 scans (20-30 s of a 60 s slot) found it 0-2 px off on four of those days.
SIM_FOV_FRAMES, SIM_SPECTRA_COADD = 100, 20


@dataclass
class Fault:
    """A fault injected `at_s` real seconds after the window opens."""

    # kill_slave, kill_master, kill_worker (the master's processing child), drop_link, unplug, clock_step,
    # garbage_ext, fill_disk, forged_peer, restart_master_behind (kill -9, restarted with its clock behind_s sim
    # seconds behind its data), singles (TPA/TPB/TPS during continuous capture), abuse_ext (controller/sim/abuse.py)
    kind: str
    at_s: float
    args: dict = field(default_factory=dict)
    done_at: float | None = None
    recovered_after_s: float | None = None


@dataclass
class StationRun:
    hours: float = 2.0
    out: Path = Path("sim-station")
    real_budget_s: float = 75.0  # real seconds the acquisition window lasts
    period_s: float = SIM_PERIOD_S
    seed: int = 1
    netns: str = "auto"  # auto, on, off
    faults: list[Fault] = field(default_factory=list)
    image_size: tuple[int, int] = (648, 486)
    processing: bool = True
    log_level: str = "info"
    data_fs_mb: int | None = None  # root only: the master's data root on a tmpfs of this size (disk-full faults)
    spectrometer: bool = True
    ext_token: str = ""  # the master's network.auth_token (the soak sets one: AUTH guessing is part of its abuse)
    observatory: bool = True  # a simulated observatory (real sshd) the master delivers to; page on in [web]
    progress: Callable[[str], None] | None = None  # gets a progress line every few seconds while it runs
    screenshot: Path | None = None  # a screenshot of the status page (headless Chromium) at 3/4 of the window
    hazy: bool = False  # light dilution between plume and station (scene.SIM_AIR); the default day is clear air


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str | Path):
        return json.dumps(str(v))
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def write_toml(path: Path, data: dict) -> None:
    lines = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")


def _free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def write_scene_ils(path: Path) -> Path:
    """The sim spectrometer's instrument line shape (a Gaussian of the scene's FWHM) as an ILS file."""
    import numpy as np

    sigma = ILS_FWHM_NM / (2 * np.sqrt(2 * np.log(2)))
    x = np.arange(-2.0, 2.0001, 0.01)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, np.column_stack([x, np.exp(-0.5 * (x / sigma) ** 2)]))
    return path


def references_available(references: Path = REFERENCES_DIR) -> bool:
    return all((references / f).is_file() for f in REFERENCE_FILES.values())


def doas_settings(out: Path, references: Path = REFERENCES_DIR) -> tuple[dict, dict] | None:
    """(sim, processing) config entries that make the scene render with the shared references and the worker
    retrieve and calibrate with the same ones (and the scene's ILS); None when the references are missing."""
    if not references_available(references):
        log.warning("sim_station_no_references", folder=str(references), calibration="default slope")
        return None
    processing = {k: str(references / f) for k, f in REFERENCE_FILES.items()}
    processing["ils"] = str(write_scene_ils(out / SIM_ILS_NAME))
    return {"references_dir": str(references)}, processing


def station_configs(run: StationRun, link_port: int, ext_port: int, hosts: tuple[str, str]) -> tuple[dict, dict]:
    """The master's and the slave's config dicts for this run.

    With the shared references present (and a spectrometer) the worker calibrates by DOAS (the spectrometer's
    FOV found in the images, AA fitted against its columns), as a station does; the configured default slope (not
    the scene's) serves pairs the DOAS calibration does not reach, and the day when the references are missing."""
    minutes = round(run.hours * 60)
    end = WINDOW_START + timedelta(minutes=minutes)
    dark = WINDOW_START - DARK_BEFORE
    if end.date() != WINDOW_START.date():
        raise ValueError("--hours must keep the window within the day (at most 12 h)")
    out = run.out.resolve()
    scale = (LEAD.total_seconds() + minutes * 60) / (run.real_budget_s + 8.0)
    common = {
        "network": {
            "master_host": hosts[0], "link_bind": hosts[0], "ext_bind": hosts[0], "ext_port_fallbacks": [],
            "heartbeat_s": 1.0, "link_timeout_s": 4.0, "backoff_max_s": 0.5,
            "link_key_file": str(create_key(out / "link.key")),  # made once, as the installer does; both Pis
        },
        "schedule": {
            "period_s": run.period_s, "windows_utc": [[WINDOW_START.strftime("%H:%M"), end.strftime("%H:%M")]],
            "dark_time_utc": dark.strftime("%H:%M"), "shutdown_after_process": True,
        },
        # FRS drives the spectrometer's own slots: the sim's spectra come on the camera slots (one per pair).
        "spectrometer": {"backend": "sim", "frame_rate_hz": round(1.0 / run.period_s, 6), "coadd": SIM_SPECTRA_COADD},
        "gpio": {"backend": "mock"},
        "power": {"hello_timeout_s": 120.0, "wake_retries": 2, "stop_timeout_s": 600.0},
        "clock": {"backend": "sim", "tolerance_ms": 50.0 * max(1.0, scale / 10), "sync_samples": 5, "resync_s": 600.0},
        "sim": {
            "seed": run.seed, "time_scale": scale, "wind_speed_m_s": SIM_WIND_M_S,
            "emission_rate_kg_s": SIM_EMISSION_KG_S, **(SIM_AIR if run.hazy else {}),
        },
        "processing": {
            "enabled": run.processing, "velocity_method": "xcorr", "flow_pyrlevel": 2, "background_mode": 0,
            "plume_distance_m": SIM_PLUME_DISTANCE_M, "plume_distance_err_m": SIM_PLUME_DISTANCE_ERR_M,
            "xcorr_min_window_s": SIM_XCORR_MIN_WINDOW_S,
            **station_dilution(out, run.seed, run.image_size),  # light dilution: what a station knows of its terrain
        },
        "logging": {"format": "json", "level": run.log_level},
    }  # fmt: skip
    doas = doas_settings(out) if run.processing and run.spectrometer else None
    if doas is not None:
        common["sim"].update(doas[0])
        common["processing"].update(doas[1], ring_buffer=SIM_RING_BUFFER, fov_frames=SIM_FOV_FRAMES)
    cfgs = []
    for role, shutter in (("master", 6000), ("slave", 2000)):
        d = json.loads(json.dumps(common))
        d["station"] = {"role": role, "name": "sim"}
        d["network"].update(link_port=link_port, ext_port=ext_port)
        if role == "master" and run.ext_token:
            d["network"]["auth_token"] = run.ext_token
        d["storage"] = {
            "data_root": str(out / role / "data"), "state_dir": str(out / role / "state"),
            "spool_dir": str(out / role / "spool"), "allow_fallback": True, "min_free_mb": 0, "resume_free_mb": 0,
        }  # fmt: skip
        if role == "master" and run.data_fs_mb:
            low, high = data_fs_marks(run.data_fs_mb)
            root = out / role / DATA_FS / "data"  # the filesystem's root holds the disk filler, not the data root
            d["storage"].update(data_root=str(root), min_free_mb=low, resume_free_mb=high)
        if not run.spectrometer:
            d["spectrometer"] = {"backend": "none"}
        d["camera"] = {
            "backend": "sim", "auto_exposure": False, "shutter_us": shutter,
            "width": run.image_size[0], "height": run.image_size[1],
        }  # fmt: skip
        cfgs.append(d)
    return cfgs[0], cfgs[1]


async def _run_async(run: StationRun) -> dict:
    """The run. Every resource it creates (the data filesystem, network namespaces, the observatory, the proxy,
    the supervisors) is released by its exit stack, however the run ends: a SIGTERM (run_station) included."""
    out = run.out.resolve()
    for sub in ("master", "slave", "logs", "processed"):
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    async with contextlib.AsyncExitStack() as outer:  # the data filesystem outlives the summary that reads it
        data_fs = None
        if run.data_fs_mb:
            # Before the supervisors start: `ip netns exec` gives them a copy of the mounts as they are then.
            data_fs = mount_tmpfs(out / "master" / DATA_FS, run.data_fs_mb)
            outer.callback(unmount_keep_copy, data_fs)
        t_begin = time.time()
        async with contextlib.AsyncExitStack() as stack:
            st = await _start_station(run, out, stack)
            done, fault_log, monitor, screenshot = await _run_day(run, out, st)
        elapsed = time.time() - t_begin
        summary = summarize(out, st.mcfg, st.scfg)
        check_fault_visibility(out, fault_log)
    summary["data_fs_mb"] = run.data_fs_mb if data_fs is not None else None
    day = f"{DAY:%Y-%m-%d}"
    summary.update(observatory_summary(summary, out / "master" / "state", st.processed, st.observatory, day))
    summary["page_screenshot"] = screenshot
    summary.update(
        real_seconds=round(elapsed, 1), time_scale=round(st.scale, 2), network="netns" if st.use_netns else "loopback",
        sim_hours=run.hours, period_s=run.period_s, finished_cleanly=done,
        exit_codes={"master": st.master.exit_codes, "slave": st.slave.exit_codes}, faults_injected=fault_log,
        processes=monitor.figures(elapsed), pace=st.pace.figures() if st.pace is not None else None,
    )  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


@dataclass
class _Station:
    """What a started run holds: the two supervisors, their configs and the helpers around them."""

    master: Proc
    slave: Proc
    mcfg: dict
    scfg: dict
    observatory: object | None
    processed: Path
    proxy: object | None
    use_netns: bool
    pace: object | None
    window_real: float
    ext_port: int

    @property
    def scale(self) -> float:
        return self.mcfg["sim"]["time_scale"]

    @property
    def station_ns(self) -> str | None:
        return NETNS[0] if self.use_netns else None


async def _start_station(run: StationRun, out: Path, stack: contextlib.AsyncExitStack) -> _Station:
    """Namespaces (or a loopback proxy), observatory, configs and the two supervisors, each registered on `stack`
    for its release."""
    use_netns = run.netns == "on" or (run.netns == "auto" and netns_available())
    proxy = None
    if use_netns:
        netns_up()
        stack.callback(netns_down)
        hosts = (NETNS_ADDR[0], NETNS_ADDR[0])
        link_port, ext_port = NETNS_PORTS
    else:
        hosts = ("127.0.0.1", "127.0.0.1")
        link_port, ext_port = _free_port(), _free_port()
    mcfg, scfg = station_configs(run, link_port, ext_port, hosts)
    station_ns = NETNS[0] if use_netns else None
    observatory = start_observatory(out, use_netns, station_ns) if run.observatory else None
    if observatory is not None:
        stack.callback(observatory.stop)
    web_and_delivery_config(mcfg, observatory, hosts[0], 8080 if use_netns else _free_port(), out)
    processed = Path(mcfg["storage"]["data_root"]).parent / "processed"
    if not use_netns:
        from controller.sim.faults import FaultyProxy

        proxy = FaultyProxy("127.0.0.1", link_port)
        scfg["network"]["link_port"] = await proxy.start()
        stack.push_async_callback(proxy.stop)
    write_toml(out / "master.toml", mcfg)
    write_toml(out / "slave.toml", scfg)
    scale = mcfg["sim"]["time_scale"]
    real_start = time.time() + 1.0
    sim_start = (WINDOW_START - LEAD).timestamp()
    clock_args = ["--sim-epoch", repr(sim_start), "--sim-real-start", repr(real_start)]
    # the clock slows while the worker is behind or captures are late (controller/sim/pace.py)
    pace = start_pace(run.processing, out, scale, sim_start, real_start, Path(mcfg["storage"]["data_root"]), clock_args)
    master = Proc("master", out / "master.toml", out, clock_args, NETNS[0] if use_netns else None)
    slave = Proc("slave", out / "slave.toml", out, clock_args, NETNS[1] if use_netns else None)
    stack.push_async_callback(_stop_procs, slave, master)
    await master.start()
    await slave.start()
    window_real = real_start + LEAD.total_seconds() / scale
    return _Station(master, slave, mcfg, scfg, observatory, processed, proxy, use_netns, pace, window_real, ext_port)


async def _stop_procs(*procs: Proc) -> None:
    for p in procs:
        if p.running:
            p.kill9()
            await p.wait()


async def _run_day(run: StationRun, out: Path, st: _Station) -> tuple:
    """Drive the day (faults, pace, progress, screenshot) until the master ends it; (finished cleanly, fault log,
    process monitor, screenshot path)."""
    master, slave, mcfg, pace = st.master, st.slave, st.mcfg, st.pace
    scale, window_real = st.scale, st.window_real
    minutes = round(run.hours * 60)
    fault_log: list[dict] = []
    monitor = ProcessMonitor({"master": master, "slave": slave})
    sampler = asyncio.ensure_future(monitor.run())
    pacer = asyncio.ensure_future(pace.run()) if pace is not None else None
    shot = None
    if run.screenshot is not None:
        at = window_real + 0.75 * run.real_budget_s
        url = f"http://{mcfg['web']['bind']}:{mcfg['web']['port']}/"
        shot = asyncio.ensure_future(screenshot_page(url, run.screenshot, at, st.station_ns))
    progress = None
    if run.progress is not None:
        progress = asyncio.ensure_future(report_progress(out / "master" / "state", st.processed, run.progress))
    screenshot = None
    try:
        driver = asyncio.ensure_future(
            drive_faults(run, master, slave, out, st.proxy, st.use_netns, window_real, st.ext_port, fault_log)
        )
        timeout = LEAD.total_seconds() / scale + minutes * 60 / (scale * MIN_FRACTION) + 240.0  # a safety net
        done = await _wait_station(master, slave, timeout)
        driver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await driver
    finally:
        for task in (sampler, pacer, progress):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if shot is not None:
            if not shot.done():
                shot.cancel()  # the station ended before its time
            with contextlib.suppress(asyncio.CancelledError):
                screenshot = await shot
    return done, fault_log, monitor, screenshot


async def _wait_station(master: Proc, slave: Proc, timeout_s: float) -> bool:
    """Wait until the master has exited by itself (after stopping the slave); kill -9 restarts do not count."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        proc = master.proc
        if proc is not None and proc.returncode == 0:
            master.exit_codes.append(0)
            if slave.running:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(slave.wait(), 30)
            elif slave.proc is not None:
                slave.exit_codes.append(slave.proc.returncode)
            return not slave.running
        await asyncio.sleep(0.5)
    return False


class SimStopped(RuntimeError):
    """The run was stopped by SIGTERM; what it created is released."""


def run_station(run: StationRun) -> dict:
    """Run the day. A SIGTERM (a CI timeout, an operator's kill) cancels it, so its exit stacks release the
    supervisors, namespaces, observatory and mounts before SimStopped is raised."""
    return asyncio.run(_stoppable(run))


async def _stoppable(run: StationRun) -> dict:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await _run_async(run)
    except asyncio.CancelledError:
        raise SimStopped(
            "the simulated station was stopped (SIGTERM); its processes and namespaces are removed"
        ) from None
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
