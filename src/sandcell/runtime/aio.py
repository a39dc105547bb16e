"""asyncio helpers of the supervisor: waiting on a pipe (``ReadWatch``) and on a run's end (``Outcome``)."""

from __future__ import annotations

import asyncio
import os
from typing import Any, Self

# A pipe holds 64 KiB: reading more at once gains nothing, and a larger
# buffer is allocated (mmap) and freed on every read.
PIPE_READ = 65536


class ReadWatch:
    """Waits, again and again, for a pipe to be readable, with one reader
    callback kept registered across the waits (not added and removed per
    wait: two epoll_ctl calls each time).

    The loop's readiness is level-triggered: the poll that follows a wake-up
    still reports the data the woken task is about to read, and would wake
    it once more for nothing. A ``read`` that took all there was has that
    one stale report ignored; if it was not stale after all,
    the next poll reports the data again. While nobody waits the callback is
    removed, so a busy reader cannot make the loop spin.
    """

    def __init__(self, fd: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._fd = fd
        self._waiter: asyncio.Future[None] | None = None
        self._watching = False
        self._stale = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._watching:
            self._loop.remove_reader(self._fd)
            self._watching = False

    def _ready(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            self._loop.remove_reader(self._fd)
            self._watching = False
            self._stale = False
        elif self._stale:
            self._stale = False
        else:
            waiter.set_result(None)

    def read(self, size: int) -> bytes | None:
        """What the pipe holds (``b""`` at its end), or ``None`` if it was a stale report after all."""
        try:
            data = os.read(self._fd, size)
        except BlockingIOError:
            return None
        if 0 < len(data) < size:
            self._stale = True  # we took all there was: the report that follows is about this data
        return data

    async def readable(self) -> None:
        if not self._watching:
            self._loop.add_reader(self._fd, self._ready)
            self._watching = True
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None


class Outcome:
    """How a run ended: set once, awaited (with a timeout) by the run's task.

    Not a Future behind ``wait_for(shield(...))``: setting it wakes the
    waiting task directly, and a timed-out or cancelled wait leaves it
    unset, to be waited for again (that is what the shield was for).
    """

    def __init__(self) -> None:
        self._value: dict[str, Any] | None = None
        self._waiter: asyncio.Future[None] | None = None

    def done(self) -> bool:
        return self._value is not None

    def set_result(self, value: dict[str, Any]) -> None:
        if self._value is None:
            self._value = value
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    async def wait(self, timeout: float | None) -> dict[str, Any]:
        """The outcome; ``asyncio.TimeoutError`` if it is not there within ``timeout`` seconds."""
        if self._value is None:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = None if timeout is None else loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
        assert self._value is not None
        return self._value


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
