"""Logging: JSON lines for the service, and loggers made at import time follow the later configuration."""

from __future__ import annotations

import io
import json

from controller.logging import configure_logging, get_logger


def test_logger_made_before_configuration_follows_it():
    early = get_logger("early", role="master")  # as a module-level logger is made at import time
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    early.info("state_change", machine="station", old="boot", new="sync", trigger="booted")
    event = json.loads(out.getvalue().strip().splitlines()[-1])
    assert event["event"] == "state_change"
    assert (event["component"], event["role"], event["old"], event["new"]) == ("early", "master", "boot", "sync")


def test_level_filters_and_console_format_is_readable():
    out = io.StringIO()
    configure_logging("console", "warning", stream=out)
    log = get_logger("cli")
    log.info("hidden")
    log.warning("disk_low", free_mb=12)
    text = out.getvalue()
    assert "hidden" not in text
    assert "disk_low" in text and "free_mb=12" in text
