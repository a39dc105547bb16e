"""Requests to the supervisor and how their answers become results.

Each operation is plain data plus two pure methods: ``feed`` turns an event
into the callbacks to fire, ``finish`` turns the terminal frame into the
return value (or raises). The sync and async sandboxes only differ in how
they wait for frames and call callbacks, so neither re-implements this.
"""

from __future__ import annotations

import codecs
import datetime
import signal
import time
from typing import Any, Callable, Literal

from sandcell import protocol

from .checks import check_envs, check_path, check_seconds
from .models import (
    CommandExitException,
    CommandResult,
    Context,
    EntryInfo,
    Execution,
    ExecutionError,
    FilesystemEvent,
    FilesystemEventType,
    FileType,
    InvalidArgumentException,
    NotEnoughSpaceException,
    NotFoundException,
    OutputMessage,
    ProcessInfo,
    Result,
    SandboxDiedException,
    SandboxPausedException,
    SandboxException,
    SandboxMetrics,
    TimeoutException,
    WriteInfo,
)

Callback = Callable[[Any], Any]
Calls = list[tuple[Callback, Any]]
WRITE_CHUNK = 8 * 1024 * 1024

ERRORS: dict[str, type[SandboxException]] = {
    "NotFound": NotFoundException,
    "InvalidArgument": InvalidArgumentException,
    "AlreadyExists": InvalidArgumentException,
    "PermissionDenied": InvalidArgumentException,
    "DiskFull": NotEnoughSpaceException,
    "SandboxDied": SandboxDiedException,
    "SandboxPaused": SandboxPausedException,
    "Timeout": TimeoutException,
}


def raise_for(header: dict[str, Any]) -> None:
    error = header.get("error") or {}
    name = error.get("name", "Error")
    raise ERRORS.get(name, SandboxException)(error.get("message") or name)


class Operation:
    """One request; ``wait`` bounds the silence between two frames (seconds)."""

    def __init__(self, op: str, wait: float | None = 60.0, payload: bytes = b"", **fields: Any) -> None:
        self.header = {"op": op, **fields}
        self.payload = payload
        self.wait = wait

    def feed(self, header: dict[str, Any], payload: bytes) -> Calls:
        return []

    def finish(self, header: dict[str, Any]) -> Any:
        if header["type"] == protocol.FAIL:
            raise_for(header)
        return header


class Simple(Operation):
    """A request whose answer is one field of its ``done`` frame."""

    def __init__(self, op: str, extract: Callable[[dict[str, Any]], Any], wait: float | None = 60.0, payload: bytes = b"", **fields: Any) -> None:
        super().__init__(op, wait, payload, **fields)
        self.extract = extract

    def finish(self, header: dict[str, Any]) -> Any:
        return self.extract(super().finish(header))


class TextStreams:
    """Decodes stdout/stderr chunks without splitting multi-byte characters.

    The supervisor caps output; this cap is the host's own backstop, so that
    a sandbox whose supervisor was subverted still cannot grow host memory.
    """

    SLACK = 1024 * 1024

    def __init__(self, limit: int) -> None:
        self.decoders: dict[str, codecs.IncrementalDecoder] = {}  # made on a stream's first output: most runs print nothing
        self.budget = limit + self.SLACK

    def decode(self, stream: str, payload: bytes, final: bool = False) -> str:
        if self.budget <= 0:
            return ""
        self.budget -= len(payload)
        if self.budget <= 0:
            return "\n[sandcell: output beyond the sandbox's limit was dropped by the host]\n"
        decoder = self.decoders.get(stream)
        if decoder is None:
            decoder = self.decoders[stream] = codecs.getincrementaldecoder("utf-8")(errors="replace")
        return decoder.decode(payload, final)


