"""Host uids for sandboxes: drawn at random from a range, each held by one sandbox at a time.

A uid is reserved by an open-file-description lock (``F_OFD_SETLK``) on the
byte of a lock file at the uid's offset in its range. The description goes
to the sandbox's launcher, so the reservation lasts exactly as long as the
sandbox, whoever started it and whatever happens to the host process; two
host processes never hand out the same uid at once. Random rather than
sequential: a sandbox reading its own uid learns nothing of how many others
started before it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import struct
from pathlib import Path

TRIES = 64


def _byte_lock(offset: int) -> bytes:
    """A ``struct flock`` for an exclusive lock of one byte (``l_pid`` must be 0 for OFD locks)."""
    return struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0)


def reserve_uid(lock_file: Path, base: int, first: int, count: int) -> tuple[int, int]:
    """A free uid in ``base + first .. base + first + count - 1``: (uid, fd holding its reservation).

    The reservation ends when every copy of the fd is closed.
    """
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        for _ in range(TRIES):
            offset = first + secrets.randbelow(count)
            try:
                fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _byte_lock(offset))
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    continue
                raise
            return base + offset, fd
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    raise OSError(errno.EAGAIN, f"no free host uid found in {TRIES} tries: too many sandboxes hold uids of {lock_file.name}")
