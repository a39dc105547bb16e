"""Code contexts: one interpreter process per context, kept alive across runs.

Python and JavaScript contexts speak JSON lines (requests on the process's
fd 3, events on its fd 4); a bash context is a plain bash reading cell file
names on fd 3 and writing exit statuses on fd 4. All three keep the code's
stdout and stderr on pipes of their own, read here, so output written by C
code or child processes is captured like ``print`` output.

Each context process leads its own process group: an interrupt (timeout or
cancel) is a SIGINT to the whole group, which stops a ``sleep`` started by
the cell as well as the interpreter's own loop, and leaves state intact.
Only when the interpreter ignores the interrupt for ``kill_grace`` seconds is
the group killed; the context then restarts empty on its next run.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import uuid
from dataclasses import dataclass
from typing import Any

from sandcell.protocol import ENV_NAME
from sandcell.runtime.aio import PIPE_READ, Outcome, ReadWatch
from sandcell.runtime.output import Emit, RunOutput
from sandcell.runtime.zygote import PythonZygote

EVENTS_CLOSED_GRACE = 1.0
ADOPT_TIMEOUT = 10.0


@dataclass
class Runtime:
    """Where the interpreters live inside the sandbox and how to start them."""

    python: str
    stage: str
    acorn: str
    amaro: str
    work_dir: str
    base_env: dict[str, str]
    output_limit: int
    kill_grace: float
    preload: tuple[str, ...] = ()
    site_dirs: tuple[str, ...] = ()  # the template's packages, after the image's own
    zygote: PythonZygote | None = None
    memory_mb: int = 0  # the sandbox's memory limit, for interpreters that size themselves (the JVM); 0: unknown


class Run:
    """One execution in a context: where its events go and how it ended."""

    def __init__(self, emit: Emit, output_limit: int) -> None:
        self.output = RunOutput(output_limit, emit)
        self.finished = Outcome()
        self.interrupt_reason: str | None = None


class Context:
    """A running interpreter; subclasses say how to start it and talk to it."""

    language = ""
    # Whether the kernel waits, after each event, for an empty line on its
    # request pipe saying the event was forwarded (see python_kernel.Channel).
    acknowledges_events = False

    def __init__(self, runtime: Runtime, cwd: str, env: dict[str, str], context_id: str | None = None) -> None:
        self.id = context_id or uuid.uuid4().hex[:16]
        self.runtime = runtime
        self.cwd = cwd
        self.env = env
        self.process: asyncio.subprocess.Process | None = None
        self.lock = asyncio.Lock()
        self.io_lock = asyncio.Lock()
        self.run: Run | None = None
        self.execution_count = 0
        self._ready: asyncio.Future[None] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._fds: list[int] = []
        self._request_fd = -1
        self._ack_fd = -1
        self.launched_env: dict[str, str] = {}

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "language": self.language, "cwd": self.cwd}

    # -- subclass hooks -------------------------------------------------
    def command(self) -> list[str]:
        raise NotImplementedError

    def process_env(self) -> dict[str, str]:
        return {**self.runtime.base_env, **self.env}

    def encode_request(self, code: str, env: dict[str, str], silent: bool = False) -> bytes:
        """``silent``: no history, no execution count, no displayed result (Python only: the fork helpers)."""
        return (json.dumps({"code": code, "env": env, "silent": silent}) + "\n").encode()

    def setup_request(self) -> bytes:
        """The request that moves a started, unused interpreter to ``self.cwd``
        with exactly ``process_env()`` as its environment; it answers ``ready``."""
        raise NotImplementedError(f"{self.language} contexts cannot be kept as spares")

    def decode_event(self, line: bytes) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(line)
        return event

    # -- lifecycle ------------------------------------------------------
    async def start(self) -> None:
        working_directory(self.cwd)
        loop = asyncio.get_running_loop()
        request_r, request_w = os.pipe()
        event_r, event_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()

        self.launched_env = self.process_env()
        self.process = await self._launch([request_r, event_w, out_w, err_w], self.launched_env)
        for fd in (request_r, event_w, out_w, err_w):
            os.close(fd)
        self._request_fd = request_w
        if self.acknowledges_events:
            # Acknowledgements go through a non-blocking open of the same pipe: a kernel that
            # leaves them unread (code writing events of its own) must not stall the supervisor.
            self._ack_fd = os.open(f"/proc/self/fd/{request_w}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self._fds = [out_r, err_r, event_r]
        for fd in self._fds:
            os.set_blocking(fd, False)
        self._ready = loop.create_future()
        self._tasks = [
            asyncio.ensure_future(self._pump(out_r, "stdout")),
            asyncio.ensure_future(self._pump(err_r, "stderr")),
            asyncio.ensure_future(self._events(event_r, (out_r, err_r), self.process)),
        ]
        await self._await_ready()

    async def _launch(self, fds: list[int], env: dict[str, str]) -> Any:
        """Start the interpreter on ``fds`` (requests, events, stdout, stderr)."""
        request_r, event_w, out_w, err_w = fds

        def wire_fds() -> None:
            # Move both out of the way first: either may *be* fd 3 or 4.
            request, event = fcntl.fcntl(request_r, fcntl.F_DUPFD, 10), fcntl.fcntl(event_w, fcntl.F_DUPFD, 10)
            os.dup2(request, 3)
            os.dup2(event, 4)

        return await asyncio.create_subprocess_exec(
            *self.command(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out_w,
            stderr=err_w,
            cwd=self.cwd,
            env=env,
            pass_fds=(3, 4),
            preexec_fn=wire_fds,
            start_new_session=True,
        )

    async def _await_ready(self) -> None:
        assert self._ready is not None
        await self._ready

    async def adopt(self, cwd: str, env: dict[str, str]) -> None:
        """Make this started, never used context the one asked for: ``cwd`` and
        ``env`` apply as if it had been started with them (see ``Spares``)."""
        if not self.alive:
            raise RuntimeError(f"the spare {self.language} context is gone")
        self.cwd, self.env = working_directory(cwd), env
        self._ready = asyncio.get_running_loop().create_future()
        os.write(self._request_fd, self.setup_request())
        await asyncio.wait_for(asyncio.shield(self._ready), ADOPT_TIMEOUT)
        self.launched_env = self.process_env()

    async def stop(self) -> None:
        if self.process and self.process.returncode is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await self.process.wait()
        # Wait for the readers to end before closing their fds: a reader
        # running later could otherwise touch a reused fd number.
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for fd in self._fds:
            os.close(fd)
        self._fds = []
        self._close_request_fd()

    async def restart(self) -> None:
        await self.stop()
        self.execution_count = 0
        await self.start()

    @property
    def started(self) -> bool:
        """Whether it was ever started: a default context is listed before its first run starts it."""
        return self.process is not None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None and self._request_fd >= 0

    # -- reading the process's pipes --------------------------------------

    async def _forward(self, stream: str, data: bytes) -> None:
        if self.run is not None:
            await self.run.output.write(stream, data)
        # Output between runs (a background thread printing) has no run to
        # belong to and is dropped, like a notebook's stray output.

    async def _pump(self, fd: int, stream: str) -> None:
        with ReadWatch(fd) as watch:
            while True:
                await watch.readable()
                async with self.io_lock:
                    data = watch.read(PIPE_READ)
                    if data is None:
                        continue
                    if not data:
                        return
                    await self._forward(stream, data)

    async def _drain(self, fds: tuple[int, int]) -> None:
        for fd, stream in zip(fds, ("stdout", "stderr"), strict=True):
            while True:
                try:
                    data = os.read(fd, PIPE_READ)
                except (BlockingIOError, OSError):
                    break
                if not data:
                    break
                await self._forward(stream, data)

    async def _events(self, fd: int, output_fds: tuple[int, int], process: asyncio.subprocess.Process) -> None:
        # Read directly, under ``io_lock``, draining the output pipes *before*
        # each read: output written before an event is forwarded before it,
        # and (the kernel waits until its event has left the pipe) output
        # written after it cannot be forwarded first.
        buffer = bytearray()
        scanned = 0
        with ReadWatch(fd) as watch:
            while True:
                await watch.readable()
                async with self.io_lock:
                    await self._drain(output_fds)
                    data = watch.read(PIPE_READ)
                    if data is None:
                        continue
                    if not data:
                        break
                    buffer += data
                    while (end := buffer.find(b"\n", scanned)) >= 0:
                        line = bytes(buffer[:end])
                        del buffer[: end + 1]
                        scanned = 0
                        if line.strip():
                            await self._handle_event(self.decode_event(line), len(line))
                    scanned = len(buffer)
        exited = asyncio.ensure_future(process.wait())
        try:
            if not (await asyncio.wait({exited}, timeout=EVENTS_CLOSED_GRACE))[0]:
                # The code closed the interpreter's event pipe: it can no
                # longer finish a run, so end it now rather than at the timeout.
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            status = await exited
        finally:
            exited.cancel()
        async with self.io_lock:
            await self._drain(output_fds)
            self._died(status)

    async def _handle_event(self, event: dict[str, Any], size: int) -> None:
        """``event``, ``size`` bytes on the event pipe."""
        # Acknowledged as soon as it is read, before it is forwarded: output
        # the kernel prints from now on waits for ``io_lock``, which is held
        # until this event is on its way, so it still cannot overtake it; the
        # kernel meanwhile goes on with the cell.
        if self._ack_fd >= 0 and event.get("type") not in ("ready", "done"):
            try:
                os.write(self._ack_fd, b"\n")  # the kernel may print again (see python_kernel.Channel)
            except OSError:  # a full pipe too: the kernel waits no longer than its TAKEN_WAIT
                pass
        await self._dispatch_event(event, size)

    async def _dispatch_event(self, event: dict[str, Any], size: int) -> None:
        kind = event.get("type")
        if kind == "ready":
            if self._ready and not self._ready.done():
                self._ready.set_result(None)
            return
        run = self.run
        if run is None:
            return
        if kind == "result":
            await run.output.event({"type": "result", "data": event["data"], "main": bool(event.get("main"))}, size)
        elif kind == "error":
            await run.output.event(self._error(run, event), size)
        elif kind == "done":
            self.execution_count = int(event.get("execution_count") or self.execution_count + 1)
            if not run.finished.done():
                run.finished.set_result({"execution_count": self.execution_count, "status": event.get("status")})

    def _error(self, run: Run, event: dict[str, Any]) -> dict[str, Any]:
        error = {"type": "error", "name": event.get("name", "Error"), "value": event.get("value", ""), "traceback": event.get("traceback", "")}
        if run.interrupt_reason and error["name"] == "KeyboardInterrupt":
            error["name"], error["value"] = "TimeoutError" if run.interrupt_reason.startswith("timed out") else "KeyboardInterrupt", run.interrupt_reason
        return error

    def _died(self, status: int) -> None:
        self._close_request_fd()
        if self._ready and not self._ready.done():
            self._ready.set_exception(RuntimeError(f"the {self.language} interpreter failed to start ({describe_status(status)})"))
        run = self.run
        if run is not None and not run.finished.done():
            run.finished.set_result({"died": status})

    def _close_request_fd(self) -> None:
        for fd in (self._request_fd, self._ack_fd):
            if fd >= 0:
                os.close(fd)
        self._request_fd = self._ack_fd = -1

    # -- running code -------------------------------------------------------
    async def execute(self, code: str, env: dict[str, str], timeout: float | None, emit: Emit, silent: bool = False) -> dict[str, Any]:
        for name in env:
            if not ENV_NAME.match(name):
                raise ValueError(f"invalid environment variable name {name!r}")
        async with self.lock:
            if not self.alive:
                await self.restart()
            run = self.run = Run(emit, self.runtime.output_limit)
            try:
                try:
                    os.write(self._request_fd, self.encode_request(code, env, silent))
                except BrokenPipeError:
                    pass  # it died just now; its events reader reports how, as this run's error
                outcome = await self._wait(run, timeout)
            finally:
                self.run = None
                await run.output.flush()  # what the run printed last, sent now rather than a few ms later
            if "died" in outcome:
                await emit(self._death_error(run, outcome["died"]), b"")
                self.execution_count += 1
                return {"execution_count": self.execution_count}
            return outcome

    async def _wait(self, run: Run, timeout: float | None) -> dict[str, Any]:
        try:
            return await run.finished.wait(timeout)
        except TimeoutError:
            self.interrupt(f"timed out after {timeout:g} seconds; the {self.language} context was interrupted and keeps its state")
        except asyncio.CancelledError:
            self.interrupt("interrupted: the run was cancelled")
            # Hold the lock until the interrupted cell has ended: its last events
            # (the KeyboardInterrupt, its ``done``) must not be taken for the next run's.
            try:
                await run.finished.wait(self.runtime.kill_grace)
            except TimeoutError:
                await self.stop()
            raise
        try:
            return await run.finished.wait(self.runtime.kill_grace)
        except TimeoutError:
            await self.stop()
            run.interrupt_reason = (run.interrupt_reason or "") + "; it ignored the interrupt and was restarted: its state is lost"
            return {"died": -signal.SIGKILL, "killed": True}

    def interrupt(self, reason: str) -> None:
        run = self.run
        if run is None or self.process is None:
            return
        run.interrupt_reason = reason
        try:
            os.killpg(self.process.pid, signal.SIGINT)
        except ProcessLookupError:
            pass

    def _death_error(self, run: Run, status: int) -> dict[str, Any]:
        if run.interrupt_reason and "restarted" in run.interrupt_reason:
            return {"type": "error", "name": "TimeoutError", "value": run.interrupt_reason, "traceback": ""}
        return {
            "type": "error",
            "name": "InterpreterDied",
            "value": f"the {self.language} interpreter {describe_status(status)}; its state is lost and it restarts on the next run",
            "traceback": "",
            "signal": -status if status < 0 else None,
        }


def working_directory(path: str) -> str:
    """``path`` as a directory a context can work in, made when it is missing; ``ValueError`` says why it cannot be one."""
    try:
        os.makedirs(path, exist_ok=True)
    except FileExistsError:
        raise ValueError(f"cannot work in {path}: it is not a directory") from None
    except OSError as exc:
        raise ValueError(f"cannot work in {path}: it does not exist and cannot be created ({exc.strerror})") from None
    if not os.access(path, os.X_OK):
        raise ValueError(f"cannot work in {path}: permission denied")
    return path


def describe_status(status: int) -> str:
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"was killed by {name}"
    return f"exited with status {status}"
