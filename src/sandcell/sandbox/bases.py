"""What the blocking API (``sync``) and the awaited one (``async_``) share: all but the waiting."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from . import operations as ops
from .backend import SandboxBackend
from .exchange import Exchange
from .models import CommandResult

SandboxT = TypeVar("SandboxT")
ExchangeT = TypeVar("ExchangeT", bound=Exchange[CommandResult])


class SandboxBase:
    """A sandbox as its user holds it: a face on its backend."""

    def __init__(self, backend: SandboxBackend) -> None:
        self._backend = backend

    @property
    def sandbox_id(self) -> str:
        return self._backend.sandbox_id

    @property
    def backend(self) -> SandboxBackend:
        """What runs the sandbox: a ``SandboxCore`` on this machine (its host process and cgroup are
        ``backend.process``), a ``RemoteCore`` on a server."""
        return self._backend

    @property
    def stop_reason(self) -> str | None:
        """Why the sandbox is not running (timeout, kill, crash); ``None`` while it is."""
        return self._backend.stop_reason


class CommandHandleBase(Generic[SandboxT, ExchangeT]):
    """A command running in the background: started here, or followed with ``commands.connect``."""

    def __init__(self, sandbox: SandboxT, operation: ops.CommandStream, exchange: ExchangeT) -> None:
        self._sandbox = sandbox
        self._operation = operation
        self._exchange = exchange

    @property
    def pid(self) -> int:
        assert self._operation.pid is not None
        return self._operation.pid

    @property
    def stdout(self) -> str:
        return "".join(self._operation.stdout)

    @property
    def stderr(self) -> str:
        return "".join(self._operation.stderr)

    def _follow(self, on_stdout: Callable[[str], Any] | None, on_stderr: Callable[[str], Any] | None) -> bool:
        """``False`` if the command already ended (its outcome is ready); else its output from now on goes to the callbacks."""
        if self._exchange.terminal is not None:
            return False
        self._operation.callbacks.update({"on_stdout": on_stdout, "on_stderr": on_stderr})
        return True
