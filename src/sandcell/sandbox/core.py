"""Lifecycle of one sandbox on the host: start, expire, die, kill.

Shared by ``Sandbox`` and ``AsyncSandbox``; it knows nothing about how
callers wait. Every sandbox is registered so that an interpreter exiting
normally kills them (``atexit``); one killed abruptly is handled by the
launcher's lifeline.
"""

from __future__ import annotations

import atexit
import datetime
import threading
import uuid
import weakref
from sandcell.isolation import Limits, Policy, SandboxProcess, launch

from .connection import Connection
from .models import SandboxException, SandboxInfo, TimeoutException

START_TIMEOUT = 60.0
_live: weakref.WeakSet[SandboxCore] = weakref.WeakSet()


@atexit.register
def _kill_all() -> None:
    for core in list(_live):
        core.kill("the Python process that owned the sandbox exited")


class SandboxCore:
    def __init__(self, timeout: float | None, envs: dict[str, str] | None, limits: Limits | None, metadata: dict[str, str] | None, network: bool = False) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive (seconds) or None")
        for name, value in (envs or {}).items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise ValueError("envs must map str to str")
        self.sandbox_id = uuid.uuid4().hex[:20]
        self.policy = Policy(limits=limits or Limits(), envs=dict(envs or {}), network=network)
        self.metadata = dict(metadata or {})
        self.started_at = datetime.datetime.now(datetime.timezone.utc)
        self.end_at: datetime.datetime | None = None
        self._killed: str | None = None
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        try:
            self.process: SandboxProcess = launch(self.policy, self.sandbox_id)
        except OSError as exc:
            raise SandboxException(f"cannot start a sandbox: {exc}") from exc
        self.connection = Connection(self.process.stdin, self.process.stdout, self.death_reason)  # type: ignore[arg-type]
        _live.add(self)
        self.set_timeout(timeout)

    def wait_started(self) -> None:
        if not self.connection.hello.wait(START_TIMEOUT) or self.connection.closed_reason:
            reason = self.connection.closed_reason or f"no answer within {START_TIMEOUT:g} s"
            self.kill("it failed to start")
            raise SandboxException(f"the sandbox failed to start: {reason}")

    # -- limits and death -----------------------------------------------------
    def oom_reason(self) -> str | None:
        if self.process.oom_kills() > 0:
            return f"the sandbox hit its memory limit of {self.policy.limits.memory_mb} MiB"
        return None

    def death_reason(self, protocol_error: str | None = None) -> str:
        """Why the supervisor's pipe closed; a sandbox that broke the protocol is killed."""
        if protocol_error and not self._killed:
            self.kill(f"it broke the host protocol ({protocol_error})")
        if self._killed:
            return f"the sandbox is not running: {self._killed}"
        oom = self.oom_reason()
        try:
            self.process.process.wait(5)
        except Exception:  # noqa: BLE001 - only for the message
            pass
        if oom or any("oom" in line for line in self.process.diagnostics):
            return (oom or "the sandbox hit its memory limit") + " and was killed"
        tail = "; ".join(self.process.diagnostics[-3:])
        return "the sandbox stopped unexpectedly" + (f": {tail}" if tail else "")

    # -- lifetime -------------------------------------------------------------
    def set_timeout(self, timeout: float | None) -> None:
        """Kill the sandbox ``timeout`` seconds from now (``None``: never)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if timeout is None:
                self.end_at = None
                return
            self.end_at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=timeout)
            self._timer = threading.Timer(timeout, self.kill, args=(f"it reached its timeout of {timeout:g} s",))
            self._timer.daemon = True
            self._timer.start()

    def kill(self, reason: str = "it was killed") -> None:
        with self._lock:
            if self._killed:
                return
            self._killed = reason
            if self._timer is not None:
                self._timer.cancel()
        self.process.kill()
        _live.discard(self)

    @property
    def running(self) -> bool:
        return self._killed is None and self.process.alive and self.connection.closed_reason is None

    @property
    def stop_reason(self) -> str | None:
        """Why the sandbox is not running; ``None`` while it is."""
        if self._killed:
            return self._killed
        if self.connection.closed_reason:
            return self.connection.closed_reason
        return None if self.process.alive else "the sandbox stopped unexpectedly"

    def ensure_running(self) -> None:
        if self._killed:
            raise SandboxException(f"the sandbox is not running: {self._killed}")
        if self.connection.closed_reason:
            raise SandboxException(self.connection.closed_reason)

    def info(self) -> SandboxInfo:
        return SandboxInfo(self.sandbox_id, self.started_at, self.end_at, dict(self.policy.envs), dict(self.metadata), self.policy.limits.to_dict())

    def cancel(self, request_id: int) -> None:
        self.connection.send({"op": "cancel", "id": f"cancel-{request_id}", "target": request_id})

    @property
    def output_limit(self) -> int:
        return self.policy.limits.output_mb * 1024 * 1024

    def memory_bytes(self) -> int | None:
        return self.process.memory_bytes()


def timeout_error(what: str, seconds: float | None) -> TimeoutException:
    return TimeoutException(f"{what}: no answer from the sandbox within {seconds:g} s")
