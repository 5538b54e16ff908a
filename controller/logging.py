"""structlog set-up: JSON lines for the service, readable console output for the CLI.

Every log event carries bound context (`role`, `component`, and for state changes `machine`, `old`, `new`).
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

LogFormat = Literal["json", "console"]


def configure_logging(fmt: LogFormat = "console", level: str = "info", stream=None) -> None:
    """Configure structlog (and the stdlib root logger it sits on) once per process."""
    stream = stream if stream is not None else sys.stderr
    numeric = getattr(logging, level.upper(), None)
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if fmt == "json":
        renderer = [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        renderer = [structlog.dev.ConsoleRenderer(colors=False)]
    structlog.configure(
        processors=[*shared, *renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=numeric, stream=stream, format="%(name)s %(levelname)s %(message)s")
    # Third-party chatter (transitions logs every callback at INFO) is kept out of the station log.
    logging.getLogger("transitions").setLevel(logging.WARNING)


def get_logger(component: str, **context) -> structlog.typing.FilteringBoundLogger:
    """A lazy logger: created at import time, it still follows the configuration made later by the CLI.

    (`get_logger().bind(...)` would freeze the default configuration at import time: console output on stdout.)
    """
    return structlog.get_logger(component=component, **context)
