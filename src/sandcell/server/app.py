"""The ASGI application of ``sandcell serve``: one port for every API.

E2B's SDKs send control-plane calls to ``E2B_API_URL`` and data-plane calls
to ``E2B_SANDBOX_URL``; pointed at one server, the two are told apart by the
``E2b-Sandbox-Id`` header the SDK puts on every data-plane request, and
``E2b-Sandbox-Port`` picks envd (49983) or the code interpreter (49999).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import native
from .deps import SCOPE_SANDBOX, current_sandbox
from .e2b import control
from .e2b.envd import envd_app
from .e2b.interpreter import interpreter_app
from .errors import ERROR_HANDLERS, ApiError, CatchAll, http_error_handler, validation_error_handler
from .manager import LiveSandbox, SandboxManager, ServerConfig
from .observability import Metrics, Observed
from .store import Store

ENVD_PORT = b"49983"
INTERPRETER_PORT = b"49999"
CONNECT_CODES = {400: "invalid_argument", 401: "unauthenticated", 404: "not_found", 409: "failed_precondition", 502: "unavailable"}


def control_app(manager: SandboxManager) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await manager.start()
        try:
            yield
        finally:
            await manager.close()

    app = FastAPI(
        title="sandcell",
        version="0.1.0",
        description="Sandboxes for LLM-written code. `/v1` is sandcell's own API; the other routes are E2B's control plane.",
        lifespan=lifespan,
        exception_handlers={**ERROR_HANDLERS, RequestValidationError: validation_error_handler, StarletteHTTPException: http_error_handler},
    )
    app.state.manager = manager
    app.include_router(native.router)
    app.include_router(control.router)
    return app


# Headers that pick the sandbox and prove the right to it: each must appear at most
# once, or a proxy and the server (or two parts of the server) may read different ones.
SINGLE_HEADERS = (b"e2b-sandbox-id", b"e2b-sandbox-port", b"x-access-token")


def repeated_header(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    names = [name.lower() for name, _ in headers]
    return next((name for name in SINGLE_HEADERS if names.count(name) > 1), None)


class DataPlane:
    """Routes a request carrying ``E2b-Sandbox-Id`` to the sandbox's envd or interpreter, once its token checks out.

    The sandbox is resolved here, once, and handed to the apps in the scope
    (``deps.SCOPE_SANDBOX``): no route reads the id from the headers again.
    Unknown, ended and unauthorised ids get the same answer, so the data
    plane tells no one without the token that an id ever existed.
    """

    def __init__(self, manager: SandboxManager) -> None:
        self.manager = manager
        self.envd = envd_app(manager)
        self.interpreter = interpreter_app(manager)

    def _authorize(self, headers: dict[bytes, bytes], port: bytes, path: str) -> LiveSandbox:
        sandbox_id = headers[b"e2b-sandbox-id"].decode(errors="replace")
        not_found = ApiError(502, f"the sandbox {sandbox_id} was not found, or the access token does not match it")
        live = self.manager.data_plane(sandbox_id)
        if live is None:
            raise not_found
        token = headers.get(b"x-access-token")
        if token is not None:
            if not live.token_matches(token.decode(errors="replace")):
                raise not_found
        # The official SDK sends no token when it manages code contexts; the
        # sandbox id (80 random bits) is the capability there, as with E2B.
        elif not (port == INTERPRETER_PORT and (path.startswith("/contexts") or path == "/health")):
            raise not_found
        if live.paused:
            raise ApiError(502, f"sandbox {live.id} is paused; resume it with Sandbox.connect()")
        return live

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"])
        port = headers.get(b"e2b-sandbox-port", ENVD_PORT)
        path = scope.get("path", "")
        try:
            repeated = repeated_header(scope["headers"])
            if repeated is not None:
                raise ApiError(400, f"the header {repeated.decode()} appears more than once; send it once")
            if port not in (ENVD_PORT, INTERPRETER_PORT):
                raise ApiError(
                    502, f"port {port.decode(errors='replace')} is not open in the sandbox: sandcell serves envd (49983) and the code interpreter (49999)"
                )
            live = self._authorize(headers, port, path)
        except ApiError as exc:
            connect_rpc = path.startswith(("/process.", "/filesystem."))
            code: Any = CONNECT_CODES.get(exc.status, "unknown") if connect_rpc else exc.status
            body = json.dumps({"code": code, "message": exc.message}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": exc.status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        scope[SCOPE_SANDBOX] = live
        token = current_sandbox.set(live)
        try:
            await (self.envd if port == ENVD_PORT else self.interpreter)(scope, receive, send)
        finally:
            current_sandbox.reset(token)


class BodyTooLarge(ApiError):
    """Raised from ``receive``: every app's ApiError handler answers it with a 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than the server's limit of {limit} bytes")


class BodyLimit:
    """No request body past ``limit`` bytes reaches any route, with or without a Content-Length."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.limit:
            await BodyTooLarge(self.limit).response()(scope, receive, send)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise BodyTooLarge(self.limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge as exc:
            if not started:
                await exc.response()(scope, receive, send)


class SandcellServer:
    def __init__(self, manager: SandboxManager) -> None:
        self.manager = manager
        self.control = control_app(manager)
        self.data_plane = DataPlane(manager)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and any(name.lower() == b"e2b-sandbox-id" for name, _ in scope["headers"]):
            await self.data_plane(scope, receive, send)
            return
        await self.control(scope, receive, send)


def create_app(db: Path | str, config: ServerConfig | None = None) -> ASGIApp:
    manager = SandboxManager(Store(db), config)
    # Room above the largest upload for a frame's header or a multipart envelope.
    limit = manager.config.max_upload_bytes + 1024 * 1024
    return Observed(CatchAll(BodyLimit(SandcellServer(manager), limit)), Metrics(manager))
