"""The one table of sandcell's error kinds: the name the supervisor sends, the
exception the client raises, the HTTP status and the Connect code the server
answers with. Every translation (supervisor -> exception, exception -> HTTP or
Connect, HTTP -> exception on the client) reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .models import (
    InvalidArgumentException,
    NotEnoughSpaceException,
    NotFoundException,
    SandboxDiedException,
    SandboxException,
    SandboxPausedException,
    TimeoutException,
)


@dataclass(frozen=True)
class ErrorKind:
    name: str  # as the supervisor's ``fail`` frames name it
    exception: type[SandboxException]
    status: int  # HTTP
    connect_code: str  # a ``connectrpc.code.Code`` member name


# The first row of an exception class is the one its HTTP status and Connect code come from.
KINDS = (
    ErrorKind("NotFound", NotFoundException, 404, "NOT_FOUND"),
    ErrorKind("InvalidArgument", InvalidArgumentException, 400, "INVALID_ARGUMENT"),
    ErrorKind("AlreadyExists", InvalidArgumentException, 400, "INVALID_ARGUMENT"),
    ErrorKind("PermissionDenied", InvalidArgumentException, 400, "INVALID_ARGUMENT"),
    ErrorKind("DiskFull", NotEnoughSpaceException, 507, "RESOURCE_EXHAUSTED"),
    ErrorKind("SandboxPaused", SandboxPausedException, 409, "UNAVAILABLE"),
    ErrorKind("Timeout", TimeoutException, 502, "DEADLINE_EXCEEDED"),
    ErrorKind("SandboxDied", SandboxDiedException, 502, "UNAVAILABLE"),
)
OTHER = ErrorKind("Error", SandboxException, 502, "UNAVAILABLE")
_BY_NAME = {kind.name: kind for kind in KINDS}


def exception_for(error: dict[str, Any]) -> SandboxException:
    """The exception for a ``fail`` frame's ``error`` (``{"name", "message"}``)."""
    name = error.get("name", "Error")
    return _BY_NAME.get(name, OTHER).exception(error.get("message") or name)


def kind_of(exc: BaseException) -> ErrorKind:
    """The row an exception answers with (the most specific class that matches)."""
    matching = [kind for kind in KINDS if isinstance(exc, kind.exception)]
    return max(matching, key=lambda kind: len(kind.exception.__mro__), default=OTHER)


def status_for(exc: BaseException) -> int:
    """The HTTP status of a sandbox error: the caller's mistake, or the sandbox's state."""
    return kind_of(exc).status


def name_for_status(status: int) -> str:
    """What a server's HTTP error status means to the client, as an error name."""
    if status == 413:  # the frame was past the server's bound
        return "InvalidArgument"
    if status == 404 or status >= 500:  # the sandbox is gone, or the server cannot reach it
        return "SandboxDied"
    return next((kind.name for kind in KINDS if kind.status == status), "SandboxDied")


def exception_for_status(status: int, message: str) -> SandboxException:
    return exception_for({"name": name_for_status(status), "message": message})