class RunCode(Operation):
    def __init__(
        self,
        code: str,
        language: str | None,
        context: Context | None,
        envs: dict[str, str] | None,
        timeout: float | None,
        callbacks: dict[str, Callback | None],
        oom_check: Callable[[], str | None],
        kill_grace: float,
        output_limit: int,
        silent: bool = False,
    ) -> None:
        if not isinstance(code, str):
            raise InvalidArgumentException("code must be a string")
        timeout = check_seconds(timeout, zero_is_none=True)
        wait = None if timeout is None else timeout + kill_grace + 30.0
        fields = {"silent": True} if silent else {}
        context_id = context.id if context else None
        super().__init__("run_code", wait, code=code, language=language, context=context_id, env=dict(check_envs(envs)), timeout=timeout, **fields)
        self.callbacks = callbacks
        self.oom_check = oom_check
        self.execution = Execution()
        self.text = TextStreams(output_limit)

    def _call(self, name: str, value: Any, calls: Calls) -> None:
        callback = self.callbacks.get(name)
        if callback is not None:
            calls.append((callback, value))

    def feed(self, header: dict[str, Any], payload: bytes) -> Calls:
        calls: Calls = []
        kind = header["type"]
        if kind in ("stdout", "stderr"):
            text = self.text.decode(kind, payload)
            if text:
                getattr(self.execution.logs, kind).append(text)
                self._call("on_" + kind, OutputMessage(text, time.time_ns(), kind == "stderr"), calls)
        elif kind == "result":
            result = Result(header["data"], bool(header.get("main")))
            self.execution.results.append(result)
            self._call("on_result", result, calls)
        elif kind == "error":
            error = self._error(header)
            self.execution.error = error
            self._call("on_error", error, calls)
        return calls

    def _error(self, header: dict[str, Any]) -> ExecutionError:
        name, value = header.get("name", "Error"), header.get("value", "")
        if name == "InterpreterDied" and header.get("signal") == 9:
            reason = self.oom_check()
            if reason:
                name, value = "OutOfMemoryError", reason + "; the interpreter was killed and restarts empty on the next run"
        return ExecutionError(name, value, header.get("traceback", ""))

    def finish(self, header: dict[str, Any]) -> Execution:
        if header["type"] == protocol.FAIL:
            error = header.get("error") or {}
            if error.get("name") == "Cancelled":
                # The caller interrupted the run (Ctrl-C): what ran so far is the answer.
                if self.execution.error is None:
                    self.execution.error = ExecutionError("KeyboardInterrupt", error.get("message", "interrupted"), "")
                return self.execution
            if error.get("name") != "SandboxDied":
                raise_for(header)
            self.execution.error = ExecutionError(error.get("name", "SandboxDied"), error.get("message", ""), "")
            if "memory" in self.execution.error.value:
                self.execution.error.name = "OutOfMemoryError"
            return self.execution
        self.execution.execution_count = header.get("execution_count")
        return self.execution


class ReadFile(Operation):
    def __init__(self, path: str, format: Literal["text", "bytes"], wait: float | None) -> None:
        if format not in ("text", "bytes"):
            raise InvalidArgumentException(f"format must be 'text' or 'bytes', not {format!r}")
        super().__init__("files.read", wait, path=check_path(path))
        self.format = format
        self.chunks: list[bytes] = []

    def feed(self, header: dict[str, Any], payload: bytes) -> Calls:
        self.chunks.append(payload)
        return []

    def finish(self, header: dict[str, Any]) -> str | bytes:
        super().finish(header)
        data = b"".join(self.chunks)
        return data.decode("utf-8", errors="replace") if self.format == "text" else data


def write_file(path: str, data: str | bytes | Any, wait: float | None) -> list[Operation]:
    """The write as a series of requests, each at most ``WRITE_CHUNK`` bytes."""
    if isinstance(data, str):
        data = data.encode()
    elif hasattr(data, "read"):
        data = data.read()
        data = data.encode() if isinstance(data, str) else data
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidArgumentException("data must be str, bytes or a readable file object")
    data, path = bytes(data), check_path(path)
    chunks = [data[i : i + WRITE_CHUNK] for i in range(0, len(data), WRITE_CHUNK)] or [b""]
    return [
        Simple("files.write", lambda h: WriteInfo(h["entry"]["name"], FileType(h["entry"]["type"]), h["entry"]["path"]), wait, chunk, path=path, append=index > 0)
        for index, chunk in enumerate(chunks)
    ]


def list_files(path: str, depth: int, wait: float | None) -> Simple:
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise InvalidArgumentException(f"depth must be an integer of at least 1, not {depth!r}")
    return Simple("files.list", lambda h: [EntryInfo.from_wire(raw) for raw in h["entries"]], wait, path=check_path(path), depth=depth)


def file_info(path: str, wait: float | None) -> Simple:
    return Simple("files.stat", lambda h: EntryInfo.from_wire(h["entry"]), wait, path=check_path(path))


class WatchDir(Operation):
    """A directory watch: a ``watching`` event, then ``events`` batches until stopped.

    Stopping is cancelling the request, so a ``Cancelled`` end is the clean one.
    """

    def __init__(self, path: str, recursive: bool, on_event: Callback, timeout: float | None = None) -> None:
        super().__init__("files.watch", None, path=check_path(path), recursive=bool(recursive), timeout=check_seconds(timeout, zero_is_none=True))
        self.on_event = on_event

    def feed(self, header: dict[str, Any], payload: bytes) -> Calls:
        if header["type"] != "events":
            return []
        return [(self.on_event, FilesystemEvent(name, FilesystemEventType(kind))) for name, kind in header["events"]]

    def finish(self, header: dict[str, Any]) -> None:
        if header["type"] == protocol.FAIL and (header.get("error") or {}).get("name") == "Cancelled":
            return
        super().finish(header)


def get_metrics(host_usage: Callable[[], Any], wait: float | None) -> Simple:
    """E2B's metrics: the sandbox's disk (``/home/user``, asked of the supervisor) with the host's cgroup figures.

    ``host_usage`` (a ``core.HostUsage``) is sampled when the answer arrives, so
    both halves describe the same moment.
    """

    def combine(header: dict[str, Any]) -> SandboxMetrics:
        usage = host_usage()
        return SandboxMetrics(
            usage.cpu_count,
            usage.cpu_used_pct,
            usage.mem_used,
            usage.mem_total,
            usage.mem_cache,
            header["used"],
            header["total"],
            datetime.datetime.now(datetime.timezone.utc),
        )

    return Simple("files.usage", combine, wait)


