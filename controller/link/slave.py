"""The slave's link end: dials the master, reconnects by itself, and drains the spool.

The slave trusts a master only after it proved the link key (auth.py): nothing is sent to, and no ack is taken
from, a peer that did not. Reconnection uses capped exponential backoff (network.backoff_max_s) with jitter, so a master that comes back is
reached within about backoff_max_s. Files go oldest first with at most `window` unanswered at a time; a file
leaves the spool only on the master's ack (stored or duplicate). A nack "checksum" resends it, "storage" pauses
sending for a while (master disk trouble), "invalid" or "conflict" (a different file of that name is already on
the master) moves it aside in the spool's rejected/ folder for a person: it can never be accepted.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from pathlib import Path
from typing import Any

from controller.config import Config
from controller.errors import LinkError, ProtocolError, StorageError
from controller.link import auth
from controller.link.endpoint import LinkEndpoint, Session, header_field
from controller.link.framing import FrameLimits, Message
from controller.link.spool import Spool
from controller.timekeeping.clock import Clock

BACKOFF_BASE_S = 0.05
DEFAULT_WINDOW = 8


def _load(spool: Spool, name: str) -> tuple[int, Path, int, str]:
    """(seq, path, size, sha256) of a pending file, hashed in chunks. KeyError if it is not pending (any more)."""
    seq, path = spool.entry(name)
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
            size = fh.tell()
    except FileNotFoundError as e:
        # Acked and removed while we looked, or gone under the index (removed by another Spool object's late
        # thread): forget the entry if it is still this one, or the sender would pick it again forever.
        spool.remove(name, seq)
        raise KeyError(name) from e
    except OSError as e:
        raise StorageError(e.errno, f"cannot read spool file {path}: {e.strerror or e}") from e
    return seq, path, size, digest.hexdigest()


class SlaveLink(LinkEndpoint):
    role = "slave"
    peer_role = "master"

    def __init__(
        self,
        cfg: Config,
        clock: Clock,
        spool: Spool,
        *,
        window: int = DEFAULT_WINDOW,
        limits: FrameLimits | None = None,
        key: bytes | None = None,
    ):
        super().__init__(cfg, clock, limits=limits, key=key)
        if window < 1:
            raise ValueError("window must be >= 1")
        self.spool = spool
        self.window = window
        self._runner: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._hold_until = 0.0
        self.stats = {
            "sent": 0, "stored": 0, "duplicate": 0, "resent": 0, "rejected": 0, "connects": 0, "refused": 0,
            "unproven_master": 0,
        }  # fmt: skip

    # ------------------------------------------------------------------------------------------- public API

    async def start(self) -> None:
        if self._runner is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._runner = self._loop.create_task(self._run())

    async def stop(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        if self._session is not None:
            self._session_down(self._session, "stopped")
        self._fire("close")
        self._log.info("link_stopped")

    def spool_notify(self) -> None:
        """Wake the sender after a file was added to the spool. Safe from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    async def flush(self, timeout_s: float) -> bool:
        """True once the spool is empty (everything acknowledged by the master), False on timeout."""
        self.spool_notify()

        async def drained() -> None:
            while len(self.spool):
                await self._progress.wait()

        try:
            await asyncio.wait_for(drained(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def measure_offset(self, samples: int = 8) -> tuple[float, float]:
        """(master_time - slave_time, round trip) from the sample with the shortest round trip (NTP style)."""
        if samples < 1:
            raise ValueError("samples must be >= 1")
        best: tuple[float, float] | None = None
        for _ in range(samples):
            session = self._session
            if session is None or not self.connected:
                raise LinkError("link down: cannot measure the clock offset")
            rid = next(self._ids)
            fut = asyncio.get_running_loop().create_future()
            session.pending[rid] = fut
            try:
                t0 = self.clock.time()
                await session.send({"type": "time_req", "id": rid})
                rep = await asyncio.wait_for(fut, self.net.link_timeout_s)
                t3 = self.clock.time()
            except TimeoutError as e:
                raise LinkError("time request: no reply") from e
            finally:
                session.pending.pop(rid, None)
            t1, t2 = header_field(rep, "t1", (int, float)), header_field(rep, "t2", (int, float))
            offset = ((t1 - t0) + (t2 - t3)) / 2.0
            rtt = (t3 - t0) - (t2 - t1)
            if best is None or rtt < best[1]:
                best = (offset, rtt)
        assert best is not None
        return best

    def describe(self) -> dict[str, Any]:
        return {"state": self.state, "peer": self.peer, "spool": len(self.spool), "stats": dict(self.stats)}

    # ----------------------------------------------------------------------------------------- internals

    def _backoff_s(self, attempt: int) -> float:
        cap = self.net.backoff_max_s
        # Jitter downwards only, so the cap really is the longest wait.
        return min(cap, BACKOFF_BASE_S * (2**attempt)) * random.uniform(0.5, 1.0)

    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            self._fire("dial")
            session = await self._connect()
            if session is None:
                delay = self._backoff_s(attempt)
                attempt += 1
                await asyncio.sleep(delay)
                continue
            attempt = 0
            self.stats["connects"] += 1
            self._session_up(session)
            reason = await self._serve(session)
            self._session_down(session, reason)
            self._fire("fail", reason=reason)
            await asyncio.sleep(self._backoff_s(0))

    async def _connect(self) -> Session | None:
        """Dial and say hello; None (state: backoff) when that fails."""
        host, port = self.net.master_host, self.net.link_port
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=1 << 20), self.net.link_timeout_s
            )
        except (OSError, TimeoutError) as e:
            self._fire("fail", reason=f"connect to {host}:{port}: {e}")
            return None
        session = self._new_session(reader, writer)
        self._fire("tcp_up")
        try:
            async with asyncio.timeout(self.net.link_timeout_s):
                await self._handshake(session)
        except (LinkError, ProtocolError, TimeoutError) as e:
            session.close("handshake failed")
            error = str(e) or f"no complete handshake within {self.net.link_timeout_s} s"
            self._log.warning("handshake_failed", address=session.address, error=error)
            self._fire("fail", reason=f"handshake: {error}")
            return None
        self._fire("hello_ok")
        return session

    async def _handshake(self, session: Session) -> None:
        """Our nonce; the master's proof over both nonces (else nothing more is said); our proof; welcome."""
        nonce = auth.new_nonce()
        await session.send({**self._hello(), "nonce": nonce})
        hello = await session.recv()
        session.peer = self._check_hello(hello)
        master_nonce = auth.check_nonce(hello.header.get("nonce"))
        if not auth.verify(self.key, "master", nonce, master_nonce, hello.header.get("proof")):
            self.stats["unproven_master"] += 1
            raise ProtocolError("the peer did not prove the link key: not our master, nothing is sent to it")
        await session.send({"type": "auth", "proof": auth.proof(self.key, "slave", nonce, master_nonce)})
        answer = await session.recv()
        if answer.type == "refused":
            self.stats["refused"] += 1
            raise LinkError(f"the master refused this slave: {str(answer.header.get('reason'))[:200]}")
        if answer.type != "welcome":
            raise ProtocolError(f"expected welcome, got {answer.type!r}")
        session.mac = auth.FrameMac(self.key, "slave", "master", nonce, master_nonce)

    def _session_tasks(self, session: Session) -> list:
        return [self._send_loop(session)]

    def _notify_progress(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    async def _send_loop(self, session: Session) -> None:
        loop = asyncio.get_running_loop()
        while True:
            hold = self._hold_until - loop.time()
            if hold > 0:
                await asyncio.sleep(hold)
                continue
            self._wake.clear()
            names = self.spool.head(self.window - len(session.in_flight), skip=session.in_flight.keys())
            if not names:
                await self._wake.wait()
                continue
            for name in names:
                try:
                    seq, path, size, sha = await loop.run_in_executor(None, _load, self.spool, name)
                except KeyError:
                    continue  # acked by an older session or replaced meanwhile; the next round sees it
                except StorageError as e:
                    self._log.error("spool_read_failed", file=name, error=str(e))
                    self._hold_until = loop.time() + self.net.backoff_max_s
                    break
                if size > self.limits.max_payload_bytes:
                    # The master refuses it unread: keep it aside for a person instead of retrying forever.
                    self.stats["rejected"] += 1
                    why = f"{size} bytes, over network.link_max_file_mb ({self.net.link_max_file_mb} MiB)"
                    await loop.run_in_executor(None, self.spool.reject, name, why)
                    continue
                session.in_flight[name] = seq
                await session.send_file({"type": "file", "name": name, "sha256": sha, "size": size}, path, size)
                self.stats["sent"] += 1

    async def _on_message(self, session: Session, msg: Message) -> None:
        if msg.type not in ("ack", "nack"):
            raise ProtocolError(f"unexpected message type {msg.type!r} from the master")
        name = header_field(msg.header, "name", str)
        seq = session.in_flight.pop(name, None)
        if seq is None:
            return  # an answer for a file this session did not send (cannot happen with a sane master)
        loop = asyncio.get_running_loop()
        if msg.type == "ack":
            status = header_field(msg.header, "status", str)
            await loop.run_in_executor(None, self.spool.remove, name, seq)
            self.stats["duplicate" if status == "duplicate" else "stored"] += 1
            self._emit("file_acked", name=name, status=status)
        else:
            reason = header_field(msg.header, "reason", str)
            error = msg.header.get("error", "")
            if reason == "checksum":
                self.stats["resent"] += 1
                self._log.warning("file_resend", file=name, error=error)
            elif reason in ("invalid", "conflict"):
                # The master can never accept this file: keep it aside for a person rather than retry forever.
                self.stats["rejected"] += 1
                await loop.run_in_executor(None, self.spool.reject, name, str(error))
            else:
                # The master cannot store now (disk full, permissions): keep everything, try again later.
                self._log.error("master_cannot_store", file=name, reason=reason, error=error)
                self._hold_until = loop.time() + self.net.backoff_max_s
        self._wake.set()
        self._notify_progress()
