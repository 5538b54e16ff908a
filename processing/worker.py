"""The processing worker: a child process (multiprocessing, spawn) that processes pairs and spectra as they land.

Parent side (`ProcessingWorker`, used by the supervisor): `start()`, `stop()`, `notify(name)` ("file stored: name",
from the link receiver / capture), `state`, a `crashed` callback; a watcher thread blocks on the child's sentinel and
reports a death it did not ask for through `crashed` (the supervisor's WorkerService decides on restarts: one
restart policy, controller/supervisor/workerservice.py). The child's events (typed: PairDone, SpectrumDone, Backlog,
Idle, Stopped) are read as they come by a pump thread and handed to `on_event` (the supervisor fires its worker
machine's behind/caught_up from them); at most EVENTS_KEPT unread ones are buffered for `wait_event`.

Child side (`run_child`): blocks on its command queue; each notification is parsed (a station file name, never a
path from outside) and the pair it completes is processed at once; a slow periodic rescan of the data root (and
the first scan at start, which drains any backlog) catches what no notification announced. Memory is bounded:
the PairProcessor keeps the previous AA image and ring buffers, unpaired halves are kept for a bounded number of
slots. Progress is journaled atomically after each pair, and CSV rows are unique by datetime, so a restart after a
crash neither reprocesses nor duplicates rows.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from controller.config import Config
from controller.errors import FileNameError
from controller.logging import get_logger
from controller.storage.atomic import atomic_write_text
from controller.storage.index import is_day
from controller.storage.names import ImageName, SpectrumName, parse_name
from processing.events import Backlog, Idle, PairDone, SpectrumDone, Stopped, WorkerEvent
from processing.memory import fix_mmap_threshold

log = get_logger("processing.worker")

JOURNAL_NAME = "worker_journal.json"
LIVECAL_STATE = "livecal_state.json"  # processing.livecal.STATE_NAME (not imported: the parent stays light)
RESCAN_S = 60.0
JOURNAL_KEEP = timedelta(days=2)
BACKLOG_PAIRS = 5  # unprocessed pairs (scan) or queued notifications / 2 (live) from which the worker is behind
EVENTS_KEPT = 256  # the parent keeps at most this many unread child events (oldest dropped)


# ------------------------------------------------------------------------------------------------- journal


class Journal:
    """Keys (slot times) of the pairs and spectra already processed, persisted atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # "held": pairs whose AA is done but whose rows wait for their calibration (processing.stream)
        self.done: dict[str, set[str]] = {"pairs": set(), "spectra": set(), "held": set()}
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                self.done = {k: set(data.get(k, [])) for k in self.done}
            except (OSError, ValueError) as e:
                log.warning("journal_unreadable", path=str(path), error=str(e))

    def __contains__(self, item: tuple[str, str]) -> bool:
        return item[1] in self.done[item[0]]

    def mark(self, kind: str, key: str) -> None:
        self.done[kind].add(key)
        if kind == "pairs":
            self.done["held"].discard(key)
        self._trim(key)
        self.save()

    def hold(self, key: str) -> None:
        self.done["held"].add(key)
        self.save()

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps({k: sorted(v) for k, v in self.done.items()}))

    def _trim(self, newest: str) -> None:
        # keys are %Y-%m-%dT%H%M%S strings: they sort as times
        horizon = (datetime.strptime(newest, "%Y-%m-%dT%H%M%S") - JOURNAL_KEEP).strftime("%Y-%m-%dT%H%M%S")
        for v in self.done.values():
            for k in [k for k in v if k < horizon]:
                v.discard(k)


# ------------------------------------------------------------------------------------------------- child


