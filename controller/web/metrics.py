"""The station's status as Prometheus metrics (prefix `pycam_`), in the text exposition format.

prometheus_client renders it (its exposition format and escaping, not ours); the values come from one status
snapshot per scrape (the same dict as status.json and /api/status), so a scrape never disagrees with the page.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

CONTENT_TYPE = CONTENT_TYPE_LATEST


def _num(v: object) -> float | None:
    if isinstance(v, bool):
        return float(v)
    return float(v) if isinstance(v, int | float) else None


def _gauge(name: str, doc: str, value: object) -> Iterator[Metric]:
    v = _num(value)
    if v is not None:
        g = GaugeMetricFamily(f"pycam_{name}", doc)
        g.add_metric([], v)
        yield g


def _labelled(name: str, doc: str, label: str, values: dict, counter: bool = False) -> Iterator[Metric]:
    fam = (CounterMetricFamily if counter else GaugeMetricFamily)(f"pycam_{name}", doc, labels=[label])
    for k, v in sorted(values.items()):
        if _num(v) is not None:
            fam.add_metric([str(k)], _num(v))
    yield fam


class _StatusCollector:
    def __init__(self, status: dict, emissions: dict[str, float]):
        self.s = status
        self.emissions = emissions

    def collect(self) -> Iterable[Metric]:
        s = self.s
        yield from _gauge("up", "1 while the supervisor answers", 1)
        st = GaugeMetricFamily("pycam_station_state", "1 for the station's current state", labels=["state"])
        st.add_metric([str(s.get("state"))], 1)
        yield st
        ms = GaugeMetricFamily("pycam_machine_state", "1 for each machine's current state", labels=["machine", "state"])
        for machine, state in sorted((s.get("machines") or {}).items()):
            ms.add_metric([str(machine), str(state)], 1)
        yield ms
        yield from _labelled("captures", "captures per device since start", "device", s.get("captures") or {}, True)
        storage = s.get("storage") or {}
        free = _num(storage.get("free_mb"))
        yield from _gauge("disk_free_bytes", "free space on the data disk", None if free is None else free * 2**20)
        yield from _gauge("disk_paused", "1 while acquisition is paused for disk space", storage.get("paused"))
        yield from _labelled("temperature_celsius", "temperatures", "sensor", s.get("temperatures") or {})
        yield from _labelled("voltage_volts", "supply voltages", "line", s.get("voltages") or {})
        clock = s.get("clock") or {}
        offset = _num(clock.get("offset_ms"))
        yield from _gauge("clock_offset_seconds", "offset to the master", None if offset is None else offset / 1000)
        yield from _gauge("clock_offset_ok", "1 while the offset is within tolerance", clock.get("offset_ok"))
        source = clock.get("source") if isinstance(clock.get("source"), dict) else {}
        yield from _gauge("clock_synchronised", "1 when a clock source is synchronised", source.get("synchronised"))
        yield from _gauge(
            "link_connected", "1 while the master-slave link is up", (s.get("link") or {}).get("connected")
        )
        yield from _labelled("faults", "faults seen, by kind", "kind", s.get("fault_counts") or {}, True)
        yield from _gauge("worker_pairs_processed", "pairs the processing worker processed", s.get("worker_pairs"))
        yield from _labelled("emission_rate_kg_per_s", "latest SO2 emission rate", "series", self.emissions)
        d = s.get("delivery") or {}
        if d:
            yield from _gauge("delivery_backlog_files", "files waiting for the observatory", d.get("backlog_files"))
            yield from _gauge("delivery_backlog_bytes", "bytes waiting for the observatory", d.get("backlog_bytes"))
            yield from _gauge("delivery_lag_seconds", "age of the oldest file not yet delivered", d.get("lag_s"))
            yield from _gauge("delivery_delivered_files", "files delivered (distinct)", d.get("delivered_files"))
            yield from _gauge("delivery_failures_in_a_row", "failed delivery runs in a row", d.get("failures_in_a_row"))
        web = s.get("web") or {}
        yield from _labelled(
            "web_requests", "requests served by the status page", "kind", web.get("requests") or {}, True
        )


def render(status: dict, emissions: dict[str, float] | None = None) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatusCollector(status, emissions or {}))
    return generate_latest(registry)
