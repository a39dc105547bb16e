"""E2B's code-interpreter server (port 49999): ``/execute`` as NDJSON, and ``/contexts``.

Sandbox errors are answered by the app's handlers, in E2B's shape.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandcell.sandbox.models import Context
from sandcell.server.deps import json_object, optional_string, resolved_sandbox, string_map
from sandcell.server.errors import ERROR_HANDLERS
from sandcell.server.manager import SandboxManager
from sandcell.server.streaming import execution_lines


def _context_json(context: Context) -> dict[str, str]:
    return {"id": context.id, "language": context.language, "cwd": context.cwd}


def interpreter_app(manager: SandboxManager) -> Starlette:
    sandbox_of = resolved_sandbox

    async def execute(request: Request) -> Response:
        sandbox = sandbox_of(request)
        body = await json_object(request)
        # No timeout of our own: the client's ends the request, and with it the run.
        return await execution_lines(
            request, sandbox, body.get("code"), body.get("language"), body.get("context_id"), string_map(body, "env_vars"), None, manager.config.client_patience
        )

    async def create_context(request: Request) -> Response:
        body = await json_object(request, required=False)
        context = await sandbox_of(request).create_code_context(cwd=optional_string(body, "cwd"), language=optional_string(body, "language"))
        return JSONResponse(_context_json(context))

    async def list_contexts(request: Request) -> Response:
        return JSONResponse([_context_json(context) for context in await sandbox_of(request).list_code_contexts()])

    async def restart_context(request: Request) -> Response:
        await sandbox_of(request).restart_code_context(request.path_params["context_id"])
        return Response(status_code=204)

    async def remove_context(request: Request) -> Response:
        await sandbox_of(request).remove_code_context(request.path_params["context_id"])
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
        exception_handlers=ERROR_HANDLERS,
    )
