"""What one run (or command) sends the host: its output, results and errors.

Everything counts against one cap per run, ``output_mb``: output bytes as
they are, results and errors by their encoded size plus ``EVENT_COST``.
Past the cap the run goes on, but what it sends is dropped, after one marker;
only how it ended still gets through: its main result (if small) and its
first error (cut short).

Output is gathered into few frames: a program writing one byte at a time
must not cost the host a frame (and a callback, an HTTP line) per byte. A
frame leaves ``COALESCE_WINDOW`` seconds after its first byte (a little
later the more frames the run has sent: hours of chatter wait a fraction
of a second), once ``COALESCE_BYTES`` wait, before each result or error, and
at the end of the run, so the end of a run is never delayed. stdout and
stderr are gathered apart and sent in the order their first bytes came.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from sandcell import protocol

Emit = Callable[[dict[str, Any], bytes], Awaitable[None]]

COALESCE_WINDOW = 0.003
COALESCE_BYTES = 64 * 1024
# The window doubles once the run has sent this many frames, triples at twice as many...
WINDOW_GROWTH = 500
# What one result or error costs beyond its size: about what its frame, and
# the output frames flushed before it, cost the host (which counts the same
# way, see ``sandcell.sandbox.connection``), so a supervisor keeping to its
# cap never trips the host's own.
EVENT_COST = 1024
# A larger event could not be framed (``protocol.MAX_HEADER``).
MAX_EVENT = protocol.MAX_HEADER - 64 * 1024
# Past the cap, a main result of up to this many bytes still gets through...
LAST_RESULT_BYTES = 64 * 1024
# ...and an error still says that the run failed, cut to this many characters.
CUT_ERROR_CHARS = 2048


class OutputCap:
    """Counts the bytes of one run and cuts them off, once, with a marker."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sent = 0
        self.truncated = False

    def admit(self, data: bytes) -> tuple[bytes, bytes]:
        """Returns (bytes to forward, marker to send after them)."""
        if self.truncated:
            return b"", b""
        room = self.limit - self.sent
        if len(data) <= room:
            self.sent += len(data)
            return data, b""
        return data[:room], self._cut()

    def admit_event(self, size: int) -> tuple[bool, bytes]:
        """Whether a result or error of ``size`` bytes is forwarded, and the marker to send if it cut the run off."""
        if self.truncated:
            return False, b""
        cost = size + EVENT_COST
        if cost <= min(self.limit - self.sent, MAX_EVENT):
            self.sent += cost
            return True, b""
        return False, self._cut()

    def _cut(self) -> bytes:
        self.truncated = True
        self.sent = self.limit
        return f"\n[sandcell: output truncated after {self.limit} bytes; the rest was discarded]\n".encode()


class RunOutput:
    """One run's output on its way to the host: capped (``OutputCap``) and gathered into few frames."""

    def __init__(self, limit: int, emit: Emit) -> None:
        self.cap = OutputCap(limit)
        self._emit = emit
        self._pending: dict[str, bytearray] = {}  # stream -> bytes waiting, streams in the order their first byte came
        self._timer: asyncio.TimerHandle | None = None
        self._timed_flushes: set[asyncio.Future[None]] = set()
        self._frames = 0
        self._last_words: set[str] = set()  # what got through past the cap: "result" (main), "error"

    async def write(self, stream: str, data: bytes) -> None:
        data, marker = self.cap.admit(data)
        if data:
            waiting = self._pending.setdefault(stream, bytearray())
            waiting += data
            if len(waiting) >= COALESCE_BYTES:
                await self.flush()
            elif self._timer is None:
                window = COALESCE_WINDOW * (1 + self._frames / WINDOW_GROWTH)
                self._timer = asyncio.get_running_loop().call_later(window, self._flush_due)
        if marker:
            await self._cut_off(marker)

    async def event(self, event: dict[str, Any], size: int) -> None:
        """Forward a result or error, ``size`` bytes as the kernel encoded it, after the output before it."""
        admitted, marker = self.cap.admit_event(size)
        if marker:
            await self._cut_off(marker)
        forwarded = event if admitted else self._last_word(event, size)
        if forwarded is not None:
            await self.flush()
            await self._emit(forwarded, b"")

    def _last_word(self, event: dict[str, Any], size: int) -> dict[str, Any] | None:
        """What of an event past the cap still gets through: once, the main result if small, the error cut short."""
        kind = event.get("type")
        if kind in self._last_words:
            return None
        if kind == "result" and event.get("main") and size <= LAST_RESULT_BYTES:
            self._last_words.add(kind)
            return event
        if kind == "error":
            self._last_words.add(kind)
            return {
                **event,
                "name": str(event.get("name"))[:200],
                "value": str(event.get("value"))[:CUT_ERROR_CHARS],
                "traceback": str(event.get("traceback"))[-CUT_ERROR_CHARS:],
            }
        return None

    async def flush(self) -> None:
        """Send what waits now: before an event, and at the end of the run."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, {}
        for stream, data in pending.items():
            self._frames += 1
            await self._emit({"type": stream}, bytes(data))

    async def _cut_off(self, marker: bytes) -> None:
        await self.flush()
        await self._emit({"type": "stderr"}, marker)

    def _flush_due(self) -> None:
        self._timer = None
        flushing = asyncio.ensure_future(self.flush())
        self._timed_flushes.add(flushing)
        flushing.add_done_callback(self._timed_flush_done)

    def _timed_flush_done(self, flushing: asyncio.Future[None]) -> None:
        self._timed_flushes.discard(flushing)
        if not flushing.cancelled():
            flushing.exception()  # taken: a send that failed fails the run's next send too
