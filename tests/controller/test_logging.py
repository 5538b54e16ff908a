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


def test_journald_gets_each_events_priority(tmp_path, monkeypatch):
    """Under systemd (JOURNAL_STREAM names stderr) each line starts with <N>, so `journalctl -p err` finds errors."""
    import os

    with open(tmp_path / "journal", "w+") as out:
        st = os.fstat(out.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        configure_logging("json", "debug", stream=out)
        log = get_logger("supervisor")
        log.error("boot_failed", error="no camera")
        log.warning("fault", fault="link_lost")
        log.info("state_change")
        log.debug("detail")
        out.flush()
        out.seek(0)
        lines = out.read().splitlines()
    assert [line[:3] for line in lines] == ["<3>", "<4>", "<6>", "<7>"]
    assert json.loads(lines[0][3:])["event"] == "boot_failed"


def test_no_priority_prefix_outside_the_journal(monkeypatch):
    monkeypatch.setenv("JOURNAL_STREAM", "0:0")  # another stream than ours
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    get_logger("cli").error("oops")
    assert json.loads(out.getvalue().strip())["event"] == "oops"
