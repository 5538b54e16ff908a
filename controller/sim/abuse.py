"""What the soak does to the external control port (issue 11): single captures during continuous capture, and a
burst of abuse (idle connections filling every slot, a 500-key message, 1000 unknown keys, AUTH guessing) while
a legitimate client must still be served.

`await run_client(kind, host, port, token, netns)` runs one of them - inside the master's network namespace
when the sim uses one (`python -m controller.sim.abuse KIND ...` there) - and returns its figures as a dict.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from controller.extport import protocol
from controller.extport.client import ExtClient
from controller.extport.server import AUTH_REFILL_S

IDLE_CONNECTIONS = 6  # more than the default max_clients (4)
AUTH_GUESSES = 20
SERVED_WITHIN_S = 10.0  # a legitimate client must be served this soon while the slots are held
AUTH_RETRY_S = 40.0  # a client refused for AUTH attempts (the guessing came from its address) tries this long


async def _authed_client(host: str, port: int, token: str) -> ExtClient:
    """A client that is served: retried while its address is out of AUTH attempts (after the guessing)."""
    deadline = time.monotonic() + AUTH_RETRY_S
    while True:
        client = ExtClient(host, port, token=token, timeout_s=SERVED_WITHIN_S)
        await client.connect()
        replies = await client.command([])
        if not replies:
            return client
        await client.close()
        if time.monotonic() > deadline:
            raise ConnectionError(f"refused: {replies}")
        await asyncio.sleep(AUTH_REFILL_S)


async def singles(host: str, port: int, token: str, rounds: int = 3) -> dict:
    """TPA, TPB and TPS in one message, `rounds` times back to back, during continuous capture."""
    files: list[str] = []
    errors: list[dict] = []
    client = await _authed_client(host, port, token)
    try:
        for _ in range(rounds):
            for reply in await client.command([("TPA", "Plume"), ("TPB", "Plume"), ("TPS", "Plume")]):
                if "ERR" in reply:
                    errors.append(reply)
                elif "FIL" in reply:
                    files.append(reply["FIL"])
    finally:
        await client.close()
    return {"singles_requested": 3 * rounds, "single_files": files, "single_errors": len(errors)}


async def abuse(host: str, port: int, token: str) -> dict:
    """Idle connections in every slot, then a legitimate client, a 500-key and a 1000-unknown-key message from
    it, then AUTH guessing; what the legitimate client saw."""
    idle = [await asyncio.open_connection(host, port) for _ in range(IDLE_CONNECTIONS)]
    out: dict = {}
    try:
        t0 = time.monotonic()
        client = await _authed_client(host, port, token)
        out["served_after_s"] = round(time.monotonic() - t0, 3)
        try:
            settings = await client.settings()
            pxc = next((r["PXC"] for r in settings if r.get("IDN") == "CM1" and "PXC" in r), "100")
            replies = await client.command([("PXC", pxc)] * 500)  # the value in force: changes nothing
            out["echoes_500_keys"] = len(replies)
            unknown = [(chr(65 + i % 26), 1) for i in range(1000)]
            out["errs_1000_unknown"] = sum(1 for r in await client.command(unknown) if "ERR" in r)
            await client.ping()
            out["connection_kept"] = True
        finally:
            await client.close()
    finally:
        for _, writer in idle:
            writer.close()
    refused = 0
    for i in range(AUTH_GUESSES):
        guess = ExtClient(host, port, token=f"guess{i}", timeout_s=5.0)
        try:
            replies = await guess.command([("EXT", 1)])
        except (ConnectionError, OSError, TimeoutError):
            replies = [{"ERR": protocol.ERR_AUTH}]
        refused += any(r.get("ERR") == protocol.ERR_AUTH for r in replies)
        await guess.close()
    out["auth_guesses"] = AUTH_GUESSES
    out["auth_guesses_refused"] = refused
    return out


KINDS = {"singles": singles, "abuse_ext": abuse}


async def run_client(kind: str, host: str, port: int, token: str, netns: str | None) -> dict:
    """Run `kind` against the control port (in `netns` when given); its figures, or {"client_error": ...}."""
    if netns is None:
        try:
            return await KINDS[kind](host, port, token)
        except (ConnectionError, OSError, TimeoutError) as e:
            return {"client_error": str(e) or type(e).__name__}
    cmd = ["ip", "netns", "exec", netns, sys.executable, "-m", "controller.sim.abuse", kind, host, str(port)]
    proc = await asyncio.create_subprocess_exec(
        *cmd, "--token", token, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    try:
        return json.loads(out.decode() or "{}")
    except ValueError:
        return {"client_error": err.decode(errors="replace")[-300:]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(KINDS))
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--token", default="")
    args = parser.parse_args(argv)
    result = asyncio.run(run_client(args.kind, args.host, args.port, args.token, None))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
