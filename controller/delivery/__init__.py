"""Delivery of results (and optionally raw data) to the observatory over SSH: queue, service, sim observatory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from controller.delivery.service import DeliveryService, Source


def station_sources(cfg: Any, processed_dir: Path) -> list[Source]:
    """What the station delivers: the processing outputs (daily products, CSVs), status.json, the logs folder when
    configured, and the raw images and spectra when `delivery.include_raw`."""
    d = cfg.delivery
    sources = [
        Source("processed", Path(processed_dir)),
        Source("status", Path(cfg.storage.state_dir), ("status.json",)),
    ]
    if d.log_dir:
        sources.append(Source("logs", Path(d.log_dir)))
    if d.include_raw:
        sources.append(Source("raw", Path(cfg.storage.data_root)))
    return sources


def make_delivery(cfg: Any, processed_dir: Path) -> DeliveryService:
    return DeliveryService(cfg.delivery, cfg.station.name, station_sources(cfg, processed_dir), cfg.storage.state_dir)


__all__ = ["DeliveryService", "Source", "make_delivery", "station_sources"]
