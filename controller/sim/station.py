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
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from controller.acquisition import CaptureJournal
from controller.link.auth import create_key
from controller.logging import get_logger
from controller.storage.names import ImageName, parse_name

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
# Names unique to this process, so two sim runs on one machine never tear down each other's network.
NETNS = (f"pycam-m{os.getpid()}", f"pycam-s{os.getpid()}")
VETH = (f"pcm{os.getpid()}", f"pcs{os.getpid()}")
# The station's own link-local network, as between the two Pis (and inside the default allowed networks).
NETNS_ADDR = ("169.254.231.1", "169.254.231.2")
# The shared reference spectra (sao2010, SO2, O3, Ring), next to the repository as in the project's layout.
REFERENCES_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "references"
REFERENCE_FILES = {
    "solar_reference": "sao2010.txt", "so2_xsec": "SO2_293K.txt", "o3_xsec": "O3_Voigt_223K.txt",
    "ring_spectrum": "Ring.txt",
}  # fmt: skip
SIM_ILS_NAME = "sim_gaussian_ils.txt"
# The DOAS calibration's FOV search runs on this many pairs (the worker's pre-FOV ring buffer): about 20 min of
# 60 s slots, so most of a station day is DOAS-calibrated.
SIM_RING_BUFFER = 20


@dataclass
class Fault:
    """A fault injected `at_s` real seconds after the window opens."""

    kind: str  # kill_slave, kill_master, drop_link, unplug, clock_step, garbage_ext
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

    from controller.sim.scene import ILS_FWHM_NM

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
    FOV found in the images, AA fitted against its columns); the default slope (the scene's own cross-section)
    only serves the pairs before that, and as the whole calibration when the references are missing."""
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
        "spectrometer": {"backend": "sim"},
        "gpio": {"backend": "mock"},
        "power": {"hello_timeout_s": 120.0, "wake_retries": 2, "stop_timeout_s": 600.0},
        "clock": {"tolerance_ms": 50.0 * max(1.0, scale / 10), "sync_samples": 5, "resync_s": 600.0},
        "sim": {
            "seed": run.seed, "time_scale": scale, "wind_speed_m_s": SIM_WIND_M_S,
            "emission_rate_kg_s": SIM_EMISSION_KG_S,
        },
        "processing": {
            "enabled": run.processing, "velocity_method": "xcorr", "flow_pyrlevel": 2, "background_mode": 0,
            "plume_distance_m": 5000.0, "default_calibration_slope": 1.0 / 1.75e-19,
        },
        "logging": {"format": "json", "level": run.log_level},
    }  # fmt: skip
    doas = doas_settings(out) if run.processing and run.spectrometer else None
    if doas is not None:
        common["sim"].update(doas[0])
        common["processing"].update(doas[1], ring_buffer=SIM_RING_BUFFER)
    cfgs = []
    for role, shutter in (("master", 6000), ("slave", 2000)):
        d = json.loads(json.dumps(common))
        d["station"] = {"role": role, "name": "sim"}
        d["network"].update(link_port=link_port, ext_port=ext_port)
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


# ------------------------------------------------------------------------------------------------- namespaces


def netns_available() -> bool:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = f"pycam-probe{os.getpid()}"
    ok = subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return ok


def netns_up() -> None:
    """Two namespaces joined by a veth pair: the master at .1, the slave at .2."""
    netns_down()
    cmds = [
        ["ip", "netns", "add", NETNS[0]],
        ["ip", "netns", "add", NETNS[1]],
        ["ip", "link", "add", VETH[0], "type", "veth", "peer", "name", VETH[1]],
        ["ip", "link", "set", VETH[0], "netns", NETNS[0]],
        ["ip", "link", "set", VETH[1], "netns", NETNS[1]],
        ["ip", "-n", NETNS[0], "addr", "add", f"{NETNS_ADDR[0]}/16", "dev", VETH[0]],
        ["ip", "-n", NETNS[1], "addr", "add", f"{NETNS_ADDR[1]}/16", "dev", VETH[1]],
        ["ip", "-n", NETNS[0], "link", "set", VETH[0], "up"],
        ["ip", "-n", NETNS[1], "link", "set", VETH[1], "up"],
        ["ip", "-n", NETNS[0], "link", "set", "lo", "up"],
        ["ip", "-n", NETNS[1], "link", "set", "lo", "up"],
    ]
    for cmd in cmds:
        subprocess.run(cmd, check=True, capture_output=True)


def netns_down() -> None:
    for ns in NETNS:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def set_link(up: bool) -> None:
    subprocess.run(["ip", "-n", NETNS[1], "link", "set", VETH[1], "up" if up else "down"], capture_output=True)


# --------------------------------------------------------------------------------------------------- processes


class Proc:
    """One supervisor process (`pycam run`), its log file and how to (re)start it."""

    def __init__(self, role: str, config: Path, out: Path, clock_args: list[str], netns: str | None):
        self.role = role
        self.config = config
        self.log_path = out / "logs" / f"{role}.log"
        self.clock_args = clock_args
        self.netns = netns
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.exit_codes: list[int] = []

    async def start(self, extra: list[str] | None = None) -> None:
        cmd = [sys.executable, "-c", "from controller.cli import main; main()", "run", "--role", self.role]
        cmd += ["--config", str(self.config), *self.clock_args, *(extra or [])]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it; closed below after the spawn
        try:
            self.proc = await asyncio.create_subprocess_exec(*cmd, stdout=fh, stderr=fh, start_new_session=True)
        finally:
            fh.close()
        self.starts += 1

    def kill9(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            os.killpg(self.proc.pid, signal.SIGKILL)

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            os.kill(self.proc.pid, sig)

    async def wait(self) -> int:
        assert self.proc is not None
        code = await self.proc.wait()
        self.exit_codes.append(code)
        return code

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


class ProcessMonitor:
    """Samples each supervisor process (and its children: the processing worker) every `every_s` real seconds:
    peak resident memory and CPU time, summed over the restarts of a role (kill -9 included: the last sample
    before the kill counts)."""

    def __init__(self, procs: dict[str, Proc], every_s: float = 0.5):
        self.procs = procs
        self.every_s = every_s
        self.peak_rss: Counter = Counter()
        self.peak_children_rss: Counter = Counter()
        self.cpu: dict[tuple[str, int], float] = {}  # (role, pid) -> last CPU seconds seen
        self.children_cpu: dict[tuple[str, int], float] = {}

    def sample(self) -> None:
        import psutil

        for role, proc in self.procs.items():
            if not proc.running:
                continue
            try:
                p = psutil.Process(proc.proc.pid)
                with p.oneshot():
                    rss, times = p.memory_info().rss, p.cpu_times()
                kids = p.children(recursive=True)
                kid_rss = sum(k.memory_info().rss for k in kids)
                kid_cpu = sum(sum(k.cpu_times()[:2]) for k in kids)
            except psutil.Error:
                continue  # it just exited (or was killed): its last sample stands
            self.peak_rss[role] = max(self.peak_rss[role], rss)
            self.peak_children_rss[role] = max(self.peak_children_rss[role], kid_rss)
            # Children that exited were reaped into children_user/system of the parent.
            self.cpu[(role, p.pid)] = times.user + times.system
            self.children_cpu[(role, p.pid)] = max(
                self.children_cpu.get((role, p.pid), 0.0), kid_cpu + times.children_user + times.children_system
            )

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.every_s)

    def figures(self, real_s: float) -> dict:
        out = {}
        for role, proc in self.procs.items():
            cpu = sum(v for (r, _), v in self.cpu.items() if r == role)
            kids = sum(v for (r, _), v in self.children_cpu.items() if r == role)
            out[role] = {
                "peak_rss_mb": round(self.peak_rss[role] / 2**20, 1),
                "cpu_s": round(cpu, 1),
                "cpu_percent_of_one_core": round(100.0 * cpu / max(real_s, 1e-9), 1),
                "children_peak_rss_mb": round(self.peak_children_rss[role] / 2**20, 1),
                "children_cpu_s": round(kids, 1),
                "starts": proc.starts,
            }
        return out


def read_status(state_dir: Path) -> dict:
    try:
        return json.loads((state_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}


async def wait_until(predicate, timeout_s: float, step_s: float = 0.2) -> float | None:
    """Real seconds until predicate() holds (polling a file another process writes), None on timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if predicate():
            return time.monotonic() - t0
        await asyncio.sleep(step_s)
    return None


# ------------------------------------------------------------------------------------------------------ driver


async def _run_async(run: StationRun) -> dict:
    out = run.out.resolve()
    for sub in ("master", "slave", "logs", "processed"):
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    data_fs = None
    if run.data_fs_mb:
        # Before the supervisors start: `ip netns exec` gives them a copy of the mounts as they are then.
        data_fs = mount_tmpfs(out / "master" / DATA_FS, run.data_fs_mb)
    use_netns = run.netns == "on" or (run.netns == "auto" and netns_available())
    proxy = None
    if use_netns:
        netns_up()
        hosts = (NETNS_ADDR[0], NETNS_ADDR[0])
        link_port, ext_port = 12345, 12347
    else:
        hosts = ("127.0.0.1", "127.0.0.1")
        link_port, ext_port = _free_port(), _free_port()
    mcfg, scfg = station_configs(run, link_port, ext_port, hosts)
    if not use_netns:
        from controller.sim.faults import FaultyProxy

        proxy = FaultyProxy("127.0.0.1", link_port)
        scfg["network"]["link_port"] = await proxy.start()
    write_toml(out / "master.toml", mcfg)
    write_toml(out / "slave.toml", scfg)
    scale = mcfg["sim"]["time_scale"]
    real_start = time.time() + 1.0
    sim_start = (WINDOW_START - LEAD).timestamp()
    clock_args = ["--sim-epoch", repr(sim_start), "--sim-real-start", repr(real_start)]
    master = Proc("master", out / "master.toml", out, clock_args, NETNS[0] if use_netns else None)
    slave = Proc("slave", out / "slave.toml", out, clock_args, NETNS[1] if use_netns else None)
    window_real = real_start + LEAD.total_seconds() / scale
    minutes = round(run.hours * 60)
    t_begin = time.time()
    await master.start()
    await slave.start()
    fault_log: list[dict] = []
    monitor = ProcessMonitor({"master": master, "slave": slave})
    sampler = asyncio.ensure_future(monitor.run())
    try:
        driver = asyncio.ensure_future(
            _drive_faults(run, master, slave, out, proxy, use_netns, window_real, ext_port, fault_log)
        )
        timeout = LEAD.total_seconds() / scale + minutes * 60 / scale + 240.0
        done = await _wait_station(master, slave, timeout)
        driver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await driver
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        for p in (slave, master):
            if p.running:
                p.kill9()
                await p.wait()
        if proxy is not None:
            await proxy.stop()
        if use_netns:
            netns_down()
    elapsed = time.time() - t_begin
    try:
        summary = summarize(out, mcfg, scfg)
        check_fault_visibility(out, fault_log)
    finally:
        if data_fs is not None:
            unmount_keep_copy(data_fs)
    summary["data_fs_mb"] = run.data_fs_mb if data_fs is not None else None
    summary.update(
        real_seconds=round(elapsed, 1), time_scale=round(scale, 2), network="netns" if use_netns else "loopback",
        sim_hours=run.hours, period_s=run.period_s, finished_cleanly=done,
        exit_codes={"master": master.exit_codes, "slave": slave.exit_codes}, faults_injected=fault_log,
        processes=monitor.figures(elapsed),
    )  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


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


async def _drive_faults(run, master, slave, out, proxy, use_netns, window_real, ext_port, fault_log) -> None:
    """Inject each fault at its time and measure the recovery back to acquire (real seconds)."""
    for fault in sorted(run.faults, key=lambda f: f.at_s):
        await asyncio.sleep(max(0.0, window_real + fault.at_s - time.time()))
        t0 = time.monotonic()
        entry = {"kind": fault.kind, "at_s": fault.at_s, "real_time": time.time(), **fault.args}
        target = slave if fault.kind in ("kill_slave", "clock_step") else master
        if fault.args.get("device") in ("B", "S"):
            target = slave
        state_dir = out / target.role / "state"
        if fault.kind in ("kill_slave", "kill_master"):
            target.kill9()
            await target.wait()
            await asyncio.sleep(float(fault.args.get("down_s", 2.0)))
            await target.start()
        elif fault.kind == "drop_link":
            if use_netns:
                set_link(False)
            else:
                proxy.refuse(True)
                proxy.cut()
            await asyncio.sleep(float(fault.args.get("down_s", 5.0)))
            if use_netns:
                set_link(True)
            else:
                proxy.refuse(False)
        elif fault.kind in ("unplug", "clock_step"):
            sim = {"kind": fault.kind, **fault.args}
            (state_dir / "sim-fault.json").write_text(json.dumps(sim))
            target.signal(signal.SIGUSR1)
            if fault.kind == "unplug":
                await asyncio.sleep(float(fault.args.get("down_s", 3.0)))
                (state_dir / "sim-fault.json").write_text(json.dumps({**sim, "kind": "replug"}))
                target.signal(signal.SIGUSR1)
        elif fault.kind == "garbage_ext":
            await _garbage_to_ext(ext_port, NETNS[0] if use_netns else None)
        elif fault.kind == "fill_disk":
            entry.update(await _fill_disk(out, fault.args))
            t0 = time.monotonic()  # recovery counts from the moment the space is back
        entry["recovery_s"] = await _recovery(out, t0)
        fault_log.append(entry)
        log.info("sim_fault_recovered", **{k: v for k, v in entry.items() if isinstance(v, str | int | float)})


async def _recovery(out: Path, t0: float) -> float | None:
    """Real seconds from the fault until both supervisors report acquire again, with every device capturing."""

    def back() -> bool:
        for role in ("master", "slave"):
            st = read_status(out / role / "state")
            if st.get("state") != "acquire" or st.get("exited"):
                return False
            if any(not d.get("usable") and d.get("state") != "absent" for d in (st.get("devices") or {}).values()):
                return False
        return True

    waited = await wait_until(back, 120.0)
    return None if waited is None else round(time.monotonic() - t0, 2)


async def _garbage_to_ext(port: int, netns: str | None) -> None:
    payload = b"\x00\xff garbage SSA notanumber END\r\n" + os.urandom(2048) + b"FRC 0 END\r\nLOG 0 END\r\n"
    if netns:
        code = f"import socket;s=socket.create_connection(('{NETNS_ADDR[0]}',{port}),3);s.sendall({payload!r})"
        subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", code], capture_output=True, timeout=10)
        return
    with contextlib.suppress(OSError):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(payload)
        await writer.drain()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader.read(4096), 2.0)
        writer.close()


