"""structlog set-up: JSON lines for the service, readable console output for the CLI.

Every log event carries bound context (`role`, `component`, and for state changes `machine`, `old`, `new`).

Under systemd (stderr connected to the journal: `JOURNAL_STREAM` names it) each line starts with its syslog
priority, `<3>` for an error ... `<7>` for debug, which journald reads (the units set `SyslogLevelPrefix=yes`) and
strips: `journalctl -p err` finds the errors.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Literal

import structlog

LogFormat = Literal["json", "console"]

# syslog priorities (sd-daemon.h SD_ERR ... SD_DEBUG) of structlog's and the stdlib's level names
PRIORITY = {"critical": 2, "exception": 3, "error": 3, "warning": 4, "warn": 4, "info": 6, "debug": 7}


def journal_stream(stream) -> bool:
    """True when `stream` is the journal's stream systemd gave this service (JOURNAL_STREAM=<device>:<inode>)."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


def _priority_prefix(logger, method_name: str, rendered: str) -> str:
    """Last processor: `<N>` before the rendered line (N from the event's level)."""
    return f"<{PRIORITY.get(method_name, 6)}>{rendered}"


class _PriorityFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"<{PRIORITY.get(record.levelname.lower(), 6)}>" + super().format(record)


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
    journal = journal_stream(stream)
    if journal:
        renderer.append(_priority_prefix)
    structlog.configure(
        processors=[*shared, *renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=numeric, stream=stream, format="%(name)s %(levelname)s %(message)s")
    if journal:
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is stream:
                handler.setFormatter(_PriorityFormatter("%(name)s %(levelname)s %(message)s"))
    # Third-party chatter (transitions logs every callback at INFO) is kept out of the station log.
    logging.getLogger("transitions").setLevel(logging.WARNING)


def get_logger(component: str, **context) -> structlog.typing.FilteringBoundLogger:
    """A lazy logger: created at import time, it still follows the configuration made later by the CLI.

    (`get_logger().bind(...)` would freeze the default configuration at import time: console output on stdout.)
    """
    return structlog.get_logger(component=component, **context)
