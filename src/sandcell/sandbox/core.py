"""Lifecycle of one sandbox on the host: start, expire, pause, die, kill.

Shared by ``Sandbox`` and ``AsyncSandbox``; it knows nothing about how
callers wait. Every sandbox is registered so that an interpreter exiting
normally kills them (``atexit``); one killed abruptly is handled by the
launcher's lifeline.
"""

from __future__ import annotations

import atexit
import dataclasses
import datetime
import math
import secrets
import threading
import time
import uuid
import weakref
from typing import TYPE_CHECKING, Any, Literal

from sandcell.isolation import DEFAULT_TEMPLATE, Image, ImageMissing, Limits, Policy, SandboxProcess, attach, launch
from sandcell.isolation.policy import base_env

from . import operations as ops
from .checks import check_seconds
from .connection import Connection, Stream, resync
from .exchange import SyncExchange
from .models import HostUsage, SandboxException, SandboxInfo, SandboxPausedException

if TYPE_CHECKING:
    from .pool import SandboxPool

START_TIMEOUT = 60.0


_live: weakref.WeakSet[SandboxCore] = weakref.WeakSet()


RESYNC_TIMEOUT = 15.0


@atexit.register
def _kill_all() -> None:
    for core in list(_live):
        if core.detachable and core.handed_out:
            core.detach()  # the next server process takes it over
        else:
            core.kill("the Python process that owned the sandbox exited")