# ----------------------------------------------------------------------------------------------------- summary


def summarize(out: Path, mcfg: dict, scfg: dict) -> dict:
    """Captured vs stored vs lost, duplicates, pairs processed, flux recovered vs truth, states and faults."""
    data_root = Path(mcfg["storage"]["data_root"])
    journals = {r: CaptureJournal.read(out / r / "state" / "captures.jsonl") for r in ("master", "slave")}
    captured: dict[str, str] = {}
    per_device: Counter = Counter()
    recaptured = 0
    for recs in journals.values():
        for rec in recs:
            if rec["name"] in captured:
                recaptured += 1
            captured[rec["name"]] = rec["sha256"]
            per_device[rec["device"]] += 1
    stored = {p.name: p for p in data_root.rglob("*") if p.is_file() and not p.name.startswith(".")}
    lost = [n for n in captured if n not in stored]
    corrupt = [n for n, sha in captured.items() if n in stored and _sha(stored[n]) != sha]
    keys = Counter()
    for name in stored:
        with contextlib.suppress(ValueError):
            parsed = parse_name(name)
            band = parsed.band if isinstance(parsed, ImageName) else "S"
            keys[(parsed.time_key, band, parsed.kind)] += 1
    # A slot captured twice (a restart re-taking it) shows as two Plume files of one device at one time.
    duplicates = sum(n - 1 for (_, _, kind), n in keys.items() if n > 1 and kind == "Plume") + recaptured
    flux = _flux(out / "master" / "processed", mcfg)
    states = _state_changes(out)
    faults = {r: read_status(out / r / "state").get("faults", []) for r in ("master", "slave")}
    return {
        "captured": len(captured),
        "captured_per_device": dict(per_device),
        "stored": len(stored),
        "stored_captured": len(captured) - len(lost),
        "lost": len(lost),
        "lost_files": lost[:20],
        "corrupt": len(corrupt),
        "duplicates": duplicates,
        "pairs_on_master": sum(1 for (t, b, k) in keys if b == "A" and k == "Plume" and (t, "B", "Plume") in keys),
        **flux,
        "state_changes": states,
        "faults_seen": {r: [f.get("kind") for f in fs] for r, fs in faults.items()},
        "fault_counts": {r: read_status(out / r / "state").get("fault_counts", {}) for r in ("master", "slave")},
        "data_folder": str(data_root),
    }


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _flux(processed: Path, mcfg: dict) -> dict:
    """The worker's emission rates (mean over the day) and the scene's truth through the same line."""
    result = {
        "pairs_processed": 0, "flux_truth_kg_s": None, "flux_recovered_kg_s": None, "plot": None,
        "calibration": None,
    }  # fmt: skip
    csvs = sorted(processed.glob("emission_rates_line*_xcorr.csv")) or sorted(processed.glob("emission_rates_*.csv"))
    try:
        from processing.worker import JOURNAL_NAME

        done = json.loads((processed / JOURNAL_NAME).read_text())
        result["pairs_processed"] = len(done.get("pairs", []))
    except (OSError, ValueError, ImportError):
        pass
    if not csvs:
        return result
    import numpy as np

    from controller.config import config_from_dict
    from controller.hardware.factory import make_scene
    from processing.outputs import read_series

    rows = read_series(csvs[0])
    times = [t.replace(tzinfo=UTC).timestamp() for t in rows.get("datetime", [])]
    fluxes = np.array(rows.get("flux_(kg/s)", []), dtype=float)
    # The calibration of each row (the CSV's calibration column): with any DOAS-calibrated rows, the figures are
    # theirs alone (the default slope before the FOV is found is the scene's own cross-section: circular).
    methods = [str(m) for m in rows.get("calibration", ["default"] * len(fluxes))]
    ok = np.isfinite(fluxes)
    result["calibration_rows"] = dict(Counter(m for m, good in zip(methods, ok, strict=True) if good))
    method = "doas" if result["calibration_rows"].get("doas") else Counter(methods).most_common(1)[0][0]
    ok &= np.array([m == method for m in methods], dtype=bool)
    if not ok.any():
        return result
    cfg = config_from_dict({k: v for k, v in mcfg.items()})
    scene = make_scene(cfg)
    x = cfg.processing.pcs_lines[0][0]
    truth = np.array([scene.flux_through_column(t, x) for t in times])
    result.update(
        flux_truth_kg_s=round(float(np.mean(truth[ok])), 4),
        flux_recovered_kg_s=round(float(np.mean(fluxes[ok])), 4),
        flux_rows=int(ok.sum()),
        flux_csv=csvs[0].name,
        calibration=method,
        emission_rate_config_kg_s=cfg.sim.emission_rate_kg_s,
        fov=_fov_found(processed, scene),
    )
    result["plot"] = _plot(processed / "sim_station_flux.png", times, fluxes, truth)
    return result


