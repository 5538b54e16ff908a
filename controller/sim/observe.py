"""What `pycam sim station` shows of the station from outside: progress lines while it runs, and the summary's
status page address, delivery to the simulated observatory and the worker's daily summary."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from controller.sim.procs import read_status
from controller.web import results

PROGRESS_EVERY_S = 5.0


def progress_line(status: dict, processed: Path) -> str | None:
    """`sim 11:42 acquire | captures A 41, from slave 80 | pairs processed 38 | SO2 0.33 kg/s | delivered 12`."""
    t = status.get("master_time")
    if not isinstance(t, int | float):
        return None
    day = datetime.fromtimestamp(t, tz=UTC)
    caps = ", ".join(f"{k} {v}" for k, v in sorted((status.get("captures") or {}).items()))
    parts = [f"sim {day:%H:%M} {status.get('state')}", f"captures {caps or 0}, from slave "
             f"{status.get('stored_from_slave', 0)}", f"pairs processed {status.get('worker_pairs', 0)}"]  # fmt: skip
    latest = results.latest_emissions(processed, day.strftime("%Y-%m-%d"))
    if latest:
        parts.append("SO2 " + ", ".join(f"{v:.3g} kg/s" for v in latest.values()))
    else:
        parts.append("SO2 no emission rate yet")
    d = status.get("delivery")
    if isinstance(d, dict):
        parts.append(f"delivered {d.get('delivered_files')}, backlog {d.get('backlog_files')}")
    return " | ".join(parts)


async def report_progress(state_dir: Path, processed: Path, emit: Callable[[str], None]) -> None:
    """Every PROGRESS_EVERY_S real seconds, one progress line from the master's status file (until cancelled)."""
    last = None
    while True:
        line = await asyncio.to_thread(lambda: progress_line(read_status(state_dir), processed))
        if line is not None and line != last:
            emit(line)
            last = line
        await asyncio.sleep(PROGRESS_EVERY_S)


def observatory_summary(master_state: Path, processed: Path, observatory, day: str) -> dict:
    """The summary's view from outside: the page's address, what reached the observatory, the daily summary."""
    st = read_status(master_state)
    web = st.get("web") or {}
    delivery = st.get("delivery") or {}
    out = {
        "web_url": web.get("url"),
        "web_requests": web.get("requests"),
        "delivery": delivery or None,
        "delivery_lag_s": delivery.get("last_lag_s"),
        "delivery_backlog_files": delivery.get("backlog_files"),
        "daily_summary": results.daily_summary(processed, day),
    }
    if observatory is not None:
        files = observatory.files()
        out["delivered_files"] = len(files)
        out["delivered_by_kind"] = _by_kind(files, observatory.remote_dir)
        out["observatory"] = f"{observatory.user}@{observatory.host}:{observatory.port} {observatory.remote_dir}"
    else:
        out["delivered_files"] = 0
        out["observatory"] = None
    return out


def _by_kind(files: list[Path], root: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for p in files:
        parts = p.relative_to(root).parts
        kind = parts[1] if len(parts) > 2 else "?"
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def start_observatory(out: Path, use_netns: bool, station_netns: str | None):
    """The simulated observatory (a real sshd, controller.delivery.observatory): in its own namespace joined to the
    master's when the station runs in namespaces, on loopback otherwise; None when openssh-server is missing."""
    import shutil

    from controller.delivery.observatory import Observatory, sshd_available
    from controller.logging import get_logger

    if not sshd_available():
        get_logger("sim.station").warning("sim_observatory_unavailable", why="openssh-server or rsync missing")
        return None
    shutil.rmtree(out / "observatory", ignore_errors=True)
    return Observatory(out / "observatory", netns=use_netns, station_netns=station_netns).start()


def web_and_delivery_config(mcfg: dict, observatory, host: str, web_port: int, out: Path) -> None:
    """The master's [web] (on, at `host:web_port`) and [delivery] (to the observatory, logs included) sections."""
    mcfg["web"] = {"enabled": True, "bind": host, "port": web_port}
    if observatory is not None:
        mcfg["delivery"] = observatory.delivery_config(
            scan_interval_s=2.0, retry_initial_s=1.0, retry_max_s=10.0, timeout_s=10.0, log_dir=str(out / "logs")
        )


CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
    "--virtual-time-budget=8000", "--window-size=1280,1900",
)  # fmt: skip


async def screenshot_page(url: str, path: Path, at_real: float, netns: str | None) -> str | None:
    """At real time `at_real`, a screenshot of the status page with headless Chromium (in the master's namespace
    when it runs in one); the file's path, or None (no chromium, or it failed: logged)."""
    import shutil
    import tempfile
    import time

    from controller.logging import get_logger

    log = get_logger("sim.station")
    chromium = shutil.which("chromium")
    if chromium is None:
        log.warning("sim_screenshot_skipped", why="chromium not installed")
        return None
    await asyncio.sleep(max(0.0, at_real - time.time()))
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pycam-chromium-") as profile:
        cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={path}", url]
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        try:
            _, err = await asyncio.wait_for(proc.communicate(), 120)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            err = b"timed out"
    if not path.is_file():
        log.warning("sim_screenshot_failed", url=url, error=err.decode(errors="replace")[-300:])
        return None
    log.info("sim_screenshot", path=str(path))
    return str(path)
