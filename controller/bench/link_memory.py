"""The master's memory under link attacks (issue 11 finding 4): figures, measured on a master in its own process.

- flood: many connections before a proven hello, each announcing a 64 MiB frame and sending its first MiB; then
  as many idle ones, holding their handshake open. Before the fix 8 such connections took the master from 61 to
  587 MB.
- stream: a slave (with the key) streaming `files` files of `file_mb` MiB each, back to back. Before the fix 40 x
  60 MiB took the master to 2153 MB.

The master runs `python -m controller.bench.link_memory <spec.json>` (a MasterLink and a FileReceiver, nothing
else); its peak RSS is VmHWM from /proc after the attacks, next to its RSS at rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from controller.link import auth
from controller.link.endpoint import PROTOCOL_VERSION
from controller.link.framing import HANDSHAKE_LIMITS, MAGIC, FrameLimits, encode_frame, encode_prefix_and_header
from controller.link.framing import read_message as _read_message
from controller.storage.names import ImageName

MIB = 1 << 20
_NETWORK = {"link_bind": "127.0.0.1", "heartbeat_s": 1.0, "link_timeout_s": 30.0, "backoff_max_s": 0.5}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def _content(index: int, size: int) -> Iterator[bytes]:
    """Incompressible, distinct per file, generated in 1 MiB chunks (never whole in memory here either)."""
    block = hashlib.sha256(index.to_bytes(8, "big")).digest() * (MIB // 32)
    whole, rest = divmod(size, MIB)
    for i in range(whole):
        yield i.to_bytes(8, "big") + block[8:]
    if rest:
        yield block[:rest]


async def _flood(port: int, connections: int) -> dict[str, Any]:
    """Pre-hello connections announcing 64 MiB frames, then idle ones; how many the master closed."""
    prefix_only = bytearray(encode_prefix_and_header({"type": "hello"}, 0, HANDSHAKE_LIMITS))
    # The same prefix with the payload length patched to 64 MiB (what an attacker would send; no valid CRC needed
    # for the length check, which comes first) followed by its first MiB.
    prefix_only[10:14] = (64 * MIB).to_bytes(4, "big")
    assert bytes(prefix_only[:4]) == MAGIC
    big = bytes(prefix_only) + os.urandom(MIB)
    closed = 0
    writers = []
    for kind in ("announce_64mib", "idle"):
        for _ in range(connections):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                closed += 1
                continue
            writers.append((reader, writer))
            if kind == "announce_64mib":
                writer.write(big)
                with contextlib.suppress(ConnectionError, OSError):
                    await writer.drain()
    for reader, writer in writers:
        try:
            async with asyncio.timeout(2.0):
                if await reader.read() == b"":
                    closed += 1
        except (ConnectionError, OSError):
            closed += 1
        except TimeoutError:
            pass
        writer.transport.abort()
    return {"connections": 2 * connections, "closed_by_master": closed}


async def _stream(port: int, key: bytes, files: int, file_mb: int) -> dict[str, Any]:
    """Authenticate as the slave and stream `files` files of `file_mb` MiB; acks received."""
    size = file_mb * MIB
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    nonce = auth.new_nonce()
    hello = {"type": "hello", "role": "slave", "version": PROTOCOL_VERSION, "boot_id": "bench", "nonce": nonce}
    writer.write(encode_frame(hello, limits=HANDSHAKE_LIMITS))
    theirs = await _read_message(reader, HANDSHAKE_LIMITS)
    if theirs is None:
        raise RuntimeError("bench: the master closed the handshake")
    master_nonce = theirs.header["nonce"]
    writer.write(encode_frame({"type": "auth", "proof": auth.proof(key, "slave", nonce, master_nonce)}))
    welcome = await _read_message(reader, HANDSHAKE_LIMITS)
    if welcome is None or welcome.type != "welcome":
        raise RuntimeError(f"bench: no welcome from the master ({welcome})")
    mac = auth.FrameMac(key, "slave", "master", nonce, master_nonce)
    answers: list[str] = []
    done = asyncio.Event()

    async def read_answers() -> None:
        while (msg := await _read_message(reader, FrameLimits())) is not None:
            mac.check(msg.header)
            if msg.type in ("ack", "nack"):
                answers.append(msg.type)
                if len(answers) >= files:
                    done.set()

    answering = asyncio.create_task(read_answers())
    limits = FrameLimits(max_payload_bytes=size)
    t0 = time.perf_counter()
    t_start = datetime(2024, 3, 26, 12, 0, 0, tzinfo=UTC)
    for i in range(files):
        name = str(ImageName(t_start + timedelta(seconds=4 * i), "B", 1, 10_000, "Plume"))
        digest = hashlib.sha256()
        for chunk in _content(i, size):
            digest.update(chunk)
        header = {"type": "file", "name": name, "sha256": digest.hexdigest(), "size": size}
        writer.write(encode_prefix_and_header(mac.sign(header), size, limits))
        for chunk in _content(i, size):
            writer.write(chunk)
            await writer.drain()
        writer.write(encode_frame(mac.sign({"type": "hb"})))
    while not done.is_set():
        writer.write(encode_frame(mac.sign({"type": "hb"})))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 1.0)
    seconds = time.perf_counter() - t0
    answering.cancel()
    writer.transport.abort()
    return {
        "files": files, "file_mb": file_mb, "acks": answers.count("ack"), "nacks": answers.count("nack"),
        "seconds": round(seconds, 2), "mb_per_s": round(files * size / 1e6 / seconds, 1),
    }  # fmt: skip


def run_link_memory_bench(
    connections: int = 64, files: int = 40, file_mb: int = 60, work_dir: str | Path | None = None
) -> dict[str, Any]:
    """Start a master process, flood it and stream to it; its RSS at rest and its peak (VmHWM), in MB."""
    root = Path(tempfile.mkdtemp(prefix="pycam-bench-linkmem-", dir=work_dir))
    proc = None
    try:
        spec = {"key_file": str(auth.create_key(root / "link.key")), "data": str(root / "data"), "port": _free_port()}
        (root / "spec.json").write_text(json.dumps(spec))
        proc = subprocess.Popen(
            [sys.executable, "-m", "controller.bench.link_memory", str(root / "spec.json")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stdin is not None
        port = json.loads(proc.stdout.readline())["port"]
        rest_mb = _proc_kb(proc.pid, "VmRSS") / 1024
        flood = asyncio.run(_flood(port, connections))
        after_flood_mb = _proc_kb(proc.pid, "VmHWM") / 1024
        stream = asyncio.run(_stream(port, auth.load_key(spec["key_file"]), files, file_mb))
        peak_mb = _proc_kb(proc.pid, "VmHWM") / 1024
        proc.stdin.close()
        master = json.loads(proc.stdout.readline())
        proc.wait(timeout=60)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)
    return {
        "master_rss_at_rest_mb": round(rest_mb, 1),
        "master_peak_rss_after_flood_mb": round(after_flood_mb, 1),
        "master_peak_rss_mb": round(peak_mb, 1),
        "flood": flood,
        "stream": stream,
        "master_link": master,
        "target_peak_mb": 150,
    }


def _say(obj: dict) -> None:
    """One JSON line to the parent (the process's protocol on stdout, not a log)."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _serve(spec_path: str) -> None:
    """The master process: a MasterLink on a free loopback port until stdin closes; then its counters."""
    from controller.config import config_from_dict
    from controller.link.master import MasterLink
    from controller.link.receiver import FileReceiver
    from controller.timekeeping.clock import SystemClock

    spec = json.loads(Path(spec_path).read_text())
    cfg = config_from_dict({"network": {**_NETWORK, "link_port": spec["port"], "link_key_file": spec["key_file"]}})

    async def main() -> None:
        master = MasterLink(cfg, SystemClock(), FileReceiver(spec["data"]))
        await master.start()
        _say({"port": master.port})
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await master.stop()
        _say({"stats": master.stats, "refused": master.refused})

    asyncio.run(main())


if __name__ == "__main__":
    from controller.logging import configure_logging

    configure_logging("console", "warning")
    _serve(sys.argv[1])
