"""What the host and the supervisor inside a sandbox share: the wire format and the names both use.

Both sides import this package (the supervisor gets a copy staged into the
sandbox), so it must stay stdlib-only and free of host-side imports.
"""

from .frames import (
    DONE,
    FAIL,
    HEADER,
    MAX_HEADER,
    MAX_PAYLOAD,
    READ_WINDOW,
    RESYNC_MARK,
    TERMINAL,
    WINDOWED,
    ByteReader,
    ProtocolError,
    encode,
    parse_header,
    parse_lengths,
    read_frame,
    read_sized_frame,
)
from .languages import LANGUAGE_ALIASES, LANGUAGES, normalize_language
from .names import ENV_NAME, HOME, SANDBOX_UID, SANDBOX_USER, WORK_DIR, part_name, part_prefix

__all__ = [
    "DONE",
    "ENV_NAME",
    "FAIL",
    "HEADER",
    "HOME",
    "LANGUAGES",
    "LANGUAGE_ALIASES",
    "MAX_HEADER",
    "MAX_PAYLOAD",
    "READ_WINDOW",
    "RESYNC_MARK",
    "SANDBOX_UID",
    "SANDBOX_USER",
    "TERMINAL",
    "WINDOWED",
    "WORK_DIR",
    "ByteReader",
    "ProtocolError",
    "encode",
    "normalize_language",
    "parse_header",
    "parse_lengths",
    "part_name",
    "part_prefix",
    "read_frame",
    "read_sized_frame",
]
