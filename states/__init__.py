"""The station's state machines, declared as data (states + transition tables). No I/O here."""

from __future__ import annotations

import importlib

# Module names under states/, in reading order: the day, then its sub-machines.
MACHINES = ("station", "power", "link", "acquisition", "worker")


def load_tables(names: tuple[str, ...] = MACHINES) -> list:
    """The `TABLE` of each machine module (a machine not in this build is left out)."""
    tables = []
    for name in names:
        try:
            module = importlib.import_module(f"states.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"states.{name}":
                continue
            raise
        tables.append(module.TABLE)
    return tables
