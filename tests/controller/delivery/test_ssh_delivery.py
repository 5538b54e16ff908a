"""Delivery against a real OpenSSH server (controller.delivery.observatory): files arrive whole, the local copies
stay, and an uplink cut mid-transfer ends with the file whole on the server and the queue drained."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from controller.config import config_from_dict
from controller.delivery import make_delivery
from controller.delivery.observatory import Observatory, sshd_available
from tests.controller.supervisor.conftest import wait_for

pytestmark = pytest.mark.skipif(not sshd_available(), reason="needs openssh-server, ssh-keygen and rsync")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _config(tmp: Path, obs: Observatory, **delivery):
    return config_from_dict(
        {
            "station": {"name": "teststation"},
            "storage": {"data_root": str(tmp / "data"), "state_dir": str(tmp / "state")},
            "delivery": obs.delivery_config(
                **{"scan_interval_s": 0.2, "retry_initial_s": 0.3, "retry_max_s": 2.0, "timeout_s": 4.0, **delivery}
            ),
        }
    )


def _observatory(tmp: Path, netns: bool) -> Observatory:
    if netns and os.geteuid() != 0:
        pytest.skip("a network namespace needs root")
    return Observatory(tmp / "observatory", netns=netns)


@pytest.mark.parametrize("netns", [False, True], ids=["loopback", "netns"])
def test_results_and_status_reach_the_observatory_and_stay_local(tmp_path, netns):
    processed = tmp_path / "processed"
    (processed / "2024-03-01").mkdir(parents=True)
    (processed / "2024-03-01" / "summary_2024-03-01.json").write_text('{"mean": 1}')
    (processed / "emission_rates_line0_flow.csv").write_text("Time,flux\n")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "status.json").write_text('{"state": "acquire"}')
    (tmp_path / "state" / "settings.json").write_text("{}")  # not a delivered file
    with _observatory(tmp_path, netns) as obs:
        cfg = _config(tmp_path, obs)

        async def main():
            svc = make_delivery(cfg, processed)
            await svc.start()
            try:
                await wait_for(lambda: svc.status()["delivered_files"] == 3, 60, "3 files delivered")
                # A file written later is pushed too; a CSV that grew is sent again.
                (processed / "2024-03-01" / "plot_2024-03-01.png").write_bytes(os.urandom(5000))
                with open(processed / "emission_rates_line0_flow.csv", "a") as fh:
                    fh.write("2024-03-01 11:00:00,0.3\n")
                svc.notify()
                await wait_for(
                    lambda: svc.status()["delivered_files"] == 4 and svc.status()["state"] == "idle",
                    60, "the new and the changed file delivered",
                )  # fmt: skip
                return svc.status()
            finally:
                await svc.stop()

        status = asyncio.run(main())
        remote = obs.remote_dir / "teststation"
        got = {p.relative_to(remote).as_posix() for p in obs.files()}
        assert got == {
            "processed/2024-03-01/summary_2024-03-01.json", "processed/2024-03-01/plot_2024-03-01.png",
            "processed/emission_rates_line0_flow.csv", "status/status.json",
        }  # fmt: skip
        for rel in got:
            kind, _, sub = rel.partition("/")
            local = (processed if kind == "processed" else tmp_path / "state") / sub
            assert local.exists(), f"{local} was deleted by delivery"
            assert _sha(local) == _sha(remote / rel)
        assert status["state"] == "idle" and status["lag_s"] == 0.0 and status["failures_in_a_row"] == 0


@pytest.mark.slow  # end-to-end: a 3 MB transfer at 256 kbit/s through a real sshd, cut and resumed (15-35 s)
@pytest.mark.parametrize("netns", [False, True], ids=["loopback-sshd-killed", "netns-veth-down"])
def test_uplink_cut_mid_transfer_resumes_and_the_file_arrives_whole(tmp_path, netns):
    processed = tmp_path / "processed"
    processed.mkdir()
    big = processed / "raw_day.bin"
    big.write_bytes(os.urandom(3 * 2**20))
    (processed / "small.csv").write_text("a,b\n1,2\n")
    with _observatory(tmp_path, netns) as obs:
        cfg = _config(tmp_path, obs, bwlimit_kbps=256)
        remote = obs.remote_dir / "teststation" / "processed"
        partial = remote / ".rsync-partial" / big.name

        def in_flight() -> int:  # bytes of the file rsync is writing under a temporary name (or its partial)
            temps = list(remote.glob(f".{big.name}.*")) if remote.is_dir() else []
            return max([p.stat().st_size for p in temps if p.exists()] + [0])

        async def main():
            svc = make_delivery(cfg, processed)
            await svc.start()
            try:
                await wait_for(lambda: in_flight() > 256 * 1024, 120, "the transfer under way")
                obs.cut()
                await wait_for(lambda: svc.status()["state"] == "backoff", 120, "the run failing on the cut")
                cut_status = svc.status()
                if netns:  # the server's rsync timed out and kept what it had (the next run resumes from it)
                    await wait_for(partial.exists, 120, "the partial file kept on the server")
                obs.restore()
                await wait_for(lambda: svc.status()["backlog_files"] == 0 and svc.status()["state"] == "idle", 180,
                            "the queue drained")  # fmt: skip
                return cut_status, svc.status()
            finally:
                await svc.stop()

        cut_status, final = asyncio.run(main())
        assert cut_status["backlog_files"] == 2 and cut_status["failures_in_a_row"] >= 1
        assert cut_status["last_error"] and cut_status["next_retry_in_s"] is not None
        assert _sha(remote / big.name) == _sha(big)  # whole, nothing lost
        assert (remote / "small.csv").read_text() == "a,b\n1,2\n"
        assert big.exists() and (processed / "small.csv").exists()  # local data never deleted
        assert final["delivered_files"] == 2 and final["state"] == "idle"
        if netns:  # resumed: the run after the cut matched the server's partial file instead of resending it
            assert final["bytes_matched"] >= 256 * 1024, final
            assert final["bytes_sent"] < big.stat().st_size, final  # (a failed run prints no figures)

        # The queue persisted: a restarted service finds nothing left to send.
        async def again():
            svc = make_delivery(cfg, processed)
            await svc.start()
            try:
                return svc.status()
            finally:
                await svc.stop()

        assert asyncio.run(again())["delivered_files"] == 2


def test_the_last_push_at_stop_ends_although_the_logs_keep_changing(tmp_path):
    """Regression: the push at stop rescanned until nothing changed, but the logs (and status.json) change while
    they are sent, so it ran until the supervisor's shutdown step limit cut it."""
    from structlog.testing import capture_logs

    processed, logs = tmp_path / "processed", tmp_path / "logs"
    processed.mkdir()
    logs.mkdir()
    log = logs / "master.log"
    with _observatory(tmp_path, False) as obs:
        cfg = _config(tmp_path, obs, log_dir=str(logs), scan_interval_s=3600.0)

        async def main():
            svc = make_delivery(cfg, processed)
            await svc.start()
            stop_writing = asyncio.Event()

            async def writer():  # a log that grows all the time, as the supervisor's own
                n = 0
                while not stop_writing.is_set():
                    with open(log, "a") as fh:
                        fh.write(f"line {n}\n")
                    n += 1
                    await asyncio.sleep(0.01)

            task = asyncio.ensure_future(writer())
            await wait_for(log.exists, 10, "the log")
            (processed / "summary_2024-03-01.json").write_text("{}")  # written just before the stop
            with capture_logs() as events:
                await asyncio.wait_for(svc.stop(), 120)  # the safety net only
            stop_writing.set()
            await task
            return events, svc.status()

        events, status = asyncio.run(main())
        assert not [e for e in events if e["event"] == "delivery_final_push_timeout"]
        assert status["state"] == "stopped"
        remote = obs.remote_dir / "teststation"
        assert (remote / "processed" / "summary_2024-03-01.json").exists() and (remote / "logs" / "master.log").exists()
