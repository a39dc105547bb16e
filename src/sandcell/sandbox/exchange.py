"""One request in flight, from its frame out to its terminal frame back.

An ``Exchange`` decides, in one place, how long each wait may be, when the
request is given up (cancelled in the sandbox, then forgotten) and when a
sandbox whose supervisor failed to end a run in time is killed.
``SyncExchange`` and ``AsyncExchange`` only wait for frames and call
callbacks, one blocking, one with ``await``; every other line is shared.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, Generic, TypeVar

from sandcell import protocol

from . import operations as ops
from .backend import SandboxBackend
from .connection import AsyncStream, Frame, SyncStream
from .models import TimeoutException

# After Ctrl-C, how long (beyond the kill grace) a run may take to confirm it stopped.
INTERRUPT_MARGIN = 10.0

T = TypeVar("T")


class Exchange(Generic[T]):
    def __init__(self, backend: SandboxBackend, operation: ops.Operation[T], stream: Any) -> None:
        backend.ensure_running()
        self.backend = backend
        self.operation = operation
        self.stream = stream
        self.terminal: dict[str, Any] | None = None
        self._cancelled = False
        self._closed = False
        self._started = time.monotonic()
        self.request_id = backend.open(operation.header, operation.payload, stream)

    @property
    def done(self) -> bool:
        """Ended in the sandbox, or given up here."""
        return self.terminal is not None or self._closed

    def bound(self, idle: float | None) -> float | None:
        """How long the next frame may take: ``idle``, and never past the operation's deadline."""
        if self.operation.deadline is None:
            return idle
        left = max(self._started + self.operation.deadline - time.monotonic(), 0.0)
        return left if idle is None else min(idle, left)

    def overdue(self) -> str | None:
        """Why the sandbox must be killed, if the deadline passed: its supervisor failed to enforce the timeout."""
        deadline = self.operation.deadline
        if deadline is None or time.monotonic() < self._started + deadline:
            return None
        return f"its supervisor did not stop a {self.operation.header['op']} that ran past its timeout ({deadline:g} s with kill grace and margin)"

    def timed_out(self, idle: float | None, killed: str | None) -> TimeoutException:
        """Give the request up after no frame came in time; the error to raise."""
        self.close()
        op = self.operation.header["op"]
        if killed is not None:
            return TimeoutException(f"{op}: the sandbox was killed: {killed}")
        return TimeoutException(f"{op}: no answer from the sandbox within {idle:g} s")

    def arrived(self, frame: Frame) -> ops.Calls:
        """The callbacks a frame calls for; a terminal frame ends the exchange."""
        header, payload = frame
        if header["type"] in protocol.TERMINAL:
            self.terminal = header
            return []
        return self.operation.feed(header, payload)

    def outcome(self) -> T:
        """The operation's result (or its error), from the terminal frame (which has come)."""
        assert self.terminal is not None
        return self.operation.finish(self.terminal)

    def cancel(self) -> None:
        """Ask the sandbox to end the request (once)."""
        if not self._cancelled and self.terminal is None:
            self._cancelled = True
            self.backend.cancel(self.request_id)

    def close(self) -> None:
        """Give the request up: cancelled unless it ended, then forgotten. Idempotent."""
        if not self._closed:
            self.cancel()
            self._closed = True
            self.backend.forget(self.request_id)


class SyncExchange(Exchange[T]):
    stream: SyncStream

    def __init__(self, backend: SandboxBackend, operation: ops.Operation[T]) -> None:
        super().__init__(backend, operation, SyncStream())

    def next_frame(self, idle: float | None) -> Frame:
        try:
            frame = self.stream.get(self.bound(idle))
        except TimeoutError:
            killed = self.overdue()
            if killed is not None:
                self.backend.kill(killed)
            raise self.timed_out(idle, killed) from None
        if frame[0]["type"] in protocol.TERMINAL:
            self.terminal = frame[0]
        return frame

    def run(self) -> T:
        """Wait for the terminal frame, calling callbacks on the way; its outcome.

        On Ctrl-C the request is cancelled and drained (a run stops, its
        context keeps its state), then the interrupt goes on; on any other
        error (a timeout, a callback's) the request is given up.
        """
        try:
            while self.terminal is None:
                fire(self.arrived(self.next_frame(self.operation.wait)))
        except KeyboardInterrupt:
            self.drain(self.backend.policy.kill_grace + INTERRUPT_MARGIN)
            raise
        except BaseException:
            self.close()
            raise
        return self.outcome()

    def start(self) -> None:
        """Wait for a long-lived request's first event (raising if it failed to start)."""
        try:
            calls = self.arrived(self.next_frame(ops.START_WAIT))
            if self.terminal is not None:
                self.outcome()
        except BaseException:
            self.close()
            raise
        fire(calls)

    def poll(self) -> ops.Calls:
        """The callbacks of the frames already here, without waiting."""
        calls: ops.Calls = []
        while self.terminal is None:
            try:
                frame = self.stream.get(0)
            except TimeoutError:
                break
            calls += self.arrived(frame)
        return calls

    def drain(self, idle: float) -> None:
        """Cancel, and drop frames until the terminal one (or ``idle`` seconds of silence: a hung sandbox)."""
        self.cancel()
        try:
            while self.terminal is None:
                self.next_frame(idle)
        except TimeoutException:
            pass
        self.close()

    def chunks(self, read: ops.ReadFile) -> Iterator[bytes]:
        """A started read's data as the caller takes it; closing the iterator early ends the read."""
        try:
            if read.chunks:  # a supervisor from before the ``opened`` frame
                yield b"".join(read.chunks)
            while True:
                header, payload = self.next_frame(read.wait)
                if self.terminal is not None:
                    read.finish(header)
                    return
                if data := read.take(header, payload):
                    yield data
        finally:
            self.close()


class AsyncExchange(Exchange[T]):
    stream: AsyncStream

    def __init__(self, backend: SandboxBackend, operation: ops.Operation[T]) -> None:
        super().__init__(backend, operation, AsyncStream())

    async def next_frame(self, idle: float | None) -> Frame:
        try:
            frame = await self.stream.get(self.bound(idle))
        except TimeoutError:
            killed = self.overdue()
            if killed is not None:
                await asyncio.to_thread(self.backend.kill, killed)
            raise self.timed_out(idle, killed) from None
        if frame[0]["type"] in protocol.TERMINAL:
            self.terminal = frame[0]
        return frame

    async def run(self) -> T:
        """See ``SyncExchange.run``; a cancelled task gives the request up (a run stops, its context keeps its state)."""
        try:
            while self.terminal is None:
                await fire_async(self.arrived(await self.next_frame(self.operation.wait)))
        except BaseException:
            self.close()
            raise
        return self.outcome()

    async def start(self) -> None:
        try:
            calls = self.arrived(await self.next_frame(ops.START_WAIT))
            if self.terminal is not None:
                self.outcome()
        except BaseException:
            self.close()
            raise
        await fire_async(calls)

    async def chunks(self, read: ops.ReadFile) -> AsyncIterator[bytes]:
        try:
            if read.chunks:
                yield b"".join(read.chunks)
            while True:
                header, payload = await self.next_frame(read.wait)
                if self.terminal is not None:
                    read.finish(header)
                    return
                if data := read.take(header, payload):
                    yield data
        finally:
            self.close()


def fire(calls: ops.Calls) -> None:
    for callback, value in calls:
        callback(value)


async def fire_async(calls: ops.Calls) -> None:
    """Callbacks may be plain functions or coroutine functions."""
    for callback, value in calls:
        outcome = callback(value)
        if inspect.isawaitable(outcome):
            await outcome
