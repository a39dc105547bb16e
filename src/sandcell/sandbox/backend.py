"""What ``Sandbox`` and ``AsyncSandbox`` need of the thing that runs a sandbox.

Two backends implement it: ``SandboxCore`` (a sandbox on this machine, over
the pipe to its supervisor) and ``RemoteCore`` (one on a ``sandcell serve``
server, over HTTP); the tests add a fake supervisor. Requests travel as
protocol frames: ``open`` sends one and puts its answers into a stream,
``cancel`` asks the supervisor to end it, ``forget`` stops listening.
"""

from __future__ import annotations

import datetime
from typing import Any, Protocol

from sandcell.isolation import Policy

from .connection import Stream
from .models import HostUsage, SandboxInfo


class SandboxBackend(Protocol):
    sandbox_id: str
    policy: Policy
    metadata: dict[str, str]
    started_at: datetime.datetime
    # Whether its lifecycle calls (``running``, ``kill``, ``info``, ``usage``...) wait on
    # the network: ``AsyncSandbox`` then makes them on a thread, never on the event loop.
    # ``open``, ``cancel``, ``forget``, ``ensure_running``, ``paused`` and
    # ``stop_reason`` never block on any backend.
    blocks: bool

    # -- requests ---------------------------------------------------------------
    def open(self, header: dict[str, Any], payload: bytes, stream: Stream) -> int:
        """Send a request; its frames go to ``stream`` until its terminal one. Its id."""
        ...

    def cancel(self, request_id: int) -> None: ...

    def forget(self, request_id: int) -> None: ...

    def ensure_running(self) -> None:
        """Raise if a request cannot be sent now (killed, died, paused)."""
        ...

    # -- lifecycle --------------------------------------------------------------
    def wait_started(self) -> None: ...

    @property
    def running(self) -> bool: ...

    @property
    def paused(self) -> bool: ...

    @property
    def stop_reason(self) -> str | None:
        """Why it is not running, as far as known without asking; ``None`` while it runs."""
        ...

    def kill(self, reason: str = "it was killed") -> None:
        """Kill every process of the sandbox (its cgroup, locally) with this reason."""
        ...

    def set_timeout(self, timeout: float | None) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def info(self) -> SandboxInfo: ...

    def usage(self) -> HostUsage: ...

    def memory_bytes(self) -> int | None: ...
