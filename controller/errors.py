"""One exception hierarchy. Each error carries what a person needs to act on it."""


class PycamError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(PycamError, ValueError):
    """A config value is missing, unknown, of the wrong type or out of range. `key` is the dotted key."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"{key}: {message}")


class FileNameError(PycamError, ValueError):
    """A file name does not follow spec/file-formats.md."""

    def __init__(self, name: str, message: str):
        self.name = name
        super().__init__(f"{name!r}: {message}")


class StorageError(PycamError, OSError):
    """Writing or reading station data failed (disk full, permission, missing mount)."""


class HardwareError(PycamError, RuntimeError):
    """A device failed. `device` names it (camera A, camera B, spectrometer, gpio, clock)."""

    def __init__(self, device: str, message: str):
        self.device = device
        super().__init__(f"{device}: {message}")


class DeviceUnavailable(HardwareError):
    """The device is not there (unplugged, vendor library missing, not detected)."""


class DeviceTimeout(HardwareError, TimeoutError):
    """The device stopped answering."""


class LinkError(PycamError, ConnectionError):
    """The master<->slave link failed or received something it cannot accept."""


class ProtocolError(PycamError, ValueError):
    """A message on the link or the external port is malformed."""


class ProcessingError(PycamError, RuntimeError):
    """The processing pipeline cannot go on with the data it was given."""