def _fov_found(processed: Path, scene) -> dict:
    """The spectrometer FOV the worker found (its live calibration state) against the scene's."""
    found = None
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError, ImportError):
        from processing.livecal import STATE_NAME

        found = json.loads((processed / STATE_NAME).read_text())["dcal"]["fov"][:3]
    return {"found_cx_cy_r": found, "scene_cx_cy_r": [*scene.fov_centre_px, scene.fov_radius_px]}


def _plot(path: Path, times: list[float], fluxes, truth) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    when = [datetime.fromtimestamp(t, UTC) for t in times]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(when, fluxes, ".-", label="recovered (worker, xcorr)")
    ax.plot(when, truth, "-", label="scene truth through the line")
    ax.set_ylabel("SO2 emission rate (kg/s)")
    ax.set_title(f"Simulated station day {when[0]:%Y-%m-%d}" if when else "Simulated station day")
    ax.legend()
    fig.autofmt_xdate()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def _state_changes(out: Path) -> dict:
    """Station state changes of each supervisor, from its JSON log."""
    result = {}
    for role in ("master", "slave"):
        seq = []
        try:
            lines = (out / "logs" / f"{role}.log").read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        for line in lines:
            if '"state_change"' not in line or '"station"' not in line:
                continue
            with contextlib.suppress(ValueError):
                ev = json.loads(line)
                if ev.get("machine") == "station":
                    seq.append(f"{ev.get('old')}->{ev.get('new')}")
        result[role] = seq
    return result


