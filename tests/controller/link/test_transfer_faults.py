"""Lossless transfer under abuse: a backlog drained through a proxy that cuts, corrupts and stalls the link,
while master and slave objects are replaced by new ones (same dirs) at random moments and new captures keep
arriving. Afterwards every file is on the master exactly once, byte-identical, and the spool is empty."""

from __future__ import annotations

import asyncio
import random

import pytest

from controller.link.spool import Spool
from controller.storage.atomic import TEMP_PREFIX

from .conftest import proxied_pair, run, station_names

IMAGE_BYTES = 630_000  # a 648x486 16-bit PNG is about this size


async def chaos_transfer(tmp_path, port, *, seed: int, backlog: int, images: int, live: int, actions: int) -> dict:
    rng = random.Random(seed)
    names = station_names(backlog + live)
    content: dict[str, bytes] = {}
    counters = {"checksum": 0, "duplicate_acks": 0, "master_restarts": 0, "slave_restarts": 0}
    async with proxied_pair(tmp_path, port, window=8) as (pair, proxy):
        # the backlog of an outage: a few image-size files first, then many small ones
        for i, name in enumerate(names[:backlog]):
            size = IMAGE_BYTES if i < images else rng.randint(1, 5000)
            content[name] = rng.randbytes(size)
            pair.spool.add(name, content[name])
        masters = [pair.master]
        slaves = []
        proxy.corrupt_after(100_000, "up")  # lands inside the first image's payload: must be resent
        slaves.append(await pair.start_slave())
        loop = asyncio.get_running_loop()

        # The capture code and the slave link live in one process: a slave restart never overlaps an add.
        slave_process = asyncio.Lock()

        async def acquire() -> None:
            """New captures go on while the backlog drains; a few delivered files are spooled again, as after
            a slave crash between the master's ack and the spool removal."""
            for name in names[backlog:]:
                data = rng.randbytes(rng.randint(1, 3000))
                async with slave_process:
                    await loop.run_in_executor(None, pair.spool.add, name, data)
                    content[name] = data
                    if rng.random() < 0.1:
                        delivered = [n for n in list(content)[:backlog] if n not in pair.spool]
                        if delivered:
                            again = rng.choice(delivered)
                            await loop.run_in_executor(None, pair.spool.add, again, content[again])
                    pair.slave.spool_notify()
                await asyncio.sleep(rng.uniform(0.0, 0.02))

        producer = asyncio.create_task(acquire())
        for _ in range(actions):
            await asyncio.sleep(rng.uniform(0.01, 0.08))
            action = rng.choices(
                ["cut_after", "cut", "corrupt", "restart_master", "restart_slave", "stall"],
                weights=[5, 2, 3, 2, 2, 1],
            )[0]
            if action == "cut_after":
                proxy.cut_after(rng.randint(0, 400_000), rng.choice(["up", "down", "any"]))
            elif action == "cut":
                proxy.cut()
            elif action == "corrupt":
                proxy.corrupt_after(rng.randint(0, 400_000), rng.choice(["up", "up", "down"]))
            elif action == "restart_master":
                await pair.master.stop()
                if rng.random() < 0.5:
                    await asyncio.sleep(rng.uniform(0, 0.2))
                masters.append(await pair.start_master())
                counters["master_restarts"] += 1
            elif action == "restart_slave":
                async with slave_process:
                    await pair.slave.stop()
                    slaves.append(await pair.start_slave())
                counters["slave_restarts"] += 1
            else:
                proxy.stall()
                await asyncio.sleep(rng.uniform(0.05, 0.6))  # longer than link_timeout_s sometimes
                proxy.resume()
        await producer
        assert await pair.slave.flush(30), f"spool not drained: {len(pair.spool)} left"

        counters["checksum"] = sum(m.stats["checksum"] for m in masters)
        counters["duplicate_acks"] = sum(s.stats["duplicate"] for s in slaves)
        counters["proxy_corruptions"] = proxy.count("corrupt")
        counters["proxy_cuts"] = proxy.count("cut_at") + proxy.count("cut")
        counters["connects"] = sum(s.stats["connects"] for s in slaves)
        stored = pair.stored()  # asserts no name is stored twice (in any date folder)

    assert sorted(stored) == sorted(content)
    for name, data in content.items():
        assert stored[name].read_bytes() == data, f"{name} differs"
    assert not any(p.name.startswith(TEMP_PREFIX) for p in (tmp_path / "data").rglob("*"))
    assert len(Spool(tmp_path / "spool")) == 0
    assert [p.name for p in (tmp_path / "spool").iterdir()] == []
    return counters


def test_backlog_of_500_files_survives_cuts_corruption_and_restarts(tmp_path, port):
    counters = run(
        chaos_transfer(tmp_path, port, seed=4, backlog=500, images=5, live=100, actions=60),
        timeout_s=60,
    )
    assert counters["checksum"] >= 1  # the corrupted image was detected and sent again
    assert counters["duplicate_acks"] >= 1  # files spooled twice were stored once
    assert counters["master_restarts"] >= 1 and counters["slave_restarts"] >= 1
    assert counters["proxy_cuts"] >= 1 and counters["connects"] > counters["slave_restarts"] + 1


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 12, 13])
def test_long_chaos_transfer(tmp_path, port, seed):
    counters = run(
        chaos_transfer(tmp_path, port, seed=seed, backlog=2000, images=20, live=400, actions=300),
        timeout_s=300,
    )
    assert counters["checksum"] >= 1 and counters["duplicate_acks"] >= 1
