"""Boot storage check against fake mountinfo texts."""

from __future__ import annotations

import pytest

from controller.config import StorageConfig
from controller.errors import StorageError
from controller.storage.mounts import check_storage, containing_mount, parse_mountinfo

SD_ONLY = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 179:2 / / rw,noatime shared:1 - ext4 /dev/mmcblk0p2 rw
30 27 179:1 / /boot/firmware rw,relatime shared:2 - vfat /dev/mmcblk0p1 rw
"""
WITH_SSD = SD_ONLY + "41 27 8:1 / /mnt/pycam rw,noatime shared:30 - ext4 /dev/sda1 rw\n"
SSD_READ_ONLY = SD_ONLY + "41 27 8:1 / /mnt/pycam ro,noatime shared:30 - ext4 /dev/sda1 ro,errors=remount-ro\n"


def storage(**kw) -> StorageConfig:
    return StorageConfig(**{"data_root": "/mnt/pycam/data", **kw})


def test_parse_mountinfo_handles_optional_fields_and_escapes():
    entries = parse_mountinfo(WITH_SSD + "50 27 8:2 / /media/my\\040disk rw - ext4 /dev/sdb1 rw\ngarbage\n")
    assert [e.mount_point for e in entries] == ["/proc", "/", "/boot/firmware", "/mnt/pycam", "/media/my disk"]
    assert entries[3].source == "/dev/sda1" and entries[3].device_id == "8:1" and entries[3].fstype == "ext4"
    assert containing_mount("/mnt/pycam/data/2024-05-01", entries).mount_point == "/mnt/pycam"
    assert containing_mount("/mnt/pycamera", entries).mount_point == "/"


def test_data_root_on_the_mounted_ssd_by_mount_point():
    result = check_storage(storage(mount_point="/mnt/pycam"), WITH_SSD)
    assert result["on_ssd"] and result["matched_by"] == "mount_point" and not result["fallback"]
    assert result["ok"] and result["kind"] == "ssd"
    assert "SSD /mnt/pycam (/dev/sda1" in result["summary"]


def test_ssd_not_mounted_is_refused_with_a_clear_message():
    with pytest.raises(StorageError, match="nothing is mounted at storage.mount_point /mnt/pycam"):
        check_storage(storage(mount_point="/mnt/pycam"), SD_ONLY)


def test_data_root_beside_the_ssd_is_refused():
    with pytest.raises(StorageError, match="is on /, not on the SSD at /mnt/pycam"):
        check_storage(storage(mount_point="/mnt/pycam", data_root="/home/pi/data"), WITH_SSD)


def test_allowed_fallback_is_accepted_and_reported():
    result = check_storage(storage(mount_point="/mnt/pycam", allow_fallback=True), SD_ONLY)
    assert result["fallback"] and not result["on_ssd"] and result["mount_point"] == "/"
    assert "not mounted" in result["problem"] and "FALLBACK" in result["summary"]


def test_nothing_configured_needs_the_fallback():
    with pytest.raises(StorageError, match="neither storage.mount_point nor storage.fs_uuid"):
        check_storage(storage(), WITH_SSD)
    assert check_storage(storage(allow_fallback=True), WITH_SSD)["fallback"]


def test_by_filesystem_uuid(tmp_path):
    by_uuid = tmp_path / "by-uuid"
    by_uuid.mkdir()
    dev = tmp_path / "sda1"
    dev.write_text("")
    (by_uuid / "1234-abcd").symlink_to(dev)
    info = SD_ONLY + f"41 27 8:1 / /mnt/pycam rw - ext4 {dev} rw\n"
    result = check_storage(storage(fs_uuid="1234-abcd"), info, by_uuid=by_uuid)
    assert result["on_ssd"] and result["matched_by"] == "fs_uuid"
    with pytest.raises(StorageError, match="no disk with filesystem UUID ffff"):
        check_storage(storage(fs_uuid="ffff"), info, by_uuid=by_uuid)
    other = SD_ONLY + "41 27 8:17 / /mnt/pycam rw - ext4 /dev/sdb1 rw\n"
    with pytest.raises(StorageError, match="not on the disk with UUID 1234-abcd"):
        check_storage(storage(fs_uuid="1234-abcd"), other, by_uuid=by_uuid)


def test_read_only_ssd_is_refused_even_when_it_is_the_right_disk():
    with pytest.raises(StorageError, match="read-only"):
        check_storage(storage(mount_point="/mnt/pycam"), SSD_READ_ONLY)


def test_create_makes_the_data_root_on_an_accepted_disk(tmp_path):
    root = tmp_path / "data"
    info = f"27 1 179:2 / / rw - ext4 /dev/mmcblk0p2 rw\n41 27 8:1 / {tmp_path} rw - ext4 /dev/sda1 rw\n"
    result = check_storage(storage(data_root=str(root), mount_point=str(tmp_path)), info, create=True)
    assert result["on_ssd"] and root.is_dir()


def test_real_mountinfo_parses():
    result = check_storage(storage(data_root="/tmp", allow_fallback=True))
    assert result["mount_point"].startswith("/")
