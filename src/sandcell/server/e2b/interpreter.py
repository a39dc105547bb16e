"""E2B's code-interpreter server (port 49999): ``/execute`` as NDJSON, and ``/contexts``.

Line shapes are those ``e2b_code_interpreter``'s ``parse_output`` reads:
``stdout``/``stderr`` with text and timestamp, ``result`` with one field per
format, ``error``, ``number_of_executions`` and ``end_of_execution``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from sandcell.sandbox import AsyncSandbox
from sandcell.sandbox.models import MIME_FIELDS, Context, InvalidArgumentException, NotFoundException, Result, SandboxException
from sandcell.server.deps import json_object, string_map
from sandcell.server.errors import ApiError
from sandcell.server.manager import SandboxManager


REFUSAL_WINDOW = 0.2


def result_line(result: Result) -> dict[str, Any]:
    line: dict[str, Any] = {"type": "result", "is_main_result": result.is_main_result, "extra": {}}
    for mime, value in result.data.items():
        if mime in MIME_FIELDS:
            line[MIME_FIELDS[mime]] = value
        else:
            line["extra"][mime] = value
    return line


async def _disconnected(request: Request) -> None:
    """Return once the client has gone; silent code writes nothing that would tell us otherwise."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _status(exc: SandboxException) -> int:
    return 404 if isinstance(exc, NotFoundException) else 400 if isinstance(exc, InvalidArgumentException) else 502


def _context_json(context: Context) -> dict[str, str]:
    return {"id": context.id, "language": context.language, "cwd": context.cwd}


def interpreter_app(manager: SandboxManager) -> Starlette:
    def sandbox_of(request: Request) -> AsyncSandbox:
        return manager.data_plane(request.headers.get("e2b-sandbox-id", "")).sandbox

    async def execute(request: Request) -> Response:
        sandbox = sandbox_of(request)
        body = await json_object(request)
        code = body.get("code")
        if not isinstance(code, str):
            raise ApiError(400, "code must be a string")
        context_id, language = body.get("context_id"), body.get("language")
        if context_id is not None and not isinstance(context_id, str) or language is not None and not isinstance(language, str):
            raise ApiError(400, "context_id and language must be strings")
        lines: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

        def say(line: dict[str, Any]) -> None:
            lines.put_nowait(line)

        async def run() -> None:
            try:
                execution = await sandbox.run_code(
                    code,
                    language=language if not context_id else None,
                    context=Context(context_id, language or "", "") if context_id else None,
                    envs=string_map(body, "env_vars"),
                    timeout=None,  # the client's own timeout ends the request, and with it the run
                    on_stdout=lambda message: say({"type": "stdout", "text": message.line, "timestamp": message.timestamp}),
                    on_stderr=lambda message: say({"type": "stderr", "text": message.line, "timestamp": message.timestamp}),
                    on_result=lambda result: say(result_line(result)),
                    on_error=lambda error: say({"type": "error", "name": error.name, "value": error.value, "traceback": error.traceback}),
                )
                if execution.execution_count is not None:
                    say({"type": "number_of_executions", "execution_count": execution.execution_count})
                say({"type": "end_of_execution"})
            finally:
                lines.put_nowait(None)

        task = asyncio.create_task(run())
        # A request the sandbox refuses (unknown context or language) fails at
        # once: answer it with a status. Anything later is streamed.
        await asyncio.wait((task,), timeout=REFUSAL_WINDOW)
        if task.done() and isinstance(task.exception(), SandboxException):
            exc = task.exception()
            return JSONResponse({"code": _status(exc), "message": str(exc)}, status_code=_status(exc))

        async def stream() -> AsyncIterator[bytes]:
            gone = asyncio.create_task(_disconnected(request))
            try:
                while True:
                    following = asyncio.create_task(lines.get())
                    await asyncio.wait((following, gone), return_when=asyncio.FIRST_COMPLETED)
                    if not following.done():
                        following.cancel()
                        return
                    if (line := following.result()) is None:
                        break
                    yield (json.dumps(line) + "\n").encode()
                if task.exception() is not None:
                    exc = task.exception()
                    yield (json.dumps({"type": "error", "name": type(exc).__name__, "value": str(exc), "traceback": ""}) + "\n").encode()
            finally:
                gone.cancel()
                task.cancel()  # a client that went away interrupts the code; the context keeps its state

        return StreamingResponse(stream(), media_type="application/x-ndjson")

    async def create_context(request: Request) -> Response:
        body = await json_object(request, required=False)
        try:
            context = await sandbox_of(request).create_code_context(cwd=body.get("cwd"), language=body.get("language"))
        except SandboxException as exc:
            raise ApiError(_status(exc), str(exc)) from None
        return JSONResponse(_context_json(context))

    async def list_contexts(request: Request) -> Response:
        return JSONResponse([_context_json(context) for context in await sandbox_of(request).list_code_contexts()])

    async def restart_context(request: Request) -> Response:
        try:
            await sandbox_of(request).restart_code_context(request.path_params["context_id"])
        except SandboxException as exc:
            raise ApiError(_status(exc), str(exc)) from None
        return Response(status_code=204)

    async def remove_context(request: Request) -> Response:
        try:
            await sandbox_of(request).remove_code_context(request.path_params["context_id"])
        except SandboxException as exc:
            raise ApiError(_status(exc), str(exc)) from None
        return Response(status_code=204)

    async def health(request: Request) -> Response:
        return JSONResponse("OK")

    return Starlette(
        routes=[
            Route("/execute", execute, methods=["POST"]),
            Route("/contexts", create_context, methods=["POST"]),
            Route("/contexts", list_contexts, methods=["GET"]),
            Route("/contexts/{context_id}/restart", restart_context, methods=["POST"]),
            Route("/contexts/{context_id}", remove_context, methods=["DELETE"]),
            Route("/health", health),
        ],
    )