def context_from_wire(raw: dict[str, Any]) -> Context:
    return Context(raw["id"], raw["language"], raw["cwd"])


def create_context(cwd: str | None, language: str | None, envs: dict[str, str] | None) -> Simple:
    cwd = None if cwd is None else check_path(cwd, "cwd")
    return Simple("create_context", lambda h: context_from_wire(h["context"]), cwd=cwd, language=language, env=check_envs(envs))


def list_contexts() -> Simple:
    return Simple("list_contexts", lambda h: [context_from_wire(c) for c in h["contexts"]])


def context_op(op: str, context: Context | str) -> Simple:
    """``restart_context`` or ``remove_context``; a context or its id."""
    return Simple(op, lambda h: None, context=getattr(context, "id", context))


def file_exists(path: str, wait: float | None) -> Simple:
    return Simple("files.exists", lambda h: h["exists"], wait, path=check_path(path))


def remove_file(path: str, wait: float | None) -> Simple:
    return Simple("files.remove", lambda h: None, wait, path=check_path(path))


def make_dir(path: str, wait: float | None) -> Simple:
    return Simple("files.make_dir", lambda h: h["created"], wait, path=check_path(path))


def rename(old_path: str, new_path: str, wait: float | None) -> Simple:
    return Simple("files.rename", lambda h: EntryInfo.from_wire(h["entry"]), wait, path=check_path(old_path), destination=check_path(new_path, "new_path"))


def send_stdin(pid: int, data: str | bytes) -> Simple:
    return Simple("command.stdin", lambda h: None, payload=data.encode() if isinstance(data, str) else data, pid=pid)


def close_stdin(pid: int) -> Simple:
    return Simple("command.stdin", lambda h: None, pid=pid, close=True)


def signal_command(pid: int, signum: int) -> Simple:
    """Signal a command's process group; the answer says whether it was running."""
    if isinstance(signum, bool) or not isinstance(signum, int) or signum not in signal.valid_signals():
        raise InvalidArgumentException(f"not a signal: {signum!r}")
    return Simple("command.kill", lambda h: h["killed"], pid=pid, signal=int(signum))


class CommandStream(Operation):
    """A command's output and exit, as seen by one subscriber (see ``RunCommand``, ``connect_command``).

    Its ``started`` event carries the pid.
    """

    def __init__(self, op: str, wait: float | None, output_limit: int, timeout: float | None = None, **fields: Any) -> None:
        super().__init__(op, wait, timeout=timeout, **fields)
        self.timeout = timeout
        self.pid: int | None = None
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.text = TextStreams(output_limit)
        self.callbacks: dict[str, Callback | None] = {}
        self.terminal: dict[str, Any] | None = None  # kept: wait() may be called again

    def feed(self, header: dict[str, Any], payload: bytes) -> Calls:
        kind = header["type"]
        if kind == "started":
            self.pid = header["pid"]
            return []
        if kind in ("stdout", "stderr"):
            text = self.text.decode(kind, payload)
            getattr(self, kind).append(text)
            callback = self.callbacks.get("on_" + kind)
            if callback is not None and text:
                return [(callback, text)]
        return []

    def finish(self, header: dict[str, Any]) -> CommandResult:
        self.terminal = header
        super().finish(header)
        if header.get("timed_out"):
            raise TimeoutException(f"command timed out after {self.timeout:g} seconds and was killed")
        result = CommandResult("".join(self.stdout), "".join(self.stderr), header["exit_code"], header.get("error"))
        if result.exit_code != 0:
            raise CommandExitException(result)
        return result


class RunCommand(CommandStream):
    """A shell command started by this request."""

    def __init__(self, cmd: str, envs: dict[str, str] | None, cwd: str | None, stdin: bool, timeout: float | None, output_limit: int, tag: str | None = None) -> None:
        if not isinstance(cmd, str) or not cmd.strip():
            raise InvalidArgumentException("cmd must be a non-empty string")
        timeout = check_seconds(timeout, zero_is_none=True)
        cwd = None if cwd is None else check_path(cwd, "cwd")
        wait = None if timeout is None else timeout + 30.0
        super().__init__("command.run", wait, output_limit, timeout, cmd=cmd, env=dict(check_envs(envs)), cwd=cwd, stdin=stdin, tag=tag)


def connect_command(pid: int, timeout: float | None, output_limit: int) -> CommandStream:
    """Follow a running command from now on; ``timeout`` (``None`` or 0: none) ends only the following."""
    if isinstance(pid, bool) or not isinstance(pid, int):
        raise InvalidArgumentException(f"pid must be an integer, not {pid!r}")
    timeout = check_seconds(timeout, zero_is_none=True)
    wait = None if timeout is None else timeout + 30.0
    return CommandStream("command.connect", wait, output_limit, pid=pid, timeout=timeout)


def process_list(wait: float | None) -> Simple:
    return Simple("command.list", lambda h: [ProcessInfo(c["pid"], c.get("tag"), c["cmd"], c["args"], c["envs"], c["cwd"]) for c in h["commands"]], wait)
