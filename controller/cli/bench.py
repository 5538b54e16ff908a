"""`pycam bench ...`: benchmarks that print figures (JSON). Each subcommand imports its module only when run."""

from __future__ import annotations

import json

import click


@click.group("bench")
def bench_group() -> None:
    """Benchmarks that print figures."""


@bench_group.command("supervisor")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the default output too).")
@click.option("--seconds", default=60.0, show_default=True, help="Real seconds of acquisition measured.")
@click.option("--period-s", default=4.0, show_default=True, help="Slot period (0.25 Hz by default).")
@click.option("--work-dir", type=click.Path(file_okay=False), default=None, help="Where the two Pis keep data.")
def supervisor_cmd(as_json: bool, seconds: float, period_s: float, work_dir: str | None) -> None:
    """CPU of the master and slave supervisors while acquiring (real time), and the A/B capture-time spread."""
    from controller.bench.supervisor import run_supervisor_bench
    from controller.logging import configure_logging

    configure_logging("console", "warning")
    result = run_supervisor_bench(seconds=seconds, period_s=period_s, work_dir=work_dir)
    click.echo(json.dumps(result, indent=None if as_json else 2))


@bench_group.command("web")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the default output too).")
@click.option("--seconds", default=40.0, show_default=True, help="Real seconds per phase (without, with load).")
@click.option("--period-s", default=2.0, show_default=True, help="Slot period.")
@click.option("--clients", default=4, show_default=True, help="Concurrent page-loading clients.")
def web_cmd(as_json: bool, seconds: float, period_s: float, clients: int) -> None:
    """Camera A's slot timing and the A/B spread with and without status-page load."""
    from controller.bench.web import run_web_bench
    from controller.logging import configure_logging

    configure_logging("console", "warning")
    result = run_web_bench(seconds=seconds, period_s=period_s, clients=clients)
    click.echo(json.dumps(result, indent=None if as_json else 2))


@bench_group.command("link")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the default output too).")
@click.option("--files", default=200, show_default=True, help="Image-size files in the backlog.")
@click.option("--restarts", default=5, show_default=True, help="Peer restarts for the reconnect timing.")
@click.option("--backoff-max-s", default=0.5, show_default=True, help="network.backoff_max_s for the run.")
@click.option("--work-dir", type=click.Path(file_okay=False), default=None, help="Where to spool and store.")
@click.option("--attack-files", default=0, show_default=True, help="Also: master peak RSS under a pre-hello flood "
              "and this many 60 MiB files streamed (40 in issue 11; 0 skips it).")  # fmt: skip
def link_cmd(
    as_json: bool, files: int, restarts: int, backoff_max_s: float, work_dir: str | None, attack_files: int
) -> None:
    """Link throughput draining a backlog of images, and reconnect time after a peer restart."""
    from controller.bench.link import run_link_bench
    from controller.logging import configure_logging

    configure_logging("console", "warning")
    result = run_link_bench(files=files, restarts=restarts, backoff_max_s=backoff_max_s, work_dir=work_dir)
    if attack_files:
        from controller.bench.link_memory import run_link_memory_bench

        result["link_memory_under_attack"] = run_link_memory_bench(files=attack_files, work_dir=work_dir)
    click.echo(json.dumps(result, indent=None if as_json else 2))


@bench_group.command("ext")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the default output too).")
@click.option("-n", "n", default=1000, show_default=True, help="Round trips per measurement.")
def ext_cmd(as_json: bool, n: int) -> None:
    """External control port round trips (ping, setting, forwarded to the slave)."""
    from controller.bench.ext import run_ext_bench
    from controller.logging import configure_logging

    configure_logging("console", "warning")
    result = run_ext_bench(n=n)
    click.echo(json.dumps(result, indent=None if as_json else 2))


@bench_group.command("processing")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the default output too).")
@click.option("--memory-pairs", default=1000, show_default=True, help="Pairs replayed in the worker memory run.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="The shared station data.")
def processing_cmd(as_json: bool, memory_pairs: int, data_dir: str | None) -> None:
    """ms per pair (whole chain), FOV search, ms per DOAS spectrum, worker peak memory."""
    from controller.bench.processing import run_processing_bench
    from controller.logging import configure_logging

    configure_logging("console", "warning")
    result = run_processing_bench(data_dir, memory_pairs=memory_pairs)
    click.echo(json.dumps(result, indent=None if as_json else 2))


@bench_group.command("store-index")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the default output too).")
@click.option("--files", default=100_000, show_default=True, help="Station files in the data root.")
@click.option("--work-dir", type=click.Path(file_okay=False), default=None, help="Where the data root is made.")
def store_index_cmd(as_json: bool, files: int, work_dir: str | None) -> None:
    """The data store's index: start-up scan time and memory for a data root of FILES station files."""
    from controller.bench.storeindex import run_store_index_bench
    from controller.logging import configure_logging

    configure_logging("console", "warning")
    result = run_store_index_bench(files=files, work_dir=work_dir)
    click.echo(json.dumps(result, indent=None if as_json else 2))
