"""The link's shared key and the handshake proofs (challenge-response, HMAC-SHA256 over nonces from both ends).

Each station has one key: 32 random bytes in a file of mode 0600 (network.link_key_file, by default
<state_dir>/link.key), made once by the installer with `create_key` and copied to the other Pi. In the handshake
the slave sends a fresh nonce in its hello; the master answers with its own nonce and its proof over both; the
slave checks that before it trusts anything from the master (acks delete spool files), then sends its own proof;
the master checks that before the connection becomes the slave's session. The role is part of what is signed, so
one end's proof is never valid as the other's. stdlib `hmac`/`secrets`: nothing to add for 30 lines.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import secrets
import stat
from hashlib import sha256
from pathlib import Path

from controller.config import Config
from controller.errors import ConfigError, ProtocolError
from controller.storage.atomic import NameTaken, atomic_create_bytes

KEY_BYTES = 32  # what create_key makes; a longer key (up to MAX_KEY_BYTES) from elsewhere is accepted
MAX_KEY_BYTES = 1024
KEY_FILE = "link.key"
NONCE_BYTES = 16
_NONCE = re.compile(r"^[0-9a-f]{%d}$" % (2 * NONCE_BYTES))  # noqa: UP031 (a regex quantifier, braces clash)
_PROOF = re.compile(r"^[0-9a-f]{64}$")
_LABEL = b"pycam-link-v1"


def key_path(cfg: Config) -> Path:
    """Where this station's link key lives: network.link_key_file, or <storage.state_dir>/link.key."""
    return Path(cfg.network.link_key_file) if cfg.network.link_key_file else cfg.storage.state_dir / KEY_FILE


def create_key(path: str | Path) -> Path:
    """Make a new random key at `path` (mode 0600) unless a key is already there (never replaced: the other Pi
    holds a copy). Returns the path."""
    path = Path(path)
    try:
        atomic_create_bytes(path, secrets.token_bytes(KEY_BYTES), mode=0o600)
    except NameTaken:
        pass
    return path


def load_key(path: str | Path) -> bytes:
    """The key in `path`; ConfigError (one line naming the file) when it is missing, unreadable, of the wrong size
    or readable by others."""
    path = Path(path)
    key = "network.link_key_file"
    try:
        st = os.stat(path)
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            key, f"link key file {path} is missing (the installer makes it; copy it to both Pis)"
        ) from None
    except OSError as e:
        raise ConfigError(key, f"link key file {path} cannot be read: {e.strerror or e}") from None
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise ConfigError(key, f"link key file {path} has mode {stat.S_IMODE(st.st_mode):o}; it must be 600")
    if not KEY_BYTES <= len(data) <= MAX_KEY_BYTES:
        raise ConfigError(key, f"link key file {path} holds {len(data)} bytes, not {KEY_BYTES}..{MAX_KEY_BYTES}")
    return data


def new_nonce() -> str:
    return secrets.token_hex(NONCE_BYTES)


def check_nonce(value: object) -> str:
    if not isinstance(value, str) or not _NONCE.match(value):
        raise ProtocolError(f"link handshake: nonce must be {2 * NONCE_BYTES} lowercase hex digits")
    return value


def proof(key: bytes, role: str, slave_nonce: str, master_nonce: str) -> str:
    """What the end with `role` sends to prove it holds the key, bound to both nonces of this connection."""
    msg = b"|".join((_LABEL, role.encode(), slave_nonce.encode(), master_nonce.encode()))
    return hmac.new(key, msg, sha256).hexdigest()


def verify(key: bytes, role: str, slave_nonce: str, master_nonce: str, received: object) -> bool:
    if not isinstance(received, str) or not _PROOF.match(received):
        return False
    return hmac.compare_digest(proof(key, role, slave_nonce, master_nonce), received)


class FrameMac:
    """After the handshake every frame's header carries `mac`: HMAC-SHA256 under a key of this connection (from the
    link key and both nonces) over the sender's role, a per-direction sequence number and the header. So a man in
    the middle who relayed a real handshake still cannot inject, replay, reorder or change a frame (an ack above
    all); a file's payload is covered through the sha256 in its header."""

    def __init__(self, key: bytes, role: str, peer_role: str, slave_nonce: str, master_nonce: str):
        msg = b"|".join((_LABEL, b"session", slave_nonce.encode(), master_nonce.encode()))
        self._key = hmac.new(key, msg, sha256).digest()
        self._roles = (role, peer_role)
        self._seq = [0, 0]  # sent, received

    def _mac(self, role: str, seq: int, header: dict) -> str:
        body = json.dumps(header, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hmac.new(self._key, f"{role}|{seq}|{body}".encode(), sha256).hexdigest()

    def sign(self, header: dict) -> dict:
        signed = {**header, "mac": self._mac(self._roles[0], self._seq[0], header)}
        self._seq[0] += 1
        return signed

    def check(self, header: dict) -> dict:
        """The header without its mac; ProtocolError when the mac is missing or wrong."""
        received = header.pop("mac", None)
        expected = self._mac(self._roles[1], self._seq[1], header)
        if not isinstance(received, str) or not hmac.compare_digest(expected, received):
            raise ProtocolError(f"frame {self._seq[1]} from the {self._roles[1]}: bad or missing mac (not our peer)")
        self._seq[1] += 1
        return header
