"""Boot storage check: the data root must be on the mounted SSD, or on an explicitly allowed fallback.

The classic failure this prevents: the SSD does not mount at boot, the mount point is then a plain folder on the
SD card, and a day of images fills the SD card (or lands where nobody looks). The SSD is identified by
`storage.mount_point` (the containing mount must be exactly that mount point) or by `storage.fs_uuid` (the
containing mount's device must be /dev/disk/by-uuid/<uuid>). A read-only mount (ext4 remounts read-only after
errors) is refused as well.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.errors import StorageError

MOUNTINFO = Path("/proc/self/mountinfo")
BY_UUID = Path("/dev/disk/by-uuid")


@dataclass(frozen=True)
class MountEntry:
    mount_point: str
    device_id: str  # "major:minor"
    fstype: str
    source: str
    options: tuple[str, ...]

    @property
    def read_only(self) -> bool:
        return "ro" in self.options


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040 ...).
    out, i = [], 0
    while i < len(field):
        code = field[i + 1 : i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Parse /proc/self/mountinfo (proc(5)); malformed lines are skipped."""
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields or len(fields) < 7:
            continue
        sep = fields.index("-")
        if len(fields) < sep + 3:
            continue
        entries.append(
            MountEntry(
                mount_point=_unescape(fields[4]),
                device_id=fields[2],
                fstype=fields[sep + 1],
                source=_unescape(fields[sep + 2]),
                options=tuple(fields[5].split(",")),
            )
        )
    return entries


def containing_mount(path: str | Path, entries: list[MountEntry]) -> MountEntry:
    """The mount a path lies on: the longest mount point that is a prefix of it (the last one mounted wins)."""
    target = os.path.realpath(path)
    best: MountEntry | None = None
    for entry in entries:
        mp = entry.mount_point.rstrip("/") or "/"
        if target == mp or target.startswith(mp if mp == "/" else mp + "/"):
            if best is None or len(mp) >= len(best.mount_point.rstrip("/") or "/"):
                best = entry
    if best is None:
        raise StorageError(f"no mount contains {target} (is /proc mounted?)")
    return best


def _device_id_of(dev: Path) -> str | None:
    try:
        rdev = os.stat(dev).st_rdev
    except OSError:
        return None
    return f"{os.major(rdev)}:{os.minor(rdev)}"


def check_storage(storage: Any, mountinfo: str | None = None, by_uuid: Path = BY_UUID, create: bool = False) -> dict:
    """Check `storage.data_root` (a StorageConfig); return what was found, for `pycam status`.

    Raises StorageError saying what is wrong and what to change when the data root is not on the SSD and the
    fallback is not allowed, or when its filesystem is read-only.
    """
    text = mountinfo if mountinfo is not None else MOUNTINFO.read_text()
    entries = parse_mountinfo(text)
    data_root = Path(storage.data_root)
    mount = containing_mount(data_root, entries)
    result: dict[str, Any] = {
        "data_root": str(data_root),
        "mount_point": mount.mount_point,
        "source": mount.source,
        "fstype": mount.fstype,
        "read_only": mount.read_only,
        "on_ssd": False,
        "matched_by": None,
        "fallback": False,
    }
    problems = []
    if storage.mount_point:
        wanted = os.path.realpath(storage.mount_point)
        if mount.mount_point == wanted:
            result.update(on_ssd=True, matched_by="mount_point")
        elif any(e.mount_point == wanted for e in entries):
            problems.append(f"data_root {data_root} is on {mount.mount_point}, not on the SSD at {wanted}")
        else:
            problems.append(f"nothing is mounted at storage.mount_point {wanted} (SSD missing or not mounted)")
    if storage.fs_uuid and not result["on_ssd"]:
        dev = by_uuid / storage.fs_uuid
        dev_id = _device_id_of(dev)
        same_path = dev.exists() and os.path.realpath(dev) == os.path.realpath(mount.source)
        if dev_id is None and not dev.exists():
            problems.append(f"no disk with filesystem UUID {storage.fs_uuid} ({dev} missing: SSD unplugged?)")
        elif same_path or dev_id == mount.device_id:
            result.update(on_ssd=True, matched_by="fs_uuid")
            problems.clear()
        else:
            problems.append(f"data_root {data_root} is on {mount.source}, not on the disk with UUID {storage.fs_uuid}")
    if not storage.mount_point and not storage.fs_uuid:
        problems.append("neither storage.mount_point nor storage.fs_uuid is set, so the SSD cannot be checked")
    if not result["on_ssd"]:
        if not storage.allow_fallback:
            raise StorageError("; ".join(problems) + " (set storage.allow_fallback = true to accept this)")
        result.update(fallback=True, problem="; ".join(problems))
    if mount.read_only:
        raise StorageError(f"{mount.mount_point} ({mount.source}) is mounted read-only; data_root {data_root}")
    if create:
        try:
            data_root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError(f"cannot create data_root {data_root}: {e}") from e
        if not os.access(data_root, os.W_OK):
            raise StorageError(f"data_root {data_root} is not writable by uid {os.getuid()}")
    result["ok"] = True
    result["kind"] = "ssd" if result["on_ssd"] else "fallback"
    result["summary"] = (
        f"{data_root} on {'SSD' if result['on_ssd'] else 'FALLBACK'} {mount.mount_point} ({mount.source}, "
        f"{mount.fstype}{', matched by ' + result['matched_by'] if result['matched_by'] else ''})"
    )
    return result