class _ChildState:
    """Everything the child process holds. Bounded: pending halves are limited to `max_pending` slots; the
    processing itself is processing.stream.Stream, the same as `pycam process`."""

    def __init__(self, cfg: Config, data_root: Path, out_dir: Path, events: Any) -> None:
        from processing.calibration.cellsearch import LiveCellWindow
        from processing.pipeline import quiet_pyplis
        from processing.stream import Stream

        quiet_pyplis()
        self.cfg = cfg
        self.data_root = data_root
        self.out_dir = out_dir
        self.events = events
        out_dir.mkdir(parents=True, exist_ok=True)
        self.journal = Journal(out_dir / JOURNAL_NAME)
        self.pending: OrderedDict[str, dict[str, Any]] = OrderedDict()  # slot -> band -> ImageFile (name parsed)
        self.max_pending = max(8, cfg.processing.ring_buffer * 4)
        self.stream = Stream(cfg, out_dir, on_pair=self._pair_done, on_spectrum=self._spectrum_done)
        self._setup_key: tuple[int, int] | None = None
        self.cell_window = LiveCellWindow(cfg.processing)

    @property
    def processor(self) -> Any:
        return self.stream.processor

    @property
    def livecal(self) -> Any:
        return self.stream.livecal

    def emit(self, event: WorkerEvent) -> None:
        if self.events is not None:
            self.events.send(event)

    def _pair_done(self, key: str, rows: int) -> None:
        self.journal.mark("pairs", key)
        self.emit(PairDone(key, rows))

    def _spectrum_done(self, key: str) -> None:
        self.journal.mark("spectra", key)
        self.emit(SpectrumDone(key))

    # -- setup from darks / clears found in the data root
    def ensure_setup(self, scan: Any) -> None:
        self.stream.setup(scan)
        self._setup_key = self.stream.setup_key

    def full_scan(self, token: Any = None) -> None:
        """Scan the data root: set up, then process every complete pair and spectrum not yet done (oldest first).

        Ends with Idle(n) (n pairs processed; with the token when asked by `rescan(token)`: that is the process
        phase's drain, which also ends the held pairs and writes the daily products); a scan that finds more than
        BACKLOG_PAIRS pairs to do first says Backlog(n)."""
        from processing.images import scan_folder
        from processing.pairing import pair_images
        from processing.stream import item_order

        if not self.data_root.is_dir():
            self.emit(Idle(0, token))
            return
        scan = scan_folder(self.data_root, self._recent_files())
        self.cell_window.apply(scan)  # cells among plume images, as `pycam process` finds them
        self.ensure_setup(scan)
        pairs, unpaired = pair_images(scan.plume, self.cfg.processing.pair_tolerance_s)
        for half in unpaired[-self.max_pending :]:
            self._remember(half)
        held = {h.pair.key for h in self.stream.held}
        todo = [p for p in pairs if ("pairs", p.key) not in self.journal and p.key not in held]
        if len(todo) > BACKLOG_PAIRS:
            self.emit(Backlog(len(todo)))
        spectra = [s for s in scan.spectra if ("spectra", s.name.time_key) not in self.journal]
        # pairs and spectra in time order, so the DOAS calibration sees them as they were taken
        for _, _, item in item_order(todo, spectra):
            if hasattr(item, "a"):
                self._add_pair(item)
            else:
                self.stream.add_spectrum(item.path, item.name)
        if token is not None:
            self.stream.flush()
        self.emit(Idle(len(todo), token))

    def _recent_files(self) -> list[Path]:
        """Files of the two newest date folders (the journal spans two days), or of a flat root."""
        days = sorted(p for p in self.data_root.iterdir() if p.is_dir() and is_day(p.name))
        folders = days[-2:] if days else [self.data_root]
        files = [p for p in self.data_root.iterdir() if p.is_file()] if days else []
        for folder in folders:
            files += [p for p in folder.rglob("*") if p.is_file()]
        return files

    def _remember(self, half: Any) -> None:
        """Keep an unpaired half (a processing.images ImageFile: its name parsed once, where it came in)."""
        key = half.name.time_key
        self.pending.setdefault(key, {})[half.name.band] = half
        self.pending.move_to_end(key)
        while len(self.pending) > self.max_pending:
            self.pending.popitem(last=False)

    def on_stored(self, name: str) -> None:
        """A file was stored under the data root: process what it completes."""
        from processing.calibration.cellsearch import in_cell_window

        try:
            parsed = parse_name(name)
        except FileNameError as e:
            log.warning("worker_bad_name", name=name, error=str(e))
            return
        path = self.data_root / parsed.date_folder / name
        if not path.is_file():
            path = self.data_root / name  # flat layout
        if not path.is_file():
            return
        if isinstance(parsed, SpectrumName):
            if ("spectra", parsed.time_key) not in self.journal or parsed.kind == "Dark":
                self.stream.add_spectrum(path, parsed)
            return
        if parsed.kind != "Plume" or parsed.darkcorr or in_cell_window(self.cfg.processing, parsed.time):
            # new dark / clear / cell (named, or in processing.cell_window): rebuild the setup at the next full scan
            self._setup_key = None
            return
        self._add_half(parsed, path)

    def _add_half(self, name: ImageName, path: Path) -> None:
        from processing.images import ImageFile
        from processing.pairing import pair_images

        if self.processor is None or self._setup_key is None:
            self.full_scan()
            return
        half = ImageFile(path, name)
        self._remember(half)
        tol = self.cfg.processing.pair_tolerance_s
        t = name.time.timestamp()
        other = "B" if name.band == "A" else "A"
        match = None
        for key, slot in self.pending.items():
            if other in slot:
                dt = abs(slot[other].name.time.timestamp() - t)
                if dt <= tol and (match is None or dt < match[0]):
                    match = (dt, key)
        if match is None:
            return
        other_half = self.pending[match[1]].pop(other)
        if not self.pending[match[1]]:
            del self.pending[match[1]]
        mine = self.pending.get(name.time_key, {})
        mine.pop(name.band, None)
        if not mine:
            self.pending.pop(name.time_key, None)
        files = [half, other_half]
        held = {h.pair.key for h in self.stream.held}
        for pair in pair_images(files, tol)[0]:
            if ("pairs", pair.key) not in self.journal and pair.key not in held:
                self._add_pair(pair)

    def _add_pair(self, pair: Any) -> None:
        self.stream.add_pair(pair)
        if any(h.pair.key == pair.key for h in self.stream.held):
            self.journal.hold(pair.key)  # the sim station's pace counts it as taken, not as backlog


