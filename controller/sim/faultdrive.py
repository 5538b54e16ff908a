"""The sim station's fault driver: each fault of a run injected at its time (real seconds after the window opens),
and the recovery back to acquire measured (controller/sim/station.py runs it beside the day)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from controller.logging import get_logger
from controller.sim.abuse import run_client
from controller.sim.faulthook import FAULT_FILE
from controller.sim.host import DATA_FS, NETNS, NETNS_ADDR, NETNS_PORTS, set_link
from controller.sim.procs import read_status, wait_until

log = get_logger("sim.faultdrive")


async def drive_faults(run, master, slave, out, proxy, use_netns, window_real, ext_port, fault_log) -> None:
    """Inject each fault at its time and measure the recovery back to acquire (real seconds)."""
    for fault in sorted(run.faults, key=lambda f: f.at_s):
        await asyncio.sleep(max(0.0, window_real + fault.at_s - time.time()))
        t0 = time.monotonic()
        entry = {"kind": fault.kind, "at_s": fault.at_s, "real_time": time.time(), **fault.args}
        target = slave if fault.kind in ("kill_slave", "clock_step") else master
        if fault.args.get("device") in ("B", "S"):
            target = slave
        state_dir = out / target.role / "state"
        if fault.kind in ("kill_slave", "kill_master", "restart_master_behind"):
            target.kill9()
            await target.wait()
            await asyncio.sleep(float(fault.args.get("down_s", 2.0)))
            behind = float(fault.args.get("behind_s", 0.0))
            await target.start(["--clock-offset", repr(-behind)] if behind else None)
        elif fault.kind == "kill_worker":
            entry["killed"] = target.kill9_worker()
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
            (state_dir / FAULT_FILE).write_text(json.dumps(sim))
            target.signal(signal.SIGUSR1)
            if fault.kind == "unplug":
                await asyncio.sleep(float(fault.args.get("down_s", 3.0)))
                (state_dir / FAULT_FILE).write_text(json.dumps({**sim, "kind": "replug"}))
                target.signal(signal.SIGUSR1)
        elif fault.kind == "forged_peer":
            from controller.sim.forged import forged_peer_fault

            master_port = proxy.target[1] if proxy is not None else NETNS_PORTS[0]
            entry.update(
                await forged_peer_fault(
                    out, master_port, proxy, NETNS if use_netns else None, NETNS_ADDR[0], fault.args.get("down_s", 4.0)
                )
            )
        elif fault.kind == "garbage_ext":
            await _garbage_to_ext(ext_port, NETNS[0] if use_netns else None)
        elif fault.kind in ("singles", "abuse_ext"):
            host = NETNS_ADDR[0] if use_netns else "127.0.0.1"
            entry.update(await run_client(fault.kind, host, ext_port, run.ext_token, NETNS[0] if use_netns else None))
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
