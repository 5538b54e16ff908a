"""Shared fixtures. Real station data is read from ../shared/data at test time (never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PYCAM_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"station test data not found at {SHARED_DATA} (set PYCAM_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _restore_structlog_config():
    """CLI tests configure logging (e.g. level warning); never let that leak into tests that capture events."""
    import logging

    import structlog

    saved = structlog.get_config()
    saved_level = logging.getLogger().level
    yield
    structlog.configure(**saved)
    logging.getLogger().setLevel(saved_level)
