"""FastAPI dependencies and request helpers shared by the native and E2B routes."""

from __future__ import annotations

import contextlib
import contextvars
import json
import zlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.types import Message

from sandcell.sandbox import AsyncSandbox
from sandcell.sandbox.models import SandboxException, WriteInfo
from sandcell.sandbox.operations import WRITE_CHUNK

from .auth import authenticate
from .errors import ApiError
from .manager import SandboxManager
from .store import Team

if TYPE_CHECKING:
    from .manager import LiveSandbox

# The data-plane dispatcher resolves a request's sandbox once, after checking
# its token, and hands it down in the scope (Starlette routes) and in this
# context variable (the Connect services, whose handlers see no scope).
SCOPE_SANDBOX = "sandcell.sandbox"
current_sandbox: contextvars.ContextVar[LiveSandbox] = contextvars.ContextVar("sandcell_data_plane_sandbox")


def resolved_live(request: Request) -> LiveSandbox:
    """The sandbox the dispatcher resolved and authorised for this data-plane request."""
    live: LiveSandbox = request.scope[SCOPE_SANDBOX]
    return live


def resolved_sandbox(request: Request) -> AsyncSandbox:
    return resolved_live(request).sandbox


def manager_of(request: Request) -> SandboxManager:
    manager: SandboxManager = request.app.state.manager
    return manager


def current_team(request: Request) -> Team:
    return authenticate(request, manager_of(request).store)


MAX_JSON_BODY = 64 * 1024 * 1024  # a code cell may be long; a JSON body is not a file upload
INFLATE_STEP = 1024 * 1024


def bounded_stream(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The body as it arrives, refused with a 413 once it passes ``limit``: at once if its Content-Length says so."""
    if int(request.headers.get("content-length") or 0) > limit:
        raise ApiError(413, f"the body is larger than the server's limit of {limit} bytes")
    return _within(request, limit)


async def _within(request: Request, limit: int) -> AsyncIterator[bytes]:
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the body is larger than the server's limit of {limit} bytes")
        yield chunk


async def bounded_body(request: Request, limit: int) -> bytes:
    """The whole body, within ``limit`` (see ``bounded_stream``)."""
    return b"".join([chunk async for chunk in bounded_stream(request, limit)])


async def write_upload(sandbox: AsyncSandbox, path: str, chunks: AsyncIterator[bytes]) -> WriteInfo:
    """Stream an upload into ``path`` as it arrives; a body that breaks off (past the limit, bad
    gzip) after a first piece was written leaves no half file (before, the file is untouched)."""
    taken = 0

    async def counted() -> AsyncIterator[bytes]:
        nonlocal taken
        async for chunk in chunks:
            taken += len(chunk)
            yield chunk

    try:
        return await sandbox.files.write(path, counted())
    except ApiError:
        if taken >= WRITE_CHUNK:  # a piece went to the sandbox before the next chunk was asked for
            with contextlib.suppress(SandboxException):
                await sandbox.files.remove(path)
        raise


def bounded_request(request: Request, limit: int) -> Request:
    """``request`` whose body is refused with a 413 once it passes ``limit``, for parsers that read it themselves (multipart)."""
    size = 0

    async def receive() -> Message:
        nonlocal size
        message = await request.receive()
        size += len(message.get("body", b""))
        if size > limit:
            raise ApiError(413, f"the body is larger than the server's limit of {limit} bytes")
        return message

    return Request(request.scope, receive)


async def gunzipped(chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """A gzip body inflated as it arrives, a MiB at a time: a bomb stops at ``limit`` (413), a truncated one is a 400."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    size = 0
    async for chunk in chunks:
        pending = chunk
        while pending and not inflater.eof:
            try:
                data = inflater.decompress(pending, INFLATE_STEP)
            except zlib.error as exc:
                raise ApiError(400, f"the body is not valid gzip: {exc}") from None
            pending = inflater.unconsumed_tail
            size += len(data)
            if size > limit:
                raise ApiError(413, f"the gzip body inflates to more than the server's limit of {limit} bytes")
            yield data
    if not inflater.eof:
        raise ApiError(400, "the gzip body is truncated")


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


def optional_string(body: dict[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is not None and not isinstance(value, str):
        raise ApiError(400, f"{field} must be a string")
    return value


def optional_number(body: dict[str, Any], field: str) -> float | None:
    value = body.get(field)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ApiError(400, f"{field} must be a number")
    return value
