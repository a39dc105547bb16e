"""One error shape for every API: ``{"code": <status>, "message": "..."}``.

It is the shape E2B's control plane answers with, so the official SDKs turn
our errors into their own exceptions with our message in them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandcell.sandbox.errors import status_for
from sandcell.sandbox.models import SandboxException

log = logging.getLogger("sandcell.server")


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> JSONResponse:
        return JSONResponse({"code": self.status, "message": self.message}, status_code=self.status)


async def api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return exc.response()


async def sandbox_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """A sandbox error no route turned into an ApiError (a sandbox that fails to start, say)."""
    return ApiError(status_for(exc), str(exc)).response()


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own errors (unknown route, wrong method) in the one error shape."""
    assert isinstance(exc, StarletteHTTPException)
    return ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}").response()


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own 422 for a body that does not fit the schema, in the one error shape."""
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors())
    return ApiError(400, f"invalid request: {problems}").response()


def internal_error(scope: Scope, exc: BaseException) -> ApiError:
    """A bug of the server, logged with its traceback under an id the answer names (its details stay in the log)."""
    incident = uuid.uuid4().hex[:12]
    scope["sandcell.error_logged"] = True
    log.error("unexpected error answering %s %s (incident %s)", scope.get("method"), scope.get("path"), incident, exc_info=exc)
    return ApiError(500, f"internal server error (incident {incident} in the server's log)")


async def unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """What Starlette's last-resort handler answers with in place of its text/plain 500 (it re-raises after)."""
    return internal_error(request.scope, exc).response()


class CatchAll:
    """Around the whole server: an exception no app answered is logged and answered as a JSON 500, never a bare one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except Exception as exc:  # the point of this middleware
            if started:  # an app's handler already answered (and logged), or a stream broke off: nothing more can be sent
                if not scope.get("sandcell.error_logged"):
                    log.exception("unexpected error after the answer to %s %s began", scope.get("method"), scope.get("path"))
                return
            await internal_error(scope, exc).response()(scope, receive, send)


# What every app of the server answers errors with (the control app adds FastAPI's own).
ExceptionHandler = Callable[[Request, Any], Coroutine[Any, Any, Response]]
ERROR_HANDLERS: dict[int | type[Exception], ExceptionHandler] = {
    ApiError: api_error_handler,
    SandboxException: sandbox_error_handler,
    Exception: unexpected_error_handler,
}
