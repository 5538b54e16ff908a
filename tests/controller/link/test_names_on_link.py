"""Issue 11 finding 7 on the link: a name the parser refuses (4300 digits, leading zeros, Arabic-Indic digits) was
dropped with an uncaught error and the slave never got an answer. Every file gets an ack or a nack; a refused one
is kept aside on the slave, not resent forever."""

from __future__ import annotations

import asyncio
import hashlib

from controller.link import auth
from controller.link.endpoint import PROTOCOL_VERSION
from controller.link.framing import HANDSHAKE_LIMITS, encode_frame, read_message

from .conftest import LinkPair, link_config, run, station_names

BAD_NAMES = [
    "2019-09-18T074335_fltrB_" + "9" * 4300 + "ag_199994ss_Plume.png",
    "2019-09-18T074335_fltrB_001ag_199994ss_Plume.png",
    "2019-09-18T074335_fltrB_\u0661ag_199994ss_Plume.png",
    "../../etc/passwd",
]


async def authenticated(port: int, key: bytes):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    nonce = auth.new_nonce()
    hello = {"type": "hello", "role": "slave", "version": PROTOCOL_VERSION, "boot_id": "t", "nonce": nonce}
    writer.write(encode_frame(hello, limits=HANDSHAKE_LIMITS))
    theirs = await read_message(reader, HANDSHAKE_LIMITS)
    writer.write(encode_frame({"type": "auth", "proof": auth.proof(key, "slave", nonce, theirs.header["nonce"])}))
    assert (await read_message(reader, HANDSHAKE_LIMITS)).type == "welcome"
    return reader, writer, auth.FrameMac(key, "slave", "master", nonce, theirs.header["nonce"])


def test_every_refused_name_gets_a_nack_and_the_link_stays_up(tmp_path, port):
    async def scenario():
        # this test's own client sends no heartbeats: a busy machine must not make the master drop it as silent
        cfg = link_config(port, link_timeout_s=30.0)
        pair = LinkPair(tmp_path, cfg)
        master = await pair.start_master()
        reader, writer, mac = await authenticated(port, auth.load_key(cfg.network.link_key_file))
        good = station_names(1)[0]
        for name in [*BAD_NAMES, good]:
            data = name.encode()[:100]
            header = {"type": "file", "name": name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            writer.write(encode_frame(mac.sign(header), data))
        answers = []
        while len(answers) < len(BAD_NAMES) + 1:
            msg = await read_message(reader)
            mac.check(msg.header)
            if msg.type in ("ack", "nack"):
                answers.append((msg.header["name"], msg.type, msg.header.get("reason")))
        assert sorted(answers) == sorted([(n, "nack", "invalid") for n in BAD_NAMES] + [(good, "ack", None)])
        assert master.stats["invalid"] == len(BAD_NAMES) and master.connected
        writer.transport.abort()
        await master.stop()

    run(scenario())


def test_slave_keeps_a_refused_name_aside_instead_of_resending_it(tmp_path, port):
    async def scenario():
        pair = LinkPair(tmp_path, link_config(port))
        legacy = "2019-09-18T074335_fltrB_001ag_199994ss_Plume.png"  # spooled by an older version
        pair.spool_dir.mkdir(parents=True, exist_ok=True)
        (pair.spool_dir / f"{1:012d}.{legacy}").write_bytes(b"old capture")
        await pair.start_master()
        slave = await pair.start_slave()
        assert await slave.flush(60)
        assert slave.stats["rejected"] == 1 and slave.stats["sent"] == 1
        assert (pair.spool_dir / "rejected" / legacy).read_bytes() == b"old capture"
        await pair.stop()

    run(scenario())
