"""`pycam ctl KEY VALUE ...`: a client of the external control port (ExtClient), for operators and scripts."""

from __future__ import annotations

import asyncio
import os
import sys

import click

from controller.extport import protocol
from controller.extport.client import DEFAULT_TIMEOUT_S, ExtClient

_REFUSAL_HINTS = {
    "SSA": "refused while ATA is 1 (send ATA 0 first)",
    "SSB": "refused while ATB is 1 (send ATB 0 first)",
    "SSS": "refused while ATS is 1 (send ATS 0 first)",
    "SMN": "SMN must be less than SMX",
    "SMX": "SMN must be less than SMX",
    "SNS": "SNS must be less than SXS",
    "SXS": "SNS must be less than SXS",
    "WMN": "WMN must be less than WMX",
    "WMX": "WMN must be less than WMX",
    protocol.ERR_AUTH: "wrong or missing token (--token or PYCAM_EXT_TOKEN)",
    protocol.ERR_NETWORK: "this address is not in the station's network.allowed_networks",
    protocol.ERR_MAX_CLIENTS: "too many clients connected (network.max_clients)",
    protocol.ERR_MESSAGE: "malformed message",
}


def _describe_error(reply: dict[str, str]) -> str:
    key, who = reply.get("ERR", "?"), reply.get("IDN", "?")
    hint = _REFUSAL_HINTS.get(key, "refused; see the supervisor's log for the reason")
    if who in protocol.SLAVE_IDENTITIES and key not in _REFUSAL_HINTS:
        hint = "refused, or the slave is unreachable; see the master's log"
    return f"ERR {key} from {who}: {hint}"


def _settings_table(replies: list[dict[str, str]]) -> list[str]:
    rows = [("key", "value", "device", "meaning")]
    for reply in replies:
        who = reply.get("IDN", "?")
        if "ERR" in reply:
            continue
        for key, value in reply.items():
            spec = protocol.KEYS.get(key)
            if key == "IDN" or spec is None:
                continue
            rows.append((key, value, who, spec.meaning))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return [f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}" for r in rows]


def _local_check(args: tuple[str, ...]) -> list[tuple[str, str]]:
    """KEY VALUE pairs, checked against the key table before anything is sent."""
    if len(args) % 2:
        raise click.UsageError("give KEY VALUE pairs (an even number of words)")
    pairs = [(args[i].upper(), args[i + 1]) for i in range(0, len(args), 2)]
    commands, refusals = protocol.parse_message(protocol.Message(tuple(pairs)))
    if refusals:
        for refusal in refusals:
            click.echo(f"ERR {refusal.key}: {refusal.reason} (not sent)", err=True)
        sys.exit(1)
    return pairs


async def _run_ctl(host: str, port: int, token: str, timeout_s: float, pairs, want_settings: bool):
    client = ExtClient(host, port, token=token, timeout_s=timeout_s)
    await client.connect()
    try:
        return await (client.settings() if want_settings else client.command(pairs))
    finally:
        await client.close()


@click.command("ctl", context_settings={"ignore_unknown_options": True})
@click.option("--host", default="127.0.0.1", show_default=True, help="the master's address")
@click.option("--port", default=12347, show_default=True, type=click.IntRange(1, 65535))
@click.option("--token", default=None, help="shared token (default: $PYCAM_EXT_TOKEN)")
@click.option("--timeout", "timeout_s", default=DEFAULT_TIMEOUT_S, show_default=True, type=float)
@click.argument("args", nargs=-1, required=True)
def ctl_cmd(host: str, port: int, token: str | None, timeout_s: float, args: tuple[str, ...]) -> None:
    """Send KEY VALUE ... to the external control port and print the replies; `settings` prints LOG 1.

    Example: pycam ctl ATA 0 SSA 5000    (exit status 1 when anything is refused or the port is unreachable)
    """
    token = token if token is not None else os.environ.get("PYCAM_EXT_TOKEN", "")
    want_settings = args == ("settings",)
    pairs = [] if want_settings else _local_check(args)
    try:
        replies = asyncio.run(_run_ctl(host, port, token, timeout_s, pairs, want_settings))
    except (ConnectionError, OSError, TimeoutError) as e:
        click.echo(f"cannot talk to the external port at {host}:{port}: {e or type(e).__name__}", err=True)
        sys.exit(1)
    errors = [r for r in replies if "ERR" in r]
    if want_settings:
        for line in _settings_table(replies):
            click.echo(line)
    else:
        for reply in replies:
            if "ERR" not in reply:
                click.echo(protocol.encode_reply(reply).decode("utf-8").rstrip())
    for reply in errors:
        click.echo(_describe_error(reply), err=True)
    if errors:
        sys.exit(1)
