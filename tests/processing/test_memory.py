"""glibc heap settings of the worker child (processing/memory.py); the effect is measured by the bench."""

from __future__ import annotations

import platform

import pytest

from processing.memory import fix_mmap_threshold, trim_heap


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc")
def test_heap_settings_apply_on_glibc() -> None:
    assert fix_mmap_threshold() is True
    trim_heap()
