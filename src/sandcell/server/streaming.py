"""Streaming a run's output over HTTP as NDJSON, shared by the native and E2B routes.

Lines have the shapes ``e2b_code_interpreter``'s ``parse_output`` reads:
``stdout``/``stderr`` with text and timestamp, ``result`` with one field per
format, ``error``, ``number_of_executions`` and ``end_of_execution``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from sandcell.sandbox import AsyncSandbox
from sandcell.sandbox.models import MIME_FIELDS, Context, Result, SandboxException

from .errors import ApiError, status_for

# A run the sandbox refuses (unknown context or language) fails within this
# time and is answered with a status; anything later is streamed.
REFUSAL_WINDOW = 0.2


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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()  # type: ignore[attr-defined]


def result_line(result: Result) -> dict[str, Any]:
    line: dict[str, Any] = {"type": "result", "is_main_result": result.is_main_result, "extra": {}}
    for mime, value in result.data.items():
        if mime in MIME_FIELDS:
            line[MIME_FIELDS[mime]] = value
        else:
            line["extra"][mime] = value
    return line


async def execution_lines(
    request: Request, sandbox: AsyncSandbox, code: Any, language: Any, context_id: Any, envs: dict[str, str], timeout: float | None
) -> Response:
    if not isinstance(code, str):
        raise ApiError(400, "code must be a string")
    if context_id is not None and not isinstance(context_id, str) or language is not None and not isinstance(language, str):
        raise ApiError(400, "context_id and language must be strings")
    lines: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def run() -> None:
        try:
            execution = await sandbox.run_code(
                code,
                language=language if not context_id else None,
                context=Context(context_id, language or "", "") if context_id else None,
                envs=envs,
                timeout=timeout,
                on_stdout=lambda message: lines.put_nowait({"type": "stdout", "text": message.line, "timestamp": message.timestamp}),
                on_stderr=lambda message: lines.put_nowait({"type": "stderr", "text": message.line, "timestamp": message.timestamp}),
                on_result=lambda result: lines.put_nowait(result_line(result)),
                on_error=lambda error: lines.put_nowait({"type": "error", "name": error.name, "value": error.value, "traceback": error.traceback}),
            )
            if execution.execution_count is not None:
                lines.put_nowait({"type": "number_of_executions", "execution_count": execution.execution_count})
            lines.put_nowait({"type": "end_of_execution"})
        except SandboxException as exc:
            lines.put_nowait({"type": "error", "name": type(exc).__name__, "value": str(exc), "traceback": ""})
            raise
        finally:
            lines.put_nowait(None)

    task = asyncio.create_task(run())
    await asyncio.wait((task,), timeout=REFUSAL_WINDOW)
    if task.done() and isinstance(task.exception(), SandboxException):
        exc = task.exception()
        return JSONResponse({"code": status_for(exc), "message": str(exc)}, status_code=status_for(exc))  # type: ignore[arg-type]

    async def stream() -> AsyncIterator[bytes]:
        try:
            async for line in until_gone(lines.get, request):
                yield (json.dumps(line) + "\n").encode()
        finally:
            task.cancel()  # a client that went away interrupts the code; the context keeps its state

    return StreamingResponse(stream(), media_type="application/x-ndjson")
