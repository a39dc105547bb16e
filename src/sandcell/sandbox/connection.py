"""The host's end of the pipe to a sandbox's supervisor.

One reader thread reads every frame and hands it to the stream of the request
it answers; the caller consumes its stream from its own thread (``SyncStream``)
or event loop (``AsyncStream``). Callbacks therefore never run on the reader
thread, and a slow consumer slows only itself.

If the supervisor goes away, every open stream gets a ``fail`` frame naming
the reason, so no caller waits forever.

The supervisor caps what a run or command sends (``output_mb``); the reader
holds a cap of its own, ``output_budget``, for a supervisor that does not
(the code beside it may have subverted it): past it, that request's frames
are dropped, one marker says so, and only its terminal frame gets through.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import queue
import secrets
import select
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, BinaryIO, Protocol

from sandcell import protocol

Frame = tuple[dict[str, Any], bytes]

# Requests whose frames the supervisor caps: a run, a command, a follower of a command.
CAPPED_OPS = frozenset({"run_code", "command.run", "command.connect"})
# What a frame costs beyond its bytes while it waits in a stream (its header
# dict, the tuple...), roughly: a flood of tiny frames is counted for what it weighs.
FRAME_COST = 256
HOST_CUT_MARKER = b"\n[sandcell: output beyond the sandbox's limit was dropped by the host]\n"


def output_budget(output_limit: int) -> int:
    """The bytes a capped request may deliver, every frame counted at its size plus ``FRAME_COST``.

    A supervisor that keeps to its cap sends well below it (see ``sandcell.runtime.output``).
    """
    return 2 * output_limit + (4 << 20)


class Stream(Protocol):
    taken: Callable[[Frame], None] | None

    def put(self, frame: Frame) -> None: ...


class SyncStream:
    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Frame] = queue.SimpleQueue()  # C-implemented: no Condition per frame
        self.taken: Callable[[Frame], None] | None = None  # told of each frame the consumer takes (``Credit``)

    def put(self, frame: Frame) -> None:
        self._queue.put(frame)

    def get(self, timeout: float | None) -> Frame:
        """The next frame; ``TimeoutError`` if none came within ``timeout`` seconds (as ``AsyncStream``)."""
        try:
            frame = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError from None
        if self.taken is not None:
            self.taken(frame)
        return frame


class AsyncStream:
    """Frames for consumers on an event loop, put from the reader thread.

    A frame already there is taken without waiting; otherwise one future
    (and, with a timeout, one timer) per wait instead of asyncio.Queue's
    getter plus wait_for's task, and one loop wake-up per batch of frames.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._frames: collections.deque[Frame] = collections.deque()
        self._waiters: list[asyncio.Future[None]] = []
        self._waking = False
        self.taken: Callable[[Frame], None] | None = None  # as SyncStream's

    def put(self, frame: Frame) -> None:
        self._frames.append(frame)
        if not self._waking:  # a wake-up already on its way finds this frame too
            self._waking = True
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._waking = False
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _expire(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            if self._frames:
                waiter.set_result(None)
            else:
                waiter.set_exception(TimeoutError())

    async def get(self, timeout: float | None) -> Frame:
        frames = self._frames
        if not frames:
            loop = self._loop
            deadline = None if timeout is None else loop.time() + timeout
            # A wake-up may find its frame already taken (by an earlier get
            # that did not have to wait): then wait on, to the same deadline.
            while not frames:
                waiter = loop.create_future()
                timer = None if deadline is None else loop.call_at(deadline, self._expire, waiter)
                self._waiters.append(waiter)
                try:
                    await waiter
                finally:
                    self._waiters.remove(waiter)
                    if timer is not None:
                        timer.cancel()
        frame = frames.popleft()
        if self.taken is not None:
            self.taken(frame)
        return frame


class Credit:
    """The host's half of a read's flow control (``protocol.READ_WINDOW``): as the consumer
    takes the read's data frames, the supervisor may send as many more.

    So a file streams through the host at the consumer's pace, holding at most
    a window of it, however large (or endless) it is."""

    BATCH = protocol.READ_WINDOW // 2

    def __init__(self, connection: Connection, request_id: int) -> None:
        self._connection = connection
        self._request_id = request_id
        self._taken = 0

    def __call__(self, frame: Frame) -> None:
        if frame[0].get("type") != "data":
            return
        self._taken += 1
        if self._taken >= self.BATCH:
            self._connection.send({"op": "files.more", "id": f"more-{self._request_id}", "target": self._request_id, "frames": self._taken})
            self._taken = 0


def failure(name: str, message: str) -> Frame:
    return {"type": protocol.FAIL, "error": {"name": name, "message": message}}, b""


class Rejoined:
    """The events pipe of a taken-over sandbox, starting right after the resync marker."""

    def __init__(self, already_read: bytes, events: BinaryIO) -> None:
        self._pending = already_read
        self._events = events

    def read(self, size: int) -> bytes:
        if self._pending:
            taken, self._pending = self._pending[:size], self._pending[size:]
            return taken
        return self._events.read(size)


def resync(requests: BinaryIO, events: BinaryIO, timeout: float) -> Rejoined:
    """Find where a new host's frames begin on pipes a dead host left mid-stream.

    The supervisor cancels the old host's requests, then writes the marker with
    our nonce; whatever comes before it (the rest of a frame the old host half
    read, answers to its requests) is skipped.
    """
    nonce = secrets.token_bytes(16)
    marker = protocol.RESYNC_MARK + nonce
    requests.write(protocol.encode({"op": "resync", "id": "resync", "marker": nonce.hex()}))
    requests.flush()
    deadline = time.monotonic() + timeout
    seen = b""
    waiting = select.poll()  # not select(): a host with many sandboxes has fds past 1024
    waiting.register(events, select.POLLIN)
    while marker not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or not waiting.poll(left * 1000):
            raise TimeoutError(f"the sandbox did not answer a resync within {timeout:g} s")
        chunk = os.read(events.fileno(), 1 << 16)
        if not chunk:
            raise EOFError("the sandbox closed its pipe during the resync")
        seen = seen[-len(marker) :] + chunk
    return Rejoined(seen[seen.index(marker) + len(marker) :], events)


class Connection:
    def __init__(
        self,
        requests: BinaryIO,
        events: protocol.ByteReader,
        death_reason: Callable[[str | None], str],
        oom_reason: Callable[[], str | None],
        output_limit: int,
        first_id: int = 1,
    ) -> None:
        """``oom_reason`` says whether the sandbox hit its memory limit: asked here, on the reader
        thread, when an interpreter was killed, so that no caller (an event loop) ever waits for it."""
        self._requests = requests
        self._events = events
        self._death_reason = death_reason
        self._oom_reason = oom_reason
        self._streams: dict[int, Stream] = {}
        self._output_budget = output_budget(output_limit)
        self._budgets: dict[int, int] = {}  # request id -> bytes its frames may still take (capped requests)
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._ids = itertools.count(first_id)
        self.hello = threading.Event()
        self.closed_reason: str | None = None
        self._reader = threading.Thread(target=self._read, name="sandcell-connection", daemon=True)
        self._reader.start()

    def open(self, header: dict[str, Any], payload: bytes, stream: Stream) -> int:
        request_id = next(self._ids)
        with self._lock:
            if self.closed_reason is not None:
                stream.put(failure("SandboxDied", self.closed_reason))
                return request_id
            self._streams[request_id] = stream
            if header.get("op") in CAPPED_OPS:
                self._budgets[request_id] = self._output_budget
        if header.get("op") in protocol.WINDOWED:
            stream.taken = Credit(self, request_id)
        self.send({**header, "id": request_id}, payload)
        return request_id

    def send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        frame = protocol.encode(header, payload)
        try:
            with self._write_lock:
                self._requests.write(frame)
                self._requests.flush()
        except (OSError, ValueError):
            pass  # the reader sees the EOF and fails every open stream

    def forget(self, request_id: int) -> None:
        with self._lock:
            self._streams.pop(request_id, None)
            self._budgets.pop(request_id, None)

    def _read(self) -> None:
        broken = None
        try:
            while True:
                frame = protocol.read_sized_frame(self._events)
                if frame is None:
                    break
                header, payload, size = frame
                if not isinstance(header.get("type"), str):
                    raise protocol.ProtocolError("frame without a type")
                if header["type"] == "error" and header.get("name") == "InterpreterDied" and header.get("signal") == signal.SIGKILL:
                    header["oom"] = self._oom_reason()
                request_id = header.get("id")
                if request_id is None:
                    if header.get("type") == "hello":
                        self.hello.set()
                    continue
                with self._lock:
                    stream = self._streams.get(request_id)
                    if header.get("type") in protocol.TERMINAL:
                        self._streams.pop(request_id, None)
                        self._budgets.pop(request_id, None)
                    elif (left := self._budgets.get(request_id)) is not None:
                        self._budgets[request_id] = left - size - FRAME_COST
                        if left - size - FRAME_COST < 0:
                            if left < 0:
                                continue  # dropped: the marker went before
                            header, payload = {"type": "stderr", "id": request_id}, HOST_CUT_MARKER
                if stream is not None:
                    stream.put((header, payload))
        except protocol.ProtocolError as exc:
            broken = str(exc)
        except (OSError, ValueError):
            pass
        reason = self._death_reason(broken)
        with self._lock:
            self.closed_reason = reason
            streams, self._streams = list(self._streams.values()), {}
            self._budgets.clear()
        self.hello.set()
        for stream in streams:
            stream.put(failure("SandboxDied", reason))
