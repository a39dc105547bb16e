"""File operations, done from inside the sandbox.

The supervisor shares the sandbox's mount namespace and uid, so a symlink the
sandboxed code plants (``/home/user/x -> /etc/shadow``) resolves to what the
sandbox itself can see and nothing more: the host never touches a path inside
a sandbox.
"""

from __future__ import annotations

import asyncio
import datetime
import grp
import os
import pwd
import shutil
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

CHUNK = 1024 * 1024


def resolve(path: str, home: str) -> str:
    if not path:
        raise ValueError("path is empty")
    return os.path.normpath(os.path.join(home, os.path.expanduser(path) if path.startswith("~") else path))


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


# What ``entry`` calls each kind of file (``sandcell.sandbox.models.FileType``); a link is
# described as what it points to, and as ``symlink`` only when that is nothing.
KINDS = (
    (stat.S_ISREG, "file"),
    (stat.S_ISDIR, "dir"),
    (stat.S_ISLNK, "symlink"),
    (stat.S_ISFIFO, "fifo"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "char_device"),
    (stat.S_ISBLK, "block_device"),
)
LABELS = {"symlink": "symbolic link", "fifo": "FIFO", "socket": "socket", "char_device": "character device", "block_device": "block device"}


class Unreadable(ValueError):
    """Not a file ``files.read`` reads: not a regular one, a link it may not follow, or too large."""


def kind(mode: int) -> str:
    return next((name for test, name in KINDS if test(mode)), "file")


def entry(path: str) -> dict[str, Any]:
    info = os.lstat(path)
    target = None
    if stat.S_ISLNK(info.st_mode):
        target = os.readlink(path)
        try:
            info = os.stat(path)
        except OSError:
            pass  # dangling link: describe the link itself
    return {
        "name": os.path.basename(path) or path,
        "path": path,
        "type": kind(info.st_mode),
        "size": info.st_size,
        "mode": stat.S_IMODE(info.st_mode),
        "permissions": stat.filemode(info.st_mode),
        "owner": _owner(info.st_uid),
        "group": _group(info.st_gid),
        "modified_time": datetime.datetime.fromtimestamp(info.st_mtime, datetime.UTC).isoformat(),
        "symlink_target": target,
    }


@dataclass
class Reading:
    """A file open for ``files.read``; ``size``: its size when opened, or ``None`` when it is to be
    read to its end: a FIFO, or a file that says it is empty (``/proc``'s do, yet hold text)."""

    fd: int
    size: int | None
    fifo: bool

    def close(self) -> None:
        os.close(self.fd)


def open_for_read(path: str, follow: bool, fifo: bool, limit: int | None) -> Reading:
    """``path`` open for reading if it is a regular file (or, with ``fifo``, a FIFO) of at most ``limit`` bytes.

    The path is looked up once without opening what it names (``O_PATH``: no
    device is opened, no FIFO waited for), its last component a link only
    with ``follow``; what it found is checked, then opened through
    ``/proc/self/fd``: the very file checked, whatever the path names by then.
    """
    probe = os.open(path, os.O_PATH | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW))
    try:
        info = os.fstat(probe)
        what = kind(info.st_mode)
        if what == "dir":
            raise IsADirectoryError(f"{path} is a directory")
        if what == "symlink":
            raise Unreadable(f"{path} is a symbolic link, which is not followed here")
        if what != "file" and not (what == "fifo" and fifo):
            raise Unreadable(f"{path} is a {LABELS[what]}, not a regular file")
        if limit is not None and info.st_size > limit:
            raise Unreadable(f"{path} is {info.st_size} bytes, more than the limit of {limit}")
        fd = os.open(f"/proc/self/fd/{probe}", os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    finally:
        os.close(probe)
    return Reading(fd, info.st_size if what == "file" and info.st_size else None, what == "fifo")


async def read_chunks(reading: Reading, path: str, limit: int | None) -> AsyncIterator[bytes]:
    """The file's bytes up to its size when opened (what it grows by after is not read), or to its
    end (see ``Reading``); ``Unreadable`` past ``limit`` bytes."""
    to_end = reading.size is None
    left = limit if to_end else reading.size  # None: no limit
    while left is None or left > 0 or to_end:
        want = CHUNK if left is None else min(CHUNK, left + to_end)  # to the end: one byte more tells the limit is passed
        if reading.fifo:
            chunk = await _read_fifo(reading.fd, want)
        else:
            chunk = await asyncio.to_thread(os.read, reading.fd, want)
        if not chunk:
            return
        if left is not None:
            left -= len(chunk)
            if left < 0:
                raise Unreadable(f"{path} holds more than the limit of {limit} bytes")
        yield chunk


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _read_fifo(fd: int, size: int) -> bytes:
    """Up to ``size`` bytes of a FIFO, waiting (cancellably) for its writer: until one came,
    a read would find the end at once, so each read waits for readability first."""
    loop = asyncio.get_running_loop()
    while True:
        ready = loop.create_future()
        loop.add_reader(fd, _wake, ready)
        try:
            await ready
        finally:
            loop.remove_reader(fd)
        try:
            return os.read(fd, size)
        except BlockingIOError:
            continue


def write(path: str, data: bytes, append: bool) -> dict[str, Any]:
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory")
    os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
    with open(path, "ab" if append else "wb") as handle:
        handle.write(data)
    return {"name": os.path.basename(path), "path": path, "type": "file"}


def list_dir(path: str, depth: int) -> list[dict[str, Any]]:
    if depth < 1:
        raise ValueError("depth must be at least 1")
    if not os.path.exists(path):  # missing, or a link to nothing the sandbox has
        raise FileNotFoundError(f"{path} does not exist")
    if not os.path.isdir(path):
        raise NotADirectoryError(f"{path} is not a directory")
    entries = []
    with os.scandir(path) as scan:
        children = sorted(scan, key=lambda item: item.name)
    for child in children:
        entries.append(entry(child.path))
        if depth > 1 and child.is_dir(follow_symlinks=False):
            entries.extend(list_dir(child.path, depth - 1))
    return entries


def remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.remove(path)


def make_dir(path: str) -> bool:
    if os.path.isdir(path):
        return False
    os.makedirs(path)
    return True


def rename(source: str, destination: str) -> dict[str, Any]:
    os.makedirs(os.path.dirname(destination) or "/", exist_ok=True)
    os.rename(source, destination)
    return entry(destination)