def run_child(cfg: Config, data_root: str, out_dir: str, commands: Any, events: Any) -> None:
    """Child process entry point: block on the command queue; rescan every RESCAN_S seconds."""
    from controller.logging import configure_logging

    configure_logging(cfg.logging.format, cfg.logging.level)
    fix_mmap_threshold()
    state = _ChildState(cfg, Path(data_root), Path(out_dir), events)
    state.full_scan()
    behind = False
    while True:
        try:
            cmd = commands.get(timeout=RESCAN_S)
        except queue.Empty:
            state.full_scan()
            continue
        if cmd[0] == "stop":
            state.emit(Stopped())
            return
        if cmd[0] == "stored":
            state.on_stored(str(cmd[1]))
        elif cmd[0] == "rescan":
            state.full_scan(cmd[1] if len(cmd) > 1 else None)
        # Live backlog (notifications arrive faster than pairs are processed): said once when it starts and once
        # when the queue is short again (one pair's halves), so the parent's machine goes behind / caught_up
        # without an event per pair.
        waiting = _queued(commands)
        if not behind and waiting > 2 * BACKLOG_PAIRS:
            behind = True
            state.emit(Backlog(waiting // 2))
        elif behind and waiting <= 2:
            behind = False
            state.emit(Idle(0))


def _queued(commands: Any) -> int:
    """Commands waiting in the queue (0 where the platform cannot tell)."""
    try:
        return commands.qsize()
    except NotImplementedError:
        return 0


# ------------------------------------------------------------------------------------------------- parent


class ProcessingWorker:
    """Parent-side handle of the worker child process. It reports a crash (`crashed(exitcode)`, from its watcher
    thread) and never restarts the child by itself: the supervisor's WorkerService does, through the worker
    machine. Its `state` is read off the child process, not held."""

    def __init__(
        self,
        cfg: Config,
        data_root: str | Path,
        out_dir: str | Path,
        crashed: Callable[[int | None], None] | None = None,
        on_event: Callable[[WorkerEvent], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.data_root = Path(data_root)
        self.out_dir = Path(out_dir)
        self.crashed = crashed
        self._ctx = mp.get_context("spawn")
        # Events of all child generations are read continuously by a pump thread per child: each goes to `on_event`
        # (called from that thread; the supervisor hops to its loop) and into a bounded buffer for `wait_event`.
        self.on_event = on_event
        self._events: deque[WorkerEvent] = deque(maxlen=EVENTS_KEPT)
        self._events_cond = threading.Condition()
        self.events_received = 0
        self._commands = None
        self._proc = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self.restarts = 0  # starts after a crash

    @property
    def state(self) -> str:
        """ "stopped" (no child), "running" (the child is alive) or "crashed" (it died unasked)."""
        proc = self._proc
        if proc is None:
            return "stopped"
        return "running" if proc.is_alive() else "crashed"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _spawn(self) -> None:
        # Fresh queue and pipe per child: a child killed while holding a queue's lock must not block the next.
        self._commands = self._ctx.Queue()
        reader, writer = self._ctx.Pipe(duplex=False)
        self._proc = self._ctx.Process(
            target=run_child,
            args=(self.cfg, str(self.data_root), str(self.out_dir), self._commands, writer),
            name="pycam-processing",
            daemon=True,
        )
        self._proc.start()
        writer.close()  # the child holds the only write end: EOF here when it exits
        threading.Thread(target=self._pump, args=(reader,), name="worker-events", daemon=True).start()
        log.info("worker_child_spawned", pid=self._proc.pid)

    def _pump(self, reader: Any) -> None:
        try:
            while True:
                self._deliver(reader.recv())
        except (EOFError, OSError):
            pass
        finally:
            reader.close()

    def _deliver(self, event: WorkerEvent) -> None:
        with self._events_cond:
            self._events.append(event)
            self.events_received += 1
            self._events_cond.notify_all()
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:  # a faulty callback must not stop the pump (the child would block on a full pipe)
                log.exception("worker_event_callback_failed", event=event.kind)

    @property
    def events_buffered(self) -> int:
        return len(self._events)

    def start(self) -> None:
        """Spawn the child (again, after a crash); nothing when it is alive."""
        with self._lock:
            if self.state == "running":
                return
            if self.state == "crashed":
                self.restarts += 1
            self._stopping.clear()
            self._spawn()
            self._watcher = threading.Thread(target=self._watch, args=(self._proc,), name="worker-watch", daemon=True)
            self._watcher.start()

    def _watch(self, proc: Any) -> None:
        """Block on the child's sentinel; report a death nobody asked for."""
        proc.join()
        if self._stopping.is_set():
            return
        code = proc.exitcode
        log.error("worker_crashed", exitcode=code, restarts=self.restarts)
        if self.crashed is not None:
            try:
                self.crashed(code)
            except Exception:  # a faulty callback is logged, not raised in a daemon thread
                log.exception("worker_crash_callback_failed")

    def notify(self, name: str) -> None:
        """Tell the child a file was stored under the data root (its name only)."""
        if self._commands is not None and self.state == "running":
            self._commands.put(("stored", name))

    def rescan(self, token: Any = None) -> None:
        """Ask for a full scan; it ends with Idle(n, token)."""
        if self._commands is not None:
            self._commands.put(("rescan",) if token is None else ("rescan", token))

    def stop(self, timeout_s: float = 30.0) -> None:
        with self._lock:
            if self._proc is None:
                return
            self._stopping.set()
            proc = self._proc
        try:
            self._commands.put(("stop",))
        except (OSError, ValueError):
            pass
        proc.join(timeout_s)
        if proc.is_alive():
            proc.terminate()
            proc.join(5.0)
        if self._watcher is not None:
            self._watcher.join(5.0)
        self._proc = None
        log.info("worker_child_stopped")

    def wait_event(self, kind: str, timeout_s: float) -> WorkerEvent | None:
        """Next event of `kind` from the child ("pair", "idle", "backlog", "spectrum"), or None on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._events_cond:
            while True:
                while self._events:
                    ev = self._events.popleft()
                    if ev.kind == kind:
                        return ev
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._events_cond.wait(left)


__all__ = [
    "Backlog", "Idle", "Journal", "PairDone", "ProcessingWorker", "SpectrumDone", "Stopped", "WorkerEvent", "run_child",
]  # fmt: skip
