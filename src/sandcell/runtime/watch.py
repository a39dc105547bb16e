"""Directory watches (E2B's ``watch_dir``) on inotify, read from the event loop.

Each watch owns one inotify instance, so ending a watch is closing one file
descriptor: nothing is shared between watches, and nothing leaks. The names
and kinds of events follow envd (Go's fsnotify on inotify): a name is relative
to the watched directory, and an inotify event maps to one of ``create``,
``write``, ``remove``, ``rename``, ``chmod``.

A recursive watch adds a watch for every subdirectory, and for each new one as
it appears. What a new directory already holds when its watch is added (``mkdir
-p a/b``, or a directory moved in) is reported as created, so nothing made
after the watch started goes unseen.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import struct
from collections.abc import AsyncIterator
from typing import Self

IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

KINDS = ((IN_CREATE | IN_MOVED_TO, "create"), (IN_MODIFY, "write"), (IN_DELETE, "remove"), (IN_MOVED_FROM, "rename"), (IN_ATTRIB, "chmod"))
MASK = IN_MODIFY | IN_ATTRIB | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_ONLYDIR
EVENT = struct.Struct("iIII")  # wd, mask, cookie, length of the name that follows
READ_SIZE = 64 * 1024

_libc = ctypes.CDLL(None, use_errno=True)
_libc.inotify_add_watch.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


class DirectoryWatch:
    """Batches of ``(name, kind)`` for one directory, until it goes away or the watch is closed."""

    def __init__(self, path: str, recursive: bool) -> None:
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} does not exist")
        if not os.path.isdir(path):
            raise NotADirectoryError(f"{path} is not a directory; only directories can be watched")
        self.root = path
        self.recursive = recursive
        self.directories: dict[int, str] = {}  # watch descriptor -> directory relative to the root ("" is the root)
        self.fd = _check(_libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC), "cannot start a watch")
        self._readable = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        try:
            self._add("")
            if recursive:
                self._add_tree("")
        except BaseException:
            self.close()
            raise
        self._loop.add_reader(self.fd, self._on_readable)

    def close(self) -> None:
        if self.fd >= 0:
            self._loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_readable(self) -> None:
        # Stop polling until the batch is read: unread events wait in the kernel's
        # bounded queue, not in our memory.
        self._loop.remove_reader(self.fd)
        self._readable.set()

    def _add(self, relative: str) -> None:
        path = os.path.join(self.root, relative) if relative else self.root
        wd = _check(_libc.inotify_add_watch(self.fd, os.fsencode(path), MASK), f"cannot watch {path}")
        self.directories[wd] = relative

    def _add_tree(self, relative: str) -> list[tuple[str, str]]:
        """Watch the subdirectories of ``relative``; what they hold, as ``create`` events."""
        found: list[tuple[str, str]] = []
        try:
            scan = list(os.scandir(os.path.join(self.root, relative)))
        except OSError:
            return found  # gone again already
        for entry in scan:
            child = os.path.join(relative, entry.name)
            found.append((child, "create"))
            if entry.is_dir(follow_symlinks=False):
                try:
                    self._add(child)
                except OSError as exc:
                    if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                        raise
                    continue
                found.extend(self._add_tree(child))
        return found

    def _forget_tree(self, relative: str) -> None:
        """Drop the watches of a directory moved away: their names would be stale."""
        for wd, directory in list(self.directories.items()):
            if directory == relative or directory.startswith(relative + "/"):
                del self.directories[wd]
                _libc.inotify_rm_watch(self.fd, wd)

    async def batches(self) -> AsyncIterator[list[tuple[str, str]]]:
        """Yield events as they come; ends when the watched directory is gone."""
        while "" in self.directories.values():
            await self._readable.wait()
            self._readable.clear()
            batch = self._read()
            if self.fd >= 0:
                self._loop.add_reader(self.fd, self._on_readable)
            if batch:
                yield batch

    def _read(self) -> list[tuple[str, str]]:
        data = b""
        while True:
            try:
                data += os.read(self.fd, READ_SIZE)
            except BlockingIOError:
                break
        batch: list[tuple[str, str]] = []
        offset = 0
        while offset < len(data):
            wd, mask, _cookie, length = EVENT.unpack_from(data, offset)
            name = os.fsdecode(data[offset + EVENT.size : offset + EVENT.size + length].rstrip(b"\0"))
            offset += EVENT.size + length
            if mask & IN_Q_OVERFLOW:
                raise OverflowError("the watch fell behind and the kernel dropped events; watch again")
            directory = self.directories.get(wd)
            if mask & IN_IGNORED:
                self.directories.pop(wd, None)
                continue
            if directory is None or not name:
                continue
            relative = os.path.join(directory, name)
            batch.extend((relative, kind) for bits, kind in KINDS if mask & bits)
            if self.recursive and mask & IN_ISDIR:
                if mask & IN_MOVED_FROM:
                    self._forget_tree(relative)
                elif mask & (IN_CREATE | IN_MOVED_TO):
                    try:
                        self._add(relative)
                    except OSError:
                        continue  # removed again before we got to it
                    batch.extend(self._add_tree(relative))
        return batch
