"""What the API accepts, checked where a request enters (in-process or through the server).

A bad value must be refused with its reason before it reaches a sandbox,
where it would only surface as a sandbox that fails to start or a run that
dies. Every check raises ``InvalidArgumentException`` (a 400 on the server).
"""

from __future__ import annotations

import math
from typing import Any

from sandcell.protocol import ENV_NAME

from .models import InvalidArgumentException

MAX_ENV_BYTES = 128 * 1024  # the kernel's limit on one NAME=value string (MAX_ARG_STRLEN)
MAX_ENVS_BYTES = 1024 * 1024  # leaves room in every exec's 2 MiB (ARG_MAX) for the sandbox's own
MAX_WAIT = 7 * 24 * 3600.0  # the longest run or command timeout: longer than any sandbox lives
MAX_PATH_BYTES, MAX_NAME_BYTES = 4096, 255  # Linux's PATH_MAX and NAME_MAX


def check_envs(envs: Any, what: str = "envs") -> dict[str, str]:
    """Environment variables a process can be started with: names of ``ENV_NAME``, values without NUL."""
    if envs is None:
        return {}
    if not isinstance(envs, dict):
        raise InvalidArgumentException(f"{what} must map names to strings")
    total = 0
    for name, value in envs.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidArgumentException(f"{what} must map str to str")
        if not ENV_NAME.match(name):
            raise InvalidArgumentException(f"{what}: {name!r} is not a valid variable name (letters, digits and '_', not starting with a digit)")
        if "\0" in value:
            raise InvalidArgumentException(f"{what}: the value of {name} contains a NUL character")
        size = len(name.encode()) + len(value.encode()) + 2
        if size > MAX_ENV_BYTES:
            raise InvalidArgumentException(f"{what}: {name} is larger than {MAX_ENV_BYTES} bytes")
        total += size
    if total > MAX_ENVS_BYTES:
        raise InvalidArgumentException(f"{what} are larger than {MAX_ENVS_BYTES} bytes in all")
    return envs


def check_seconds(value: Any, what: str = "timeout", *, minimum: float = 0.0, maximum: float = MAX_WAIT, zero_is_none: bool = False) -> float | None:
    """A duration in seconds, or ``None`` for none (also ``0`` where ``zero_is_none``)."""
    if value is None or (zero_is_none and value == 0 and not isinstance(value, bool)):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidArgumentException(f"{what} must be a number of seconds, not {value!r}")
    if value <= 0 or value < minimum or value > maximum:
        low = f"at least {minimum:g}" if minimum > 0 else "more than 0"
        raise InvalidArgumentException(f"{what} must be {low} and at most {maximum:g} seconds, not {value:g}" + (" (0 or None: none)" if zero_is_none else ""))
    return float(value)


def check_path(path: Any, what: str = "path") -> str:
    """A path in the sandbox: a non-empty string without NUL (relative ones start at /home/user)."""
    if not isinstance(path, str) or not path:
        raise InvalidArgumentException(f"{what} must be a non-empty string")
    if "\0" in path:
        raise InvalidArgumentException(f"{what} contains a NUL character")
    if len(path.encode(errors="surrogatepass")) > MAX_PATH_BYTES or any(len(part.encode(errors="surrogatepass")) > MAX_NAME_BYTES for part in path.split("/")):
        raise InvalidArgumentException(f"{what} is too long (at most {MAX_PATH_BYTES} bytes, {MAX_NAME_BYTES} per name)")
    return path


def check_create(timeout: float | None, envs: dict[str, str] | None) -> None:
    """What every create checks, in-process and on the server (which also bounds the timeout)."""
    check_seconds(timeout)
    check_envs(envs)
