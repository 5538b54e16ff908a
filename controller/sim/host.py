"""The simulated station's host plumbing: network namespaces and a veth pair for the two Pis, a tmpfs data disk."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

# Names unique to this process, so two sim runs on one machine never tear down each other's network.
NETNS = (f"pycam-m{os.getpid()}", f"pycam-s{os.getpid()}")


VETH = (f"pcm{os.getpid()}", f"pcs{os.getpid()}")


# The station's own link-local network, as between the two Pis (and inside the default allowed networks).
NETNS_ADDR = ("169.254.231.1", "169.254.231.2")
NETNS_PORTS = (12345, 12347)  # link and control port of a run in network namespaces


def netns_available() -> bool:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = f"pycam-probe{os.getpid()}"
    ok = subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return ok


def netns_up() -> None:
    """Two namespaces joined by a veth pair: the master at .1, the slave at .2."""
    netns_down()
    cmds = [
        ["ip", "netns", "add", NETNS[0]],
        ["ip", "netns", "add", NETNS[1]],
        ["ip", "link", "add", VETH[0], "type", "veth", "peer", "name", VETH[1]],
        ["ip", "link", "set", VETH[0], "netns", NETNS[0]],
        ["ip", "link", "set", VETH[1], "netns", NETNS[1]],
        ["ip", "-n", NETNS[0], "addr", "add", f"{NETNS_ADDR[0]}/16", "dev", VETH[0]],
        ["ip", "-n", NETNS[1], "addr", "add", f"{NETNS_ADDR[1]}/16", "dev", VETH[1]],
        ["ip", "-n", NETNS[0], "link", "set", VETH[0], "up"],
        ["ip", "-n", NETNS[1], "link", "set", VETH[1], "up"],
        ["ip", "-n", NETNS[0], "link", "set", "lo", "up"],
        ["ip", "-n", NETNS[1], "link", "set", "lo", "up"],
    ]
    for cmd in cmds:
        subprocess.run(cmd, check=True, capture_output=True)


def netns_down() -> None:
    for ns in NETNS:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def set_link(up: bool) -> None:
    subprocess.run(["ip", "-n", NETNS[1], "link", "set", VETH[1], "up" if up else "down"], capture_output=True)


DATA_FS = "datafs"  # the master's dedicated data filesystem (mount point) in a disk-fault run


def data_fs_marks(size_mb: int) -> tuple[int, int]:
    """min_free_mb and resume_free_mb for a data filesystem of `size_mb` (a quarter and three eighths)."""
    return max(1, size_mb // 4), max(2, size_mb * 3 // 8)


def mount_tmpfs(path: Path, size_mb: int) -> Path:
    """A size-limited tmpfs on `path` (root only). Raises OSError with the reason when it cannot be mounted."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        raise OSError("a dedicated data filesystem needs root and mount(8)")
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={int(size_mb)}m,mode=0755", "pycam-sim-data", str(path)],
        capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        raise OSError(f"mount tmpfs on {path} failed: {proc.stderr.strip()}")
    return path


def unmount_keep_copy(path: Path) -> None:
    """Unmount the tmpfs, keeping its files in a plain folder of the same name (the data stays to look at)."""
    keep = path.with_name(path.name + ".copy")
    shutil.rmtree(keep, ignore_errors=True)
    shutil.copytree(path, keep, ignore=shutil.ignore_patterns(".fill"))
    subprocess.run(["umount", str(path)], capture_output=True)
    with contextlib.suppress(OSError):
        path.rmdir()
        keep.rename(path)
