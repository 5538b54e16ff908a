"""Helpers the config sections share: range metadata and the original PyCam's exposure lists."""

from __future__ import annotations

from typing import Any


def value_range(lo: float | None = None, hi: float | None = None, doc: str = "", **extra: Any) -> dict:
    return {"range": (lo, hi), "doc": doc, **extra}


def original_shutter_list_us() -> tuple[int, ...]:
    """The original PyCam camera shutter-speed list (µs), ascending."""
    steps = [
        (1, 10, 1), (10, 50, 5), (50, 100, 10), (100, 500, 50), (500, 1000, 100), (1000, 10_000, 500),
        (10_000, 50_000, 2500), (50_000, 100_000, 5000), (100_000, 200_000, 10_000),
        (200_000, 1_000_000, 50_000), (1_000_000, 6_000_000, 100_000),
    ]  # fmt: skip
    values = [v for lo, hi, step in steps for v in range(lo, hi, step)]
    return (*values, 6_000_000)


def original_integration_list_ms() -> tuple[int, ...]:
    """The original PyCam spectrometer integration-time list (ms), ascending."""
    steps = [(1, 10, 1), (10, 50, 5), (50, 100, 10), (100, 500, 50), (500, 1000, 100), (1000, 10_000, 500)]
    values = [v for lo, hi, step in steps for v in range(lo, hi, step)]
    return (*values, 10_000)


# ----------------------------------------------------------------------------------------------------- sections
