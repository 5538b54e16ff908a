"""`pycam sim ...`: simulated station runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


@click.group("sim")
def sim_group() -> None:
    """Simulated station runs (no hardware)."""


def _parse_fault(text: str):
    """KIND@SECONDS[:key=value,...], e.g. kill_slave@20, unplug@30:device=B, clock_step@40:seconds=5."""
    from controller.sim.station import Fault

    head, _, rest = text.partition(":")
    kind, _, at = head.partition("@")
    args: dict = {}
    for item in filter(None, rest.split(",")):
        k, _, v = item.partition("=")
        try:
            args[k] = float(v)
        except ValueError:
            args[k] = v
    try:
        return Fault(kind, float(at or 0.0), args)
    except ValueError as e:
        raise click.BadParameter(f"{text!r}: {e}") from e


def format_summary(s: dict) -> str:
    lines = [
        f"simulated station: {s['sim_hours']} h at {s['time_scale']}x in {s['real_seconds']} s ({s['network']})",
        f"captured: {s['captured']}  per device: {s['captured_per_device']}",
        f"stored on master: {s['stored']}  (of the captured: {s['stored_captured']})",
        f"lost: {s['lost']}   corrupt: {s['corrupt']}   duplicates: {s['duplicates']}",
        f"A/B pairs on master: {s['pairs_on_master']}   pairs processed: {s['pairs_processed']}",
        f"emission rate: recovered {s['flux_recovered_kg_s']} kg/s vs truth {s['flux_truth_kg_s']} kg/s"
        f"  (calibration: {s.get('calibration')}, rows per method: {s.get('calibration_rows')})",
        f"error: {s.get('flux_error_percent')} %   FOV found {(s.get('fov') or {}).get('found_cx_cy_r')} vs scene "
        f"{(s.get('fov') or {}).get('scene_cx_cy_r')}   sim pace: {s.get('pace')}",
    ]
    for d in s.get("daily_products") or []:
        lines.append(f"daily {d['day']} {d['line']} {d['method']}: {d['mean_kg_s']:.3g} kg/s = {d['mean_t_d']:.3g} t/d,"
                     f" {d['rows']} rows, calibration {d['calibration']}, coverage {d['coverage']}")  # fmt: skip
    for role, seq in s["state_changes"].items():
        lines.append(f"{role} states: {' '.join(seq)}")
    for role, faults in s["faults_seen"].items():
        lines.append(f"{role} faults seen: {', '.join(map(str, faults)) or 'none'}")
    for f in s["faults_injected"]:
        lines.append(f"injected {f['kind']} at {f['at_s']} s: back in acquire after {f['recovery_s']} s")
        if "seen_in_status" in f:
            lines.append(f"  seen in status: {f['seen_in_status']}  in logs: {f['seen_in_log']}")
    lines.extend(observatory_lines(s))
    lines.append(f"data: {s['data_folder']}")
    if s.get("plot"):
        lines.append(f"daily plot: {s['plot']}")
    return "\n".join(lines)


def observatory_lines(s: dict) -> list[str]:
    """The status page's address, delivery to the simulated observatory, the worker's daily summary."""
    from controller.web.text import value

    lines = []
    if "web_url" in s:
        lines.append(f"status page while it ran: {s['web_url']}  (requests: {value(s.get('web_requests'))})")
    if s.get("observatory"):
        lines.append(
            f"delivered to the observatory {s['observatory']}: {s['delivered_files']} files "
            f"({value(s.get('delivered_by_kind'))}), last lag {value(s.get('delivery_lag_s'))} s, "
            f"backlog at the end {value(s.get('delivery_backlog_files'))} files"
        )
    elif "observatory" in s:
        lines.append("delivered to the observatory: none (no simulated observatory: openssh-server missing?)")
    if s.get("page_screenshot"):
        lines.append(f"status page screenshot: {s['page_screenshot']}")
    if "daily_summary" in s:
        daily = s.get("daily_summary")
        lines.append(f"daily summary: {value(daily) if daily else 'none written'}")
    return lines


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError as e:
        raise click.BadParameter(f"{text!r}: expected WIDTHxHEIGHT, e.g. 160x120") from e
    return w, h


@sim_group.command("station")
@click.option("--hours", default=2.0, show_default=True, help="length of the acquisition window (sim hours)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option("--out", default="sim-station", show_default=True, type=click.Path(file_okay=False))
@click.option("--budget", default=75.0, show_default=True, help="real seconds the acquisition window lasts")
@click.option("--netns", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True)
@click.option("--fault", "faults", multiple=True, help="KIND@SECONDS[:k=v,...] after the window opens")
@click.option("--no-processing", is_flag=True, help="run without the processing worker")
@click.option("--seed", default=1, show_default=True)
@click.option("--size", default="648x486", show_default=True, help="camera frame WIDTHxHEIGHT")
@click.option("--data-fs-mb", type=int, help="root: the master's data root on a tmpfs of this size (fill_disk)")
@click.option("--no-observatory", is_flag=True, help="no simulated observatory (sshd) to deliver to")
@click.option("--screenshot", type=click.Path(dir_okay=False), help="PNG of the status page (headless Chromium)")
@click.option(
    "--air",
    type=click.Choice(["clear", "hazy"]),
    default="clear",
    show_default=True,
    help="hazy: light dilution between plume and station (controller/sim/scene.py SIM_AIR)",
)
def station_cmd(hours, as_json, out, budget, netns, faults, no_processing, seed, size, data_fs_mb,
                no_observatory, screenshot, air) -> None:  # fmt: skip
    """Run a master and a slave supervisor (separate processes) through a compressed station day."""
    from controller.logging import configure_logging
    from controller.sim.station import SimStopped, StationRun, run_station

    configure_logging("console", "warning", stream=sys.stderr)  # stdout is for the summary (--json)
    run = StationRun(
        hours=hours, out=Path(out), real_budget_s=budget, netns=netns, faults=[_parse_fault(f) for f in faults],
        processing=not no_processing, seed=seed, image_size=_size(size), data_fs_mb=data_fs_mb,
        observatory=not no_observatory, progress=lambda line: click.echo(line, err=True),
        screenshot=Path(screenshot) if screenshot else None, hazy=air == "hazy",
    )  # fmt: skip
    try:
        summary = run_station(run)
    except (ValueError, OSError, SimStopped) as e:
        raise click.ClickException(str(e)) from e
    click.echo(json.dumps(summary, default=str) if as_json else format_summary(summary))
    sys.exit(0 if summary["lost"] == 0 and summary["finished_cleanly"] else 1)


@sim_group.command("soak")
@click.option("--slots", default=20_000, show_default=True, help="slots in the acquisition window")
@click.option("--period", default=2.0, show_default=True, help="sim seconds between slots")
@click.option("--rate", default=20.0, show_default=True, help="slots per real second (sets the time scale)")
@click.option("--fault-every", default=45.0, show_default=True, help="mean real seconds between random faults")
@click.option("--size", default="64x48", show_default=True, help="camera frame WIDTHxHEIGHT")
@click.option("--seed", default=7, show_default=True)
@click.option("--out", default="sim-soak", show_default=True, type=click.Path(file_okay=False))
@click.option("--netns", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def soak_cmd(slots, period, rate, fault_every, size, seed, out, netns, as_json) -> None:
    """A long sim run with random faults: slots captured, files lost, duplicates, peak memory and CPU."""
    from controller.logging import configure_logging
    from controller.sim.soak import SoakRun, format_soak, run_soak

    configure_logging("console", "warning", stream=sys.stderr)  # stdout is for the summary (--json)
    soak = SoakRun(
        slots=slots, period_s=period, rate=rate, fault_every_s=fault_every, size=_size(size), seed=seed,
        out=Path(out), netns=netns,
    )  # fmt: skip
    try:
        summary = run_soak(soak)
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(json.dumps(summary, default=str) if as_json else format_soak(summary))
    ok = summary["lost"] == 0 and summary["duplicates"] == 0 and summary["corrupt"] == 0 and summary["overwritten"] == 0
    sys.exit(0 if ok and summary["finished_cleanly"] else 1)
