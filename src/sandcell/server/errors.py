"""One error shape for every API: ``{"code": <status>, "message": "..."}``.

It is the shape E2B's control plane answers with, so the official SDKs turn
our errors into their own exceptions with our message in them.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse


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
