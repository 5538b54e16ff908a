"""Link framing: a fixed binary prefix, a JSON header, a binary payload. No pickle, nothing evaluated.

Wire layout of one frame (network byte order)::

    magic    4s   b"PCLK"
    version  B    FRAME_VERSION
    flags    B    0 (reserved)
    hlen     I    length of the JSON header in bytes
    plen     I    length of the binary payload in bytes
    crc      I    zlib.crc32 of the fields above (without crc) and the header bytes
    header   hlen bytes, UTF-8 JSON object with a string "type"
    payload  plen bytes

The CRC makes a corrupted prefix or header fail at once as a ProtocolError instead of making the reader wait
for a bogus length. Payload integrity is the business of the message (file transfers carry a sha256).
"""

from __future__ import annotations

import asyncio
import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

from controller.errors import LinkError, ProtocolError

MAGIC = b"PCLK"
FRAME_VERSION = 1
_PREFIX = struct.Struct("!4sBBIII")
_CRC_COVERED = struct.Struct("!4sBBII")
PREFIX_SIZE = _PREFIX.size


@dataclass(frozen=True)
class FrameLimits:
    """Upper bounds on what a peer may send; anything larger is refused before it is read."""

    max_header_bytes: int = 64 * 1024
    max_payload_bytes: int = 64 * 1024 * 1024


DEFAULT_LIMITS = FrameLimits()
# Before both ends proved the key: a hello or an auth message, small, never a payload.
HANDSHAKE_LIMITS = FrameLimits(max_header_bytes=4096, max_payload_bytes=0)


@dataclass
class Message:
    header: dict[str, Any]
    payload: bytes = field(default=b"", repr=False)

    @property
    def type(self) -> str:
        return self.header["type"]


def encode_prefix_and_header(header: dict[str, Any], payload_len: int, limits: FrameLimits = DEFAULT_LIMITS) -> bytes:
    """Prefix + header bytes; the payload is written separately so big payloads are never copied."""
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise ProtocolError("a frame header needs a string 'type'")
    hbytes = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    if len(hbytes) > limits.max_header_bytes:
        raise ProtocolError(f"header of {len(hbytes)} bytes exceeds the limit of {limits.max_header_bytes}")
    if payload_len > limits.max_payload_bytes:
        raise ProtocolError(f"payload of {payload_len} bytes exceeds the limit of {limits.max_payload_bytes}")
    covered = _CRC_COVERED.pack(MAGIC, FRAME_VERSION, 0, len(hbytes), payload_len)
    crc = zlib.crc32(hbytes, zlib.crc32(covered))
    return _PREFIX.pack(MAGIC, FRAME_VERSION, 0, len(hbytes), payload_len, crc) + hbytes


def encode_frame(header: dict[str, Any], payload: bytes = b"", limits: FrameLimits = DEFAULT_LIMITS) -> bytes:
    return encode_prefix_and_header(header, len(payload), limits) + payload


def _parse_prefix(prefix: bytes, limits: FrameLimits) -> tuple[int, int, int]:
    magic, version, flags, hlen, plen, crc = _PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise ProtocolError(f"bad frame magic {magic!r}")
    if version != FRAME_VERSION:
        raise ProtocolError(f"unsupported frame version {version} (this end speaks {FRAME_VERSION})")
    if flags != 0:
        raise ProtocolError(f"unknown frame flags {flags:#x}")
    if hlen == 0 or hlen > limits.max_header_bytes:
        raise ProtocolError(f"header length {hlen} outside 1..{limits.max_header_bytes}")
    if plen > limits.max_payload_bytes:
        raise ProtocolError(f"payload length {plen} exceeds the limit of {limits.max_payload_bytes}")
    return hlen, plen, crc


def _parse_header(prefix: bytes, hbytes: bytes, crc: int) -> dict[str, Any]:
    if zlib.crc32(hbytes, zlib.crc32(prefix[: _CRC_COVERED.size])) != crc:
        raise ProtocolError("frame header checksum mismatch")
    try:
        header = json.loads(hbytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ProtocolError(f"frame header is not UTF-8 JSON: {e}") from e
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise ProtocolError("frame header must be a JSON object with a string 'type'")
    return header


class FrameDecoder:
    """Incremental decoder: feed any chunks, get whole messages. After a ProtocolError it stays failed."""

    def __init__(self, limits: FrameLimits = DEFAULT_LIMITS):
        self.limits = limits
        self._buf = bytearray()
        self._failed: ProtocolError | None = None
        # Frame being read: prefix fields, and its header once that has arrived and passed its checks.
        self._pending: tuple[bytes, int, int, int] | None = None
        self._header: dict[str, Any] | None = None

    def feed(self, data: bytes) -> list[Message]:
        if self._failed is not None:
            raise ProtocolError(f"decoder already failed: {self._failed}")
        self._buf += data
        out: list[Message] = []
        try:
            while True:
                if self._pending is None:
                    if len(self._buf) < PREFIX_SIZE:
                        break
                    prefix = bytes(self._buf[:PREFIX_SIZE])
                    hlen, plen, crc = _parse_prefix(prefix, self.limits)
                    self._pending = (prefix, hlen, plen, crc)
                prefix, hlen, plen, crc = self._pending
                if self._header is None:
                    # Checked before the payload arrives, so a bad header fails early.
                    if len(self._buf) < PREFIX_SIZE + hlen:
                        break
                    self._header = _parse_header(prefix, bytes(self._buf[PREFIX_SIZE : PREFIX_SIZE + hlen]), crc)
                total = PREFIX_SIZE + hlen + plen
                if len(self._buf) < total:
                    break
                payload = bytes(self._buf[PREFIX_SIZE + hlen : total])
                del self._buf[:total]
                out.append(Message(self._header, payload))
                self._pending = None
                self._header = None
        except ProtocolError as e:
            self._failed = e
            self._buf.clear()
            raise
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf)


async def read_head(
    reader: asyncio.StreamReader, limits: FrameLimits = DEFAULT_LIMITS
) -> tuple[dict[str, Any], int] | None:
    """Read one frame's prefix and header, leaving its payload in the stream: (header, payload length). The
    limits are checked on the prefix, before anything more is read. None on a clean EOF between frames."""
    try:
        prefix = await reader.readexactly(PREFIX_SIZE)
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return None
        raise LinkError("connection closed inside a frame prefix") from e
    hlen, plen, crc = _parse_prefix(prefix, limits)
    try:
        hbytes = await reader.readexactly(hlen)
    except asyncio.IncompleteReadError as e:
        raise LinkError("connection closed inside a frame") from e
    return _parse_header(prefix, hbytes, crc), plen


async def read_message(reader: asyncio.StreamReader, limits: FrameLimits = DEFAULT_LIMITS) -> Message | None:
    """Read one whole frame. None on a clean EOF between frames; LinkError on EOF inside a frame."""
    head = await read_head(reader, limits)
    if head is None:
        return None
    header, plen = head
    try:
        payload = await reader.readexactly(plen) if plen else b""
    except asyncio.IncompleteReadError as e:
        raise LinkError("connection closed inside a frame") from e
    return Message(header, payload)