class SandboxCore:
    """A started sandbox; its owner's life of it begins with ``hand_out``."""

    def __init__(self, policy: Policy, detachable: bool = False, orphan_grace: float = 600.0) -> None:
        """Start a sandbox; a ``detachable`` one outlives this process by ``orphan_grace`` seconds, waiting for ``attach``."""
        sandbox_id = uuid.uuid4().hex[:20]
        try:
            process = launch(policy, sandbox_id, detachable=detachable, orphan_grace=orphan_grace)
        except (OSError, ImageMissing) as exc:
            raise SandboxException(f"cannot start a sandbox: {exc}") from exc
        connection = Connection(process.stdin, process.stdout, self.death_reason, self.oom_reason, policy.limits.output_mb << 20)
        self._adopt(sandbox_id, policy, process, connection, detachable)

    @classmethod
    def attach(
        cls, sandbox_id: str, limits: Limits, metadata: dict[str, str], started_at: datetime.datetime, network: bool, template: str = DEFAULT_TEMPLATE
    ) -> SandboxCore:
        """Take over a detachable sandbox a previous host process started; its timeout is the caller's to set.

        Whatever the old host had asked for is cancelled; request ids start at
        a random point, so late answers to the old host cannot be mistaken
        for answers to the new one.
        """
        try:
            process = attach(sandbox_id)
        except OSError as exc:
            raise SandboxException(f"cannot attach to sandbox {sandbox_id}: {exc}") from exc
        frozen = process.cgroup is not None and process.cgroup.frozen()
        core = cls.__new__(cls)
        try:
            if frozen:
                process.freeze(False)  # it must answer the resync
            events = resync(process.stdin, process.stdout, RESYNC_TIMEOUT)
        except (OSError, EOFError, TimeoutError) as exc:
            process.kill()
            raise SandboxException(f"cannot attach to sandbox {sandbox_id}: {exc}") from exc
        connection = Connection(
            process.stdin, events, core.death_reason, core.oom_reason, limits.output_mb << 20, first_id=secrets.randbelow(1 << 48) + (1 << 40)
        )
        connection.hello.set()
        core._adopt(sandbox_id, Policy(limits=limits, network=network, template=template), process, connection, detachable=True)
        core.metadata, core.started_at, core.handed_out = dict(metadata), started_at, True
        if frozen:
            core.pause()
        return core

    def _adopt(self, sandbox_id: str, policy: Policy, process: SandboxProcess, connection: Connection, detachable: bool) -> None:
        self.sandbox_id = sandbox_id
        self.policy = policy
        self.metadata: dict[str, str] = {}
        self.started_at = datetime.datetime.now(datetime.UTC)
        self.end_at: datetime.datetime | None = None
        self.detachable = detachable
        self.handed_out = False
        self._killed: str | None = None
        self._paused_left: float | None = None  # while paused: the seconds its timeout had left (inf: none)
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._cpu_mark = (time.monotonic(), 0.0)  # (when, cpu seconds) of the previous metrics sample
        self.process = process
        self.connection = connection
        self.pool: SandboxPool | Literal[False] | None = None  # where ``fork`` takes its new sandbox from (None: the default pool)
        _live.add(self)

    def detach(self) -> None:
        """Let this process go without killing the sandbox (detachable only): the next server attaches to it."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        self.process.detach()
        _live.discard(self)

    def hand_out(self, timeout: float | None, metadata: dict[str, str] | None) -> None:
        """Give the sandbox to its user: ``started_at`` and the timeout clock start now.

        A pooled sandbox was started long before; its user must see the
        lifetime they asked for from the moment they got it.
        """
        self.metadata = dict(metadata or {})
        self.started_at = datetime.datetime.now(datetime.UTC)
        self.set_timeout(timeout)
        self.handed_out = True
        if self.detachable:
            self.process.arm()

    def add_envs(self, envs: dict[str, str]) -> None:
        """Give a started sandbox (a pooled one) the envs it would have been created with."""
        sent = dict(envs)
        if "PYTHONPATH" in envs:  # the template's packages stay on it, after the caller's, as at a cold start
            sent["PYTHONPATH"] = base_env(Image(), envs, self.policy.template)["PYTHONPATH"]
        SyncExchange(self, ops.set_env(sent)).run()
        self.policy = dataclasses.replace(self.policy, envs={**self.policy.envs, **envs})

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
            self.process.wait(5)
        except OSError:  # only for the message
            pass
        if oom or any("oom" in line for line in self.process.diagnostics):
            return (oom or "the sandbox hit its memory limit") + " and was killed"
        tail = "; ".join(self.process.diagnostics[-3:])
        return "the sandbox stopped unexpectedly" + (f": {tail}" if tail else "")

    # -- lifetime -------------------------------------------------------------
    def set_timeout(self, timeout: float | None) -> None:
        """Kill the sandbox ``timeout`` seconds from now (``None``: never); paused time does not count."""
        timeout = check_seconds(timeout)
        with self._lock:
            self._set_timeout(timeout)

    def _set_timeout(self, timeout: float | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if timeout is None:
            self.end_at = None
            self._paused_left = math.inf if self._paused_left is not None else None
            return
        self.end_at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=timeout)
        if self._paused_left is not None:
            self._paused_left = timeout  # the clock starts on resume
            return
        self._timer = threading.Timer(timeout, self.kill, args=(f"it reached its timeout of {timeout:g} s",))
        self._timer.daemon = True
        self._timer.start()

    def pause(self) -> None:
        """Freeze every process of the sandbox and stop its timeout clock.

        Requests sent while paused fail at once with ``SandboxPausedException``
        rather than resuming implicitly: a pause is the owner's decision (to
        save CPU, or to hold a sandbox still), and a stray request silently
        undoing it would be a surprise. Requests already in flight stall until
        ``resume``; their waits (bounds on silence) keep counting meanwhile.
        """
        with self._lock:
            if self._paused_left is not None:
                return
            self.ensure_running()
            if not self.process.freeze(True):
                self.process.freeze(False)
                raise SandboxException("this host cannot pause sandboxes: no cgroup freezer (pausing needs a root host)")
            left = math.inf if self.end_at is None else (self.end_at - datetime.datetime.now(datetime.UTC)).total_seconds()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._paused_left = max(left, 0.0)

    def resume(self) -> None:
        """Thaw the sandbox; its timeout clock goes on from where it stopped."""
        with self._lock:
            if self._killed or self._paused_left is None:
                return
            if not self.process.freeze(False):
                raise SandboxException("the sandbox could not be resumed")
            left, self._paused_left = self._paused_left, None
            self._set_timeout(None if left == math.inf else left)

    @property
    def paused(self) -> bool:
        return self._paused_left is not None

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
        if self._paused_left is not None:
            raise SandboxPausedException("the sandbox is paused; resume() it first")

    def info(self) -> SandboxInfo:
        end_at = self.end_at
        if self._paused_left is not None:
            end_at = None if self._paused_left == math.inf else datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=self._paused_left)
        state = "paused" if self._paused_left is not None else "running"
        return SandboxInfo(
            self.sandbox_id, self.started_at, end_at, dict(self.policy.envs), dict(self.metadata), self.policy.limits.to_dict(), state, self.policy.template
        )

    def usage(self) -> HostUsage:
        """What the host's cgroups say: CPU share since the previous call, memory."""
        cpus = self.policy.limits.cpus
        now, cpu = time.monotonic(), self.process.cpu_seconds()
        with self._lock:
            (then, cpu_then), self._cpu_mark = self._cpu_mark, (now, cpu if cpu is not None else self._cpu_mark[1])
        percent = 0.0 if cpu is None or now <= then else min(max(100.0 * (cpu - cpu_then) / ((now - then) * cpus), 0.0), 100.0)
        memory = self.policy.limits.memory_mb * 1024 * 1024
        return HostUsage(max(1, math.ceil(cpus)), round(percent, 2), self.process.memory_bytes() or 0, memory, self.process.memory_cache_bytes() or 0)

    # -- requests (see ``SandboxBackend``) ----------------------------------------
    blocks = False

    def open(self, header: dict[str, Any], payload: bytes, stream: Stream) -> int:
        return self.connection.open(header, payload, stream)

    def forget(self, request_id: int) -> None:
        self.connection.forget(request_id)

    def cancel(self, request_id: int) -> None:
        self.connection.send({"op": "cancel", "id": f"cancel-{request_id}", "target": request_id})

    def memory_bytes(self) -> int | None:
        return self.process.memory_bytes()