# ------------------------------------------------------------------------------------------------ disk faults


DATA_FS = "datafs"  # the master's dedicated data filesystem (mount point) in a disk-fault run


def data_fs_marks(size_mb: int) -> tuple[int, int]:
    """min_free_mb and resume_free_mb for a data filesystem of `size_mb` (a quarter and three eighths)."""
    return max(1, size_mb // 4), max(2, size_mb * 3 // 8)


def mount_tmpfs(path: Path, size_mb: int) -> Path:
    """A size-limited tmpfs on `path` (root only). Raises OSError with the reason when it cannot be mounted."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        raise OSError("a dedicated data filesystem needs root and mount(8)")
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={int(size_mb)}m,mode=0755", "pycam-sim-data", str(path)],
        capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        raise OSError(f"mount tmpfs on {path} failed: {proc.stderr.strip()}")
    return path


def unmount_keep_copy(path: Path) -> None:
    """Unmount the tmpfs, keeping its files in a plain folder of the same name (the data stays to look at)."""
    keep = path.with_name(path.name + ".copy")
    shutil.rmtree(keep, ignore_errors=True)
    shutil.copytree(path, keep, ignore=shutil.ignore_patterns(".fill"))
    subprocess.run(["umount", str(path)], capture_output=True)
    with contextlib.suppress(OSError):
        path.rmdir()
        keep.rename(path)


async def _fill_disk(out: Path, args: dict) -> dict:
    """Fill the master's data filesystem up to `leave_mb` free, hold `down_s`, free it. What was seen meanwhile."""
    data = out / "master" / DATA_FS
    filler = data / ".fill"
    leave = float(args.get("leave_mb", 2.0)) * 1024 * 1024
    loop = asyncio.get_running_loop()

    def fill() -> None:
        size = int(shutil.disk_usage(data).free - leave)
        with open(filler, "wb") as fh:
            os.posix_fallocate(fh.fileno(), 0, max(size, 1))

    await loop.run_in_executor(None, fill)
    await asyncio.sleep(float(args.get("down_s", 6.0)))
    seen = {
        "master_state_full": read_status(out / "master" / "state").get("state"),
        "slave_spool_full": read_status(out / "slave" / "state").get("spool"),
    }
    await loop.run_in_executor(None, filler.unlink)
    return seen


# Which status fault kinds (of which supervisor) show each injected fault.
EXPECTED_FAULTS = {
    "kill_slave": {"master": ("link_lost",), "slave": ("restarted_after_crash",)},
    "kill_master": {"master": ("restarted_after_crash",), "slave": ("link_lost",)},
    "drop_link": {"master": ("link_lost",), "slave": ("link_lost",)},
    "unplug": {"slave": ("device_unplugged", "device_error")},
    "clock_step": {"slave": ("clock_offset", "offset_bad", "clock_lost")},
    "garbage_ext": {"master": ("ext_bad_input",)},
    "fill_disk": {"master": ("disk_full",)},
}


def check_fault_visibility(out: Path, fault_log: list[dict]) -> None:
    """For each injected fault: the matching faults in each supervisor's status (`pycam status`) and log, recorded
    at or after the injection (`seen_in_status`, `seen_in_log` per role)."""
    status = {r: read_status(out / r / "state").get("faults", []) for r in ("master", "slave")}
    logged = {r: _logged_faults(out / "logs" / f"{r}.log") for r in ("master", "slave")}
    for entry in fault_log:
        t0 = float(entry.get("real_time", 0.0)) - 0.5
        expected = dict(EXPECTED_FAULTS.get(entry["kind"], {}))
        if entry["kind"] == "unplug" and entry.get("device") == "A":
            expected = {"master": expected["slave"]}
        entry["seen_in_status"] = {
            role: sorted({f["kind"] for f in status[role] if f.get("kind") in kinds and f.get("real_time", 0) >= t0})
            for role, kinds in expected.items()
        }  # fmt: skip
        entry["seen_in_log"] = {
            role: sorted({k for k, t in logged[role] if k in kinds and t >= t0}) for role, kinds in expected.items()
        }


def _logged_faults(path: Path) -> list[tuple[str, float]]:
    """(fault kind, real time) of every `fault` event in a supervisor's JSON log."""
    found = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return found
    for line in lines:
        if '"fault"' not in line:
            continue
        with contextlib.suppress(ValueError, KeyError, TypeError):
            ev = json.loads(line)
            if ev.get("event") == "fault":
                when = datetime.fromisoformat(ev["timestamp"].replace("Z", "+00:00")).timestamp()
                found.append((str(ev.get("fault")), when))
    return found


def run_station(run: StationRun) -> dict:
    return asyncio.run(_run_async(run))
