"""Running the system's time tools (chronyc, hwclock ...) without ever raising: their output, or None."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence


def run_command(cmd: Sequence[str], timeout_s: float = 5.0) -> str | None:
    """stdout of a command, or None when it is not installed, fails or hangs."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None
