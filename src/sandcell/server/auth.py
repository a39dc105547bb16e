"""Who is calling: an API key (``X-API-Key`` or ``Authorization: Bearer``) names a team."""

from __future__ import annotations

from starlette.requests import Request

from .errors import ApiError
from .store import Store, Team


def api_key_of(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return credentials.strip() or None if scheme.lower() == "bearer" else None


def authenticate(request: Request, store: Store) -> Team:
    key = api_key_of(request)
    if key is None:
        raise ApiError(401, "missing API key: send it in the X-API-Key header (or Authorization: Bearer)")
    team = store.authenticate(key)
    if team is None:
        raise ApiError(401, "invalid or revoked API key")
    return team
