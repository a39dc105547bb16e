"""FastAPI dependencies and request helpers shared by the native and E2B routes."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from .auth import authenticate
from .errors import ApiError
from .manager import SandboxManager
from .store import Team


def manager_of(request: Request) -> SandboxManager:
    return request.app.state.manager


def current_team(request: Request) -> Team:
    return authenticate(request, manager_of(request).store)


async def json_object(request: Request, required: bool = True) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says what is wrong with it."""
    raw = await request.body()
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
