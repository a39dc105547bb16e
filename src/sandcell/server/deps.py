"""FastAPI dependencies and request helpers shared by the native and E2B routes."""

from __future__ import annotations

import contextvars
import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from .auth import authenticate
from .errors import ApiError
from .manager import SandboxManager
from .store import Team

if TYPE_CHECKING:
    from sandcell.sandbox import AsyncSandbox

    from .manager import LiveSandbox

# The data-plane dispatcher resolves a request's sandbox once, after checking
# its token, and hands it down in the scope (Starlette routes) and in this
# context variable (the Connect services, whose handlers see no scope).
SCOPE_SANDBOX = "sandcell.sandbox"
current_sandbox: contextvars.ContextVar[LiveSandbox] = contextvars.ContextVar("sandcell_data_plane_sandbox")


def resolved_sandbox(request: Request) -> AsyncSandbox:
    """The sandbox the dispatcher resolved and authorised for this data-plane request."""
    return request.scope[SCOPE_SANDBOX].sandbox


def manager_of(request: Request) -> SandboxManager:
    return request.app.state.manager


def current_team(request: Request) -> Team:
    return authenticate(request, manager_of(request).store)


MAX_JSON_BODY = 64 * 1024 * 1024  # a code cell may be long; a JSON body is not a file upload


async def bounded_body(request: Request, limit: int) -> bytes:
    """The body, refused with a 413 once it passes ``limit`` (with or without a Content-Length)."""
    if int(request.headers.get("content-length") or 0) > limit:
        raise ApiError(413, f"the body is larger than the server's limit of {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"the body is larger than the server's limit of {limit} bytes")
    return bytes(body)


async def json_object(request: Request, required: bool = True) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says what is wrong with it."""
    raw = await bounded_body(request, MAX_JSON_BODY)
    if not raw.strip():
        if required:
            raise ApiError(400, "the request needs a JSON body")
        return {}
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"malformed JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the JSON body must be an object")
    return body


def string_map(body: dict[str, Any], field: str) -> dict[str, str]:
    value = body.get(field) or {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ApiError(400, f"{field} must be an object of strings")
    return value


def optional_number(body: dict[str, Any], field: str) -> float | None:
    value = body.get(field)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ApiError(400, f"{field} must be a number")
    return value
