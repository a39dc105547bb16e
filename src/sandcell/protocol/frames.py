"""The wire format between the host and the supervisor inside a sandbox.

A frame is ``>II`` (header length, payload length), a JSON header and raw
payload bytes. Binary data (stdout chunks, file contents) travels as payload,
so it is never base64-encoded and a multi-byte character split across two
chunks is harmless.

Every request carries an ``id`` chosen by the host. The supervisor answers
with any number of event frames carrying the same ``id`` and ends the
exchange with exactly one terminal frame: ``type`` ``done`` or ``fail``.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Protocol

HEADER = struct.Struct(">II")
MAX_HEADER = 16 * 1024 * 1024
MAX_PAYLOAD = 64 * 1024 * 1024

# Terminal frame types.
DONE = "done"
FAIL = "fail"
TERMINAL = frozenset({DONE, FAIL})
# Written raw (not as a frame) by the supervisor, followed by the host's
# nonce, after a ``resync``: a host taking over a sandbox skips everything
# before it. A frame never starts with these bytes (its header would be 4 GiB).
RESYNC_MARK = b"\xff\xff\xff\xffsandcell-resync:"


class ByteReader(Protocol):
    """What frames are read from: a blocking binary stream whose ``read`` gives at most ``size`` bytes, none at EOF."""

    def read(self, size: int, /) -> bytes: ...


# Flow control of ``files.read``: the supervisor sends at most this many
# ``data`` frames of a read the host has not taken yet; the host grants more
# with ``files.more`` (``target``: the read's id, ``frames``: how many it took).
READ_WINDOW = 8
WINDOWED = frozenset({"files.read"})


class ProtocolError(Exception):
    """The peer sent bytes that are not a valid frame."""


def encode(header: dict[str, Any], payload: bytes = b"") -> bytes:
    head = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return HEADER.pack(len(head), len(payload)) + head + payload


def parse_lengths(prefix: bytes) -> tuple[int, int]:
    head_len, payload_len = HEADER.unpack(prefix)
    if head_len > MAX_HEADER or payload_len > MAX_PAYLOAD:
        raise ProtocolError(f"frame too large: header {head_len}, payload {payload_len}")
    return head_len, payload_len


def parse_header(raw: bytes) -> dict[str, Any]:
    try:
        header = json.loads(raw)
    except ValueError as exc:
        raise ProtocolError(f"frame header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError("frame header is not a JSON object")
    return header


def read_frame(stream: ByteReader) -> tuple[dict[str, Any], bytes] | None:
    """Read one frame from a blocking binary stream; ``None`` at a clean EOF."""
    sized = read_sized_frame(stream)
    return None if sized is None else sized[:2]


def read_sized_frame(stream: ByteReader) -> tuple[dict[str, Any], bytes, int] | None:
    """``read_frame``, with the frame's size in bytes."""
    prefix = _read_exactly(stream, HEADER.size, allow_eof=True)
    if prefix is None:
        return None
    head_len, payload_len = parse_lengths(prefix)
    header = parse_header(_read_exactly(stream, head_len))
    payload = _read_exactly(stream, payload_len) if payload_len else b""
    return header, payload, HEADER.size + head_len + payload_len


def _read_exactly(stream: ByteReader, size: int, allow_eof: bool = False) -> Any:
    chunks = []
    remaining = size
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            if allow_eof and remaining == size:
                return None
            raise ProtocolError("connection closed in the middle of a frame")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
