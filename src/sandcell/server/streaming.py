"""Streaming a run's output over HTTP as NDJSON, shared by the native and E2B routes.

Lines have the shapes ``e2b_code_interpreter``'s ``parse_output`` reads:
``stdout``/``stderr`` with text and timestamp, ``result`` with one field per
format, ``error``, ``number_of_executions`` and ``end_of_execution``.

A client that reads slower than the code writes holds the run back
(``Backlog``); one that stops reading loses the rest of the output, never the
server its memory.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, Generic, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from sandcell.sandbox import AsyncSandbox
from sandcell.sandbox.errors import status_for
from sandcell.sandbox.models import Context, Result, SandboxDiedException, SandboxException

from .errors import ApiError

# A run the sandbox refuses (unknown context or language) fails within this
# time and is answered with a status; anything later is streamed.
REFUSAL_WINDOW = 0.2
# What one stream holds for a client that reads slower than the code writes.
BACKLOG_BYTES = 1 << 20

Item = TypeVar("Item")


class Backlog(Generic[Item]):
    """What waits to be sent to one client, at most ``BACKLOG_BYTES``.

    ``put`` waits while the backlog is full: the run's frames wait meanwhile
    on the host, within the run's output budget (``sandbox.connection``).
    A client that takes nothing for ``patience`` seconds loses what follows,
    with ``marker()`` in its place; what ``end`` queues (the last lines of the
    stream) gets through whatever happens.
    """

    def __init__(self, patience: float, marker: Callable[[], Item]) -> None:
        self._items: collections.deque[tuple[Item, int]] = collections.deque()
        self._size = 0
        self._patience = patience
        self._marker = marker
        self._dropping = False
        self._arrived = asyncio.Event()
        self._taken = asyncio.Event()

    async def put(self, item: Item, size: int) -> None:
        while not self._dropping and self._size and self._size + size > BACKLOG_BYTES:
            self._taken.clear()
            try:
                await asyncio.wait_for(self._taken.wait(), self._patience)
            except TimeoutError:
                self._dropping = True
                self.end(self._marker())
        if not self._dropping:
            self._append(item, size)

    def end(self, item: Item) -> None:
        self._append(item, 0)

    def _append(self, item: Item, size: int) -> None:
        self._items.append((item, size))
        self._size += size
        self._arrived.set()

    async def get(self) -> Item:
        while not self._items:
            self._arrived.clear()
            await self._arrived.wait()
        item, size = self._items.popleft()
        self._size -= size
        self._taken.set()
        return item


def dropped_notice(patience: float) -> str:
    return f"\n[sandcell: the client read nothing for {patience:g} s; the rest of the output was dropped]\n"


async def client_gone(request: Request) -> None:
    """Return once the client has gone; silent code writes nothing that would tell us otherwise."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def until_gone(next_item: Callable[[], Awaitable[Any]], request: Request) -> AsyncIterator[Any]:
    """Items up to ``None``; stops early when the client goes away."""
    gone = asyncio.create_task(client_gone(request))
    try:
        while True:
            following = asyncio.ensure_future(next_item())
            await asyncio.wait((following, gone), return_when=asyncio.FIRST_COMPLETED)
            if not following.done():
                following.cancel()
                return
            if (item := following.result()) is None:
                return
            yield item
    finally:
        gone.cancel()


class ClosingStream(StreamingResponse):
    """A streamed body whose iterator is closed however the response ends: when the client
    goes, the sandbox request behind it (a file being read) ends then, not when collected."""

    def __init__(self, chunks: AsyncGenerator[bytes, None], **options: Any) -> None:
        super().__init__(chunks, **options)
        self._chunks = chunks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._chunks.aclose()


class BreakableStream(StreamingResponse):
    """A streamed body that can end without its last chunk (``broken()`` true once the body
    iterator is done): the client sees the connection drop, as from a server that died."""

    def __init__(self, content: AsyncIterator[bytes], broken: Callable[[], bool], media_type: str) -> None:
        super().__init__(content, media_type=media_type)
        self._broken = broken

    async def stream_response(self, send: Send) -> None:
        async def send_unless_broken(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body") and self._broken():
                return
            await send(message)

        await super().stream_response(send_unless_broken)


def result_line(result: Result) -> dict[str, Any]:
    return {"type": "result", **result.to_dict()}


def encoded(line: dict[str, Any]) -> bytes:
    return (json.dumps(line) + "\n").encode()


async def execution_lines(
    request: Request, sandbox: AsyncSandbox, code: Any, language: Any, context_id: Any, envs: dict[str, str], timeout: float | None, patience: float
) -> Response:
    """Run ``code`` and stream its lines; a client reading nothing for ``patience`` seconds loses the rest (see ``Backlog``)."""
    if not isinstance(code, str):
        raise ApiError(400, "code must be a string")
    if (context_id is not None and not isinstance(context_id, str)) or (language is not None and not isinstance(language, str)):
        raise ApiError(400, "context_id and language must be strings")
    lines: Backlog[bytes | None] = Backlog(patience, lambda: encoded({"type": "stderr", "text": dropped_notice(patience), "timestamp": time.time_ns()}))

    died = asyncio.Event()

    async def send(line: dict[str, Any]) -> None:
        data = encoded(line)
        await lines.put(data, len(data))

    async def run() -> None:
        try:
            execution = await sandbox.run_code(
                code,
                language=language if not context_id else None,
                context=Context(context_id, language or "", "") if context_id else None,
                envs=envs,
                timeout=timeout,
                on_stdout=lambda message: send({"type": "stdout", "text": message.line, "timestamp": message.timestamp}),
                on_stderr=lambda message: send({"type": "stderr", "text": message.line, "timestamp": message.timestamp}),
                on_result=lambda result: send(result_line(result)),
                on_error=lambda error: send({"type": "error", "name": error.name, "value": error.value, "traceback": error.traceback}),
            )
            if execution.execution_count is not None:
                lines.end(encoded({"type": "number_of_executions", "execution_count": execution.execution_count}))
            lines.end(encoded({"type": "end_of_execution"}))
        except SandboxDiedException:
            # E2B's SDKs raise "the sandbox was killed while the request was in
            # progress" when the stream breaks off and the sandbox is gone.
            died.set()
            raise
        except SandboxException as exc:
            lines.end(encoded({"type": "error", "name": type(exc).__name__, "value": str(exc), "traceback": ""}))
            raise
        finally:
            lines.end(None)

    task = asyncio.create_task(run())
    await asyncio.wait((task,), timeout=REFUSAL_WINDOW)
    if task.done() and isinstance(refused := task.exception(), SandboxException):
        return JSONResponse({"code": status_for(refused), "message": str(refused)}, status_code=status_for(refused))

    async def stream() -> AsyncIterator[bytes]:
        try:
            async for line in until_gone(lines.get, request):
                yield line
        finally:
            task.cancel()  # a client that went away interrupts the code; the context keeps its state

    return BreakableStream(stream(), died.is_set, media_type="application/x-ndjson")
