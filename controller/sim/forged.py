"""Impostors on the link, for tests and the soak: a forged slave and a fake master, neither holding the key.

`forged_slave` dials the master as a slave would, says a hello, answers the master's challenge with a guess and
then sends a file anyway; `FakeMaster` listens where the slave dials (through the fault proxy's `divert`), answers
the slave's hello with a made-up proof, then welcomes it and acknowledges every file it hears of, and a list of
names it was told, without storing anything. Against a link that checks the key, the forged slave stores nothing
and never becomes the session, and the fake master's acks delete nothing from the spool.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller.errors import LinkError, ProtocolError
from controller.link.auth import new_nonce
from controller.link.endpoint import PROTOCOL_VERSION
from controller.link.framing import FrameLimits, encode_frame, read_message
from controller.logging import get_logger
from controller.storage.names import ImageName

_READ_LIMITS = FrameLimits(max_header_bytes=64 * 1024, max_payload_bytes=64 * 1024 * 1024)
log = get_logger("sim.forged")


def _hello(role: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "hello", "role": role, "version": PROTOCOL_VERSION, "boot_id": uuid.uuid4().hex,
        "station": "impostor", **extra,
    }  # fmt: skip


async def forged_slave(host: str, port: int, file_name: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """One forged-slave attempt. What came back: the message types received and whether the master closed."""
    received: list[str] = []
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    try:
        writer.write(encode_frame(_hello("slave", nonce=new_nonce())))
        payload = b"forged image"
        writer.write(encode_frame({"type": "auth", "proof": secrets.token_hex(32)}))
        header = {"type": "file", "name": file_name, "sha256": hashlib.sha256(payload).hexdigest()}
        writer.write(encode_frame({**header, "size": len(payload)}, payload))
        with contextlib.suppress(ConnectionError, OSError):
            await writer.drain()
        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    msg = await read_message(reader, _READ_LIMITS)
                except (LinkError, ProtocolError, ConnectionError, OSError):
                    break
                if msg is None:
                    break
                received.append(msg.type)
    finally:
        writer.transport.abort()
    result = {"received": received, "closed": True, "acked": "ack" in received}
    log.info("forged_slave_attempt", **result)
    return result


class FakeMaster:
    """A server posing as the master without the key. `acks_sent` counts the acks it managed to send."""

    def __init__(self, names_to_ack: list[str] | None = None, host: str = "127.0.0.1"):
        self.host = host
        self.names_to_ack = list(names_to_ack or [])
        self.connections = 0
        self.files_received = 0
        self.acks_sent = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return self._server.sockets[0].getsockname()[1]

    async def start(self, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._on_client, self.host, port, reuse_address=True)
        return self.port

    def counters(self) -> dict[str, int]:
        return {"connections": self.connections, "files_received": self.files_received, "acks_sent": self.acks_sent}

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            msg = await asyncio.wait_for(read_message(reader, _READ_LIMITS), 5.0)
            if msg is None or msg.type != "hello":
                return
            # A made-up proof, then everything a real master would say next, without waiting to be trusted.
            writer.write(encode_frame(_hello("master", nonce=new_nonce(), proof=secrets.token_hex(32))))
            writer.write(encode_frame({"type": "welcome"}))
            for name in self.names_to_ack:
                writer.write(encode_frame({"type": "ack", "name": name, "status": "stored"}))
                self.acks_sent += 1
            await writer.drain()
            while (msg := await asyncio.wait_for(read_message(reader, _READ_LIMITS), 5.0)) is not None:
                if msg.type == "file":
                    self.files_received += 1
                    writer.write(encode_frame({"type": "ack", "name": msg.header.get("name"), "status": "stored"}))
                    self.acks_sent += 1
                    await writer.drain()
        except (LinkError, ProtocolError, ConnectionError, OSError, TimeoutError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()


def _spool_names(spool_dir: Path) -> list[str]:
    """The names waiting in a spool (`<seq>.<name>`): what an attacker who knows the naming would ack."""
    with contextlib.suppress(OSError):
        return [p.name.partition(".")[2] for p in spool_dir.iterdir() if p.is_file() and p.name[:1].isdigit()]
    return []


async def forged_peer_fault(
    out: Path, master_port: int, proxy: Any, netns: tuple[str, str] | None, master_addr: str, down_s: float
) -> dict[str, Any]:
    """The soak's forged peer: a forged slave dials the master, then a fake master (without the key) stands where
    the slave dials for `down_s` seconds, acking every name in the slave's spool. On loopback the fake master sits
    behind the fault proxy (`divert`); with namespaces it takes the master's address inside the slave's namespace
    (the slave's packets to the master then stay local), as an address hijack on the cable would."""
    spool_names = _spool_names(out / "slave" / "spool")
    name = min(spool_names, default=str(ImageName(datetime(2024, 3, 1, 11, tzinfo=UTC), "B", 1, 2000, "Plume")))
    if netns is None:
        forged = await forged_slave("127.0.0.1", master_port, name)
        fake = FakeMaster(spool_names)
        await fake.start()
        proxy.divert(("127.0.0.1", fake.port))
        proxy.cut()
        await asyncio.sleep(down_s)
        proxy.divert(None)
        proxy.cut()  # the slave's next dial reaches the real master again
        await fake.stop()
        return {"forged_slave": forged, "fake_master": fake.counters()}
    py = [sys.executable, "-m", "controller.sim.forged"]
    slave_run = await _run_in(netns[1], [*py, "slave", master_addr, str(master_port), name], timeout_s=15.0)
    add = ["ip", "-n", netns[1], "addr", "add", f"{master_addr}/32", "dev", "lo"]
    subprocess.run(add, capture_output=True, check=True)
    try:
        (out / "fake-master-names.json").write_text(json.dumps(spool_names))
        args = [*py, "master", master_addr, str(master_port), str(down_s), str(out / "fake-master-names.json")]
        master_run = await _run_in(netns[1], args, timeout_s=down_s + 15.0)
    finally:
        subprocess.run(["ip", "-n", netns[1], "addr", "del", f"{master_addr}/32", "dev", "lo"], capture_output=True)
    return {"forged_slave": slave_run, "fake_master": master_run}


async def _run_in(netns: str, argv: list[str], timeout_s: float) -> dict[str, Any]:
    """Run `argv` in a network namespace; its one JSON line of output."""
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", netns, *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ},
    )  # fmt: skip
    try:
        stdout, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return {"error": f"no answer within {timeout_s} s"}
    try:
        return json.loads(stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"exit {proc.returncode}, no result"}


async def _main(argv: list[str]) -> dict[str, Any]:
    if argv[0] == "slave":
        return await forged_slave(argv[1], int(argv[2]), argv[3])
    fake = FakeMaster(json.loads(Path(argv[4]).read_text()), host=argv[1])
    await fake.start(int(argv[2]))
    await asyncio.sleep(float(argv[3]))
    await fake.stop()
    return fake.counters()


if __name__ == "__main__":
    # The namespaced halves of forged_peer_fault: `slave HOST PORT NAME` or `master HOST PORT SECONDS NAMES_JSON`.
    sys.stdout.write(json.dumps(asyncio.run(_main(sys.argv[1:]))) + "\n")
