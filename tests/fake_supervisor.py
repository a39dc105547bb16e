"""A fake supervisor speaking ``sandcell.protocol`` over a pipe, and a backend over it.

``Sandbox(FakeBackend(script))`` runs the real ``Sandbox``/``AsyncSandbox``,
exchange and ``Connection`` code against scripted answers, in milliseconds
and without root. A script maps an op to a function of the request header
and payload yielding the frames to answer with (``HANG`` among them: answer
nothing more, cancel or not; ``UNTIL_CANCEL``: nothing more until a cancel,
then ``Cancelled``).
"""

from __future__ import annotations

import datetime
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

from sandcell import protocol
from sandcell.isolation import Limits, Policy
from sandcell.sandbox.connection import Connection, Stream
from sandcell.sandbox.models import HostUsage, SandboxException, SandboxInfo

Frames = Iterator[Any]  # (header, payload), a header alone, or HANG
Script = dict[str, Callable[[dict[str, Any], bytes], Frames]]
HANG = object()
UNTIL_CANCEL = object()


def done(**fields: Any) -> dict[str, Any]:
    return {"type": protocol.DONE, **fields}


def fail(name: str, message: str = "") -> dict[str, Any]:
    return {"type": protocol.FAIL, "error": {"name": name, "message": message or name}}


def _run_code(header: dict[str, Any], payload: bytes) -> Frames:
    yield {"type": "result", "data": {"text/plain": repr(eval(header["code"]))}, "main": True}  # the tests' own code
    yield done(execution_count=1)


def _command(header: dict[str, Any], payload: bytes) -> Frames:
    yield {"type": "started", "pid": 7}
    yield {"type": "stdout"}, header["cmd"].encode()
    yield done(exit_code=0)


DEFAULT_SCRIPT: Script = {
    "run_code": _run_code,
    "command.run": _command,
    "files.usage": lambda header, payload: iter([done(used=1, total=2)]),
    "set_env": lambda header, payload: iter([done()]),
}


class FakeSupervisor:
    """The sandbox's end of the pipes: one thread reading requests, answering each as scripted."""

    def __init__(self, script: Script) -> None:
        self.script = {**DEFAULT_SCRIPT, **script}
        self.received: list[dict[str, Any]] = []  # every request header, cancels included
        self.cancelled: list[int] = []
        self._awaiting_cancel: set[int] = set()
        requests_read, requests_write = os.pipe()
        events_read, events_write = os.pipe()
        self._requests, self.host_requests = os.fdopen(requests_read, "rb"), os.fdopen(requests_write, "wb")
        self.host_events, self._events = os.fdopen(events_read, "rb"), os.fdopen(events_write, "wb")
        self._write_lock = threading.Lock()
        self._send({"type": "hello"})
        threading.Thread(target=self._serve, daemon=True).start()

    def _send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        with self._write_lock:
            self._events.write(protocol.encode(header, payload))
            self._events.flush()

    def _serve(self) -> None:
        try:
            while (frame := protocol.read_frame(self._requests)) is not None:
                header, payload = frame
                self.received.append(header)
                if header["op"] == "cancel":
                    self.cancelled.append(header["target"])
                    if header["target"] in self._awaiting_cancel:
                        self._send({**fail("Cancelled"), "id": header["target"]})
                    continue
                handler = self.script.get(header["op"], lambda h, p: iter([fail("InvalidArgument", f"unknown op {h['op']}")]))
                threading.Thread(target=self._answer, args=(header, handler(header, payload)), daemon=True).start()
        except (OSError, ValueError):
            pass

    def _answer(self, header: dict[str, Any], frames: Frames) -> None:
        try:
            for frame in frames:
                if frame is HANG:
                    return
                if frame is UNTIL_CANCEL:
                    self._awaiting_cancel.add(header["id"])
                    return
                answer, payload = frame if isinstance(frame, tuple) else (frame, b"")
                self._send({**answer, "id": header["id"]}, payload)
        except (OSError, ValueError):
            pass  # killed meanwhile

    def stop(self) -> None:
        """Both pipes reach their end: the host sees EOF, and so does the serving thread."""
        for pipe in (self._events, self.host_requests):
            try:
                pipe.close()
            except OSError:
                pass


class FakeBackend:
    """A ``SandboxBackend`` whose sandbox is a ``FakeSupervisor``; it records what it was asked."""

    blocks = False

    def __init__(self, script: Script | None = None, kill_grace: float = 0.05) -> None:
        self.supervisor = FakeSupervisor(script or {})
        self.sandbox_id = "fake"
        self.policy = Policy(limits=Limits(), kill_grace=kill_grace)
        self.metadata: dict[str, str] = {}
        self.started_at = datetime.datetime.now(datetime.UTC)
        self.killed: str | None = None
        self.forgotten: list[int] = []
        self.oom: str | None = None  # what ``oom_reason`` says
        self.oom_asked_on: list[str] = []  # the threads it was asked on
        self.connection = Connection(self.supervisor.host_requests, self.supervisor.host_events, self._death_reason, self.oom_reason, 1 << 20)

    def _death_reason(self, broken: str | None) -> str:
        return f"the sandbox is not running: {self.killed or broken or 'the fake supervisor stopped'}"

    def open(self, header: dict[str, Any], payload: bytes, stream: Stream) -> int:
        return self.connection.open(header, payload, stream)

    def cancel(self, request_id: int) -> None:
        self.connection.send({"op": "cancel", "id": f"cancel-{request_id}", "target": request_id})

    def forget(self, request_id: int) -> None:
        self.forgotten.append(request_id)
        self.connection.forget(request_id)

    def ensure_running(self) -> None:
        if self.stop_reason is not None:
            raise SandboxException(self.stop_reason)

    def wait_started(self) -> None:
        self.connection.hello.wait(5)

    @property
    def running(self) -> bool:
        return self.stop_reason is None

    @property
    def paused(self) -> bool:
        return False

    @property
    def stop_reason(self) -> str | None:
        return self.killed or self.connection.closed_reason

    def kill(self, reason: str = "it was killed") -> None:
        self.killed = self.killed or reason
        self.supervisor.stop()

    def set_timeout(self, timeout: float | None) -> None:
        pass

    def pause(self) -> None:
        pass

    def resume(self) -> None:
        pass

    def info(self) -> SandboxInfo:
        return SandboxInfo(self.sandbox_id, self.started_at, None, {}, {}, self.policy.limits.to_dict(), "running")

    def usage(self) -> HostUsage:
        return HostUsage(1, 0.0, 100, 200, 0)

    def oom_reason(self) -> str | None:
        self.oom_asked_on.append(threading.current_thread().name)
        return self.oom

    def memory_bytes(self) -> int | None:
        return 100
