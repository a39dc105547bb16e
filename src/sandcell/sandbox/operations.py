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
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from typing import Any, Generic, Literal, TypeVar

from sandcell import protocol
from sandcell.isolation import Limits

from .checks import check_envs, check_path, check_seconds
from .errors import exception_for
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
    HostUsage,
    InvalidArgumentException,
    OutputMessage,
    ProcessInfo,
    Result,
    SandboxDiedException,
    SandboxException,
    SandboxMetrics,
    TimeoutException,
    WriteInfo,
)

T = TypeVar("T")
Callback = Callable[[Any], Any]
Calls = list[tuple[Callback, Any]]
WRITE_CHUNK = 8 * 1024 * 1024

DEFAULT_RUN_TIMEOUT = 300.0
# The first frame of a long-lived request (a background command, a watch, a read) comes within this.
START_WAIT = 60.0
# A run's terminal frame is due this long after its timeout and kill grace, whatever it printed; past
# that the supervisor failed to enforce the timeout, and the host kills the sandbox.
ENFORCE_MARGIN = 15.0
# How long a command's output may pause beyond its timeout before its waiter gives up.
COMMAND_WAIT_MARGIN = 30.0
# How long stopping a watch waits for the sandbox to confirm.
STOP_WAIT = 10.0


class DefaultSeconds(float):
    """A default timeout, told apart from the same number given explicitly (``is``)."""


DEFAULT_COMMAND_TIMEOUT = DefaultSeconds(60.0)


def raise_for(header: dict[str, Any]) -> None:
    raise exception_for(header.get("error") or {})


def checked(header: dict[str, Any]) -> dict[str, Any]:
    """A terminal frame that is not a failure (a ``fail`` frame raises its error)."""
    if header["type"] == protocol.FAIL:
        raise_for(header)
    return header


class Operation(Generic[T]):
    """One request, whose outcome is a ``T``; ``wait`` bounds the silence between two frames (seconds),
    ``deadline`` (if any) the time from its start to its terminal frame, past which the sandbox is killed."""

    deadline: float | None = None

    def __init__(self, op: str, wait: float | None = 60.0, payload: bytes = b"", **fields: Any) -> None:
        self.header = {"op": op, **fields}
        self.payload = payload
        self.wait = wait

    def feed(self, header: dict[str, Any], payload: bytes) -> Calls:
        return []

    def finish(self, header: dict[str, Any]) -> T:
        """The outcome, from the terminal frame (or its error, raised)."""
        raise NotImplementedError


class Tunnelled(Operation[dict[str, Any]]):
    """A client's request passed through as it came (the server's tunnel); its outcome is the terminal frame."""

    def finish(self, header: dict[str, Any]) -> dict[str, Any]:
        return checked(header)


class Simple(Operation[T]):
    """A request whose answer is read off its ``done`` frame."""

    def __init__(self, op: str, extract: Callable[[dict[str, Any]], T], wait: float | None = 60.0, payload: bytes = b"", **fields: Any) -> None:
        super().__init__(op, wait, payload, **fields)
        self.extract = extract

    def finish(self, header: dict[str, Any]) -> T:
        return self.extract(checked(header))


class TextStreams:
    """Decodes stdout/stderr chunks without splitting multi-byte characters.

    (The host's backstop behind the supervisor's output cap is in ``connection``.)
    """

    def __init__(self) -> None:
        self.decoders: dict[str, codecs.IncrementalDecoder] = {}  # made on a stream's first output: most runs print nothing

    def decode(self, stream: str, payload: bytes, final: bool = False) -> str:
        decoder = self.decoders.get(stream)
        if decoder is None:
            decoder = self.decoders[stream] = codecs.getincrementaldecoder("utf-8")(errors="replace")
        return decoder.decode(payload, final)


class RunCode(Operation[Execution]):
    def __init__(
        self,
        code: str,
        language: str | None,
        context: Context | None,
        envs: dict[str, str] | None,
        timeout: float | None,
        callbacks: dict[str, Callback | None],
        kill_grace: float,
        silent: bool = False,
    ) -> None:
        if not isinstance(code, str):
            raise InvalidArgumentException("code must be a string")
        timeout = check_seconds(timeout, zero_is_none=True)
        wait = None if timeout is None else timeout + kill_grace + 30.0
        self.deadline = None if timeout is None else timeout + kill_grace + ENFORCE_MARGIN
        fields: dict[str, Any] = {"silent": True} if silent else {}
        context_id = context.id if context else None
        super().__init__("run_code", wait, code=code, language=language, context=context_id, env=dict(check_envs(envs)), timeout=timeout, **fields)
        self.callbacks = callbacks
        self.execution = Execution()
        self.text = TextStreams()

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
        if name == "InterpreterDied" and header.get("oom"):  # said by the host that holds the sandbox's cgroup
            name, value = "OutOfMemoryError", f"{header['oom']}; the interpreter was killed and restarts empty on the next run"
        return ExecutionError(name, value, header.get("traceback", ""))

    def finish(self, header: dict[str, Any]) -> Execution:
        if header["type"] == protocol.FAIL:
            error = header.get("error") or {}
            if error.get("name") == "Cancelled":
                # The caller interrupted the run (Ctrl-C): what ran so far is the answer.
                if self.execution.error is None:
                    self.execution.error = ExecutionError("KeyboardInterrupt", error.get("message", "interrupted"), "")
                return self.execution
            if error.get("name") == "SandboxDied":
                # As E2B's SDKs: what the code did before is lost with the sandbox, the run raises.
                raise SandboxDiedException(f"the sandbox stopped while the code was running ({error.get('message') or 'no reason given'})")
            raise_for(header)
        self.execution.execution_count = header.get("execution_count")
        return self.execution


def run_code(
    backend: Any,
    code: str,
    language: str | None,
    context: Context | None,
    callbacks: dict[str, Callback | None],
    envs: dict[str, str] | None,
    timeout: float | None,
) -> RunCode:
    """``run_code``'s request, for a ``SandboxBackend`` (its kill grace)."""
    return RunCode(code, language, context, envs, timeout, callbacks, backend.policy.kill_grace)


def read_limit(limits: Limits) -> int:
    """What one read brings at most unless told otherwise: as much as the sandbox may write, and 1 GiB."""
    return max(limits.disk_mb, 1024) * 1024 * 1024


class ReadFile(Operation[str | bytes]):
    """``files.read``: ``text`` or ``bytes`` gather the file, ``stream`` hands out its chunks (``take``).

    Only regular files, links followed only if ``follow``, at most ``limit``
    bytes; and never more than the size the sandbox gave when it opened the
    file: the supervisor stops there, and ``take`` is the host's backstop
    against one that was subverted. (``fifo``: a FIFO too, for ``fork``.)
    """

    def __init__(self, path: str, format: Literal["text", "bytes", "stream"], wait: float | None, limit: int, follow: bool = True, fifo: bool = False) -> None:
        if format not in ("text", "bytes", "stream"):
            raise InvalidArgumentException(f"format must be 'text', 'bytes' or 'stream', not {format!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise InvalidArgumentException(f"limit must be a number of bytes, not {limit!r}")
        fields: dict[str, Any] = {"fifo": True} if fifo else {}
        super().__init__("files.read", wait, path=check_path(path), follow=bool(follow), limit=limit, **fields)
        self.path = path
        self.format = format
        self.limit = limit
        self.size: int | None = None
        self.received = 0
        self.chunks: list[bytes] = []

    def take(self, header: dict[str, Any], payload: bytes) -> bytes:
        """The file's bytes in this frame (none in the ``opened`` frame, which gives the size)."""
        if header["type"] == "opened":
            size = header.get("size")
            self.size = size if isinstance(size, int) and not isinstance(size, bool) else None
            return b""
        if header["type"] != "data":
            return b""
        self.received += len(payload)
        bound = self.limit if self.size is None else min(self.size, self.limit)
        if self.received > bound:
            raise SandboxException(f"the sandbox sent more of {self.path} than the {bound} bytes it may; the read was stopped")
        return payload

    def feed(self, header: dict[str, Any], payload: bytes) -> Calls:
        data = self.take(header, payload)
        if data:
            self.chunks.append(data)
        return []

    def finish(self, header: dict[str, Any]) -> str | bytes:
        checked(header)
        data = b"".join(self.chunks)
        return data.decode("utf-8", errors="replace") if self.format == "text" else data


def write_part(path: str, chunk: bytes, first: bool, wait: float | None) -> Simple[WriteInfo]:
    """One request of a write: the first creates (or truncates) the file, the others append."""
    return Simple(
        "files.write",
        lambda h: WriteInfo(h["entry"]["name"], FileType(h["entry"]["type"]), h["entry"]["path"]),
        wait,
        chunk,
        path=check_path(path),
        append=not first,
    )


def pieces(data: str | bytes | Any) -> Iterator[bytes]:
    """What to write, in pieces of at most ``WRITE_CHUNK`` bytes (a readable file is read as they go); at least one."""
    if isinstance(data, str):
        data = data.encode()
    if isinstance(data, (bytes, bytearray, memoryview)):
        view = memoryview(data).cast("B")
        for start in range(0, max(len(view), 1), WRITE_CHUNK):
            yield bytes(view[start : start + WRITE_CHUNK])
    elif hasattr(data, "read"):
        first = True
        while (piece := data.read(WRITE_CHUNK)) or first:
            yield piece.encode() if isinstance(piece, str) else bytes(piece)
            first = False
    else:
        raise InvalidArgumentException("data must be str, bytes or a readable file object")


async def gathered(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """``chunks`` (an HTTP body as it arrives) in pieces of ``WRITE_CHUNK`` bytes; at least one."""
    held = bytearray()
    sent = False
    async for chunk in chunks:
        held += chunk
        while len(held) >= WRITE_CHUNK:
            yield bytes(held[:WRITE_CHUNK])
            del held[:WRITE_CHUNK]
            sent = True
    if held or not sent:
        yield bytes(held)


def list_files(path: str, depth: int, wait: float | None) -> Simple[list[EntryInfo]]:
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise InvalidArgumentException(f"depth must be an integer of at least 1, not {depth!r}")
    return Simple("files.list", lambda h: [EntryInfo.from_wire(raw) for raw in h["entries"]], wait, path=check_path(path), depth=depth)


def file_info(path: str, wait: float | None) -> Simple[EntryInfo]:
    return Simple("files.stat", lambda h: EntryInfo.from_wire(h["entry"]), wait, path=check_path(path))


class WatchDir(Operation[None]):
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
        checked(header)


def disk_usage(wait: float | None) -> Simple[tuple[int, int]]:
    """The sandbox's ``/home/user`` disk, ``(used, total)`` bytes."""
    return Simple("files.usage", lambda h: (h["used"], h["total"]), wait)


def metrics(usage: HostUsage, disk: tuple[int, int]) -> SandboxMetrics:
    """E2B's metrics: the host's cgroup figures with the sandbox's disk (``disk_usage``), sampled just after it."""
    now = datetime.datetime.now(datetime.UTC)
    return SandboxMetrics(usage.cpu_count, usage.cpu_used_pct, usage.mem_used, usage.mem_total, usage.mem_cache, disk[0], disk[1], now)


def set_env(envs: dict[str, str]) -> Simple[None]:
    """Give a started sandbox (a pooled one) the envs it would have been created with."""
    return Simple("set_env", lambda h: None, env=envs)


def context_from_wire(raw: dict[str, Any]) -> Context:
    return Context(raw["id"], raw["language"], raw["cwd"])


def create_context(cwd: str | None, language: str | None, envs: dict[str, str] | None) -> Simple[Context]:
    cwd = None if cwd is None else check_path(cwd, "cwd")
    return Simple("create_context", lambda h: context_from_wire(h["context"]), cwd=cwd, language=language, env=check_envs(envs))


def list_contexts() -> Simple[list[Context]]:
    return Simple("list_contexts", lambda h: [context_from_wire(c) for c in h["contexts"]])


def context_op(op: str, context: Context | str) -> Simple[None]:
    """``restart_context`` or ``remove_context``; a context or its id."""
    return Simple(op, lambda h: None, context=getattr(context, "id", context))


def file_exists(path: str, wait: float | None) -> Simple[bool]:
    return Simple("files.exists", lambda h: h["exists"], wait, path=check_path(path))


def remove_file(path: str, wait: float | None) -> Simple[None]:
    return Simple("files.remove", lambda h: None, wait, path=check_path(path))


def make_dir(path: str, wait: float | None) -> Simple[bool]:
    return Simple("files.make_dir", lambda h: h["created"], wait, path=check_path(path))


def rename(old_path: str, new_path: str, wait: float | None) -> Simple[EntryInfo]:
    return Simple("files.rename", lambda h: EntryInfo.from_wire(h["entry"]), wait, path=check_path(old_path), destination=check_path(new_path, "new_path"))


def send_stdin(pid: int, data: str | bytes) -> Simple[None]:
    return Simple("command.stdin", lambda h: None, payload=data.encode() if isinstance(data, str) else data, pid=pid)


def close_stdin(pid: int) -> Simple[None]:
    return Simple("command.stdin", lambda h: None, pid=pid, close=True)


def signal_command(pid: int, signum: int) -> Simple[bool]:
    """Signal a command's process group; the answer says whether it was running."""
    if isinstance(signum, bool) or not isinstance(signum, int) or signum not in signal.valid_signals():
        raise InvalidArgumentException(f"not a signal: {signum!r}")
    return Simple("command.kill", lambda h: h["killed"], pid=pid, signal=int(signum))


class CommandStream(Operation[CommandResult]):
    """A command's output and exit, as seen by one subscriber (see ``RunCommand``, ``connect_command``).

    Its ``started`` event carries the pid.
    """

    def __init__(self, op: str, wait: float | None, timeout: float | None = None, **fields: Any) -> None:
        super().__init__(op, wait, timeout=timeout, **fields)
        self.timeout = timeout
        self.pid: int | None = None
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.text = TextStreams()
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
        checked(header)
        if header.get("timed_out"):
            raise TimeoutException(f"command timed out after {self.timeout:g} seconds and was killed")
        result = CommandResult("".join(self.stdout), "".join(self.stderr), header["exit_code"], header.get("error"))
        if result.exit_code != 0:
            raise CommandExitException(result)
        return result


class RunCommand(CommandStream):
    """A shell command started by this request."""

    def __init__(self, cmd: str, envs: dict[str, str] | None, cwd: str | None, stdin: bool, timeout: float | None, tag: str | None = None) -> None:
        if not isinstance(cmd, str) or not cmd.strip():
            raise InvalidArgumentException("cmd must be a non-empty string")
        timeout = check_seconds(timeout, zero_is_none=True)
        cwd = None if cwd is None else check_path(cwd, "cwd")
        wait = None if timeout is None else timeout + COMMAND_WAIT_MARGIN
        super().__init__("command.run", wait, timeout, cmd=cmd, env=dict(check_envs(envs)), cwd=cwd, stdin=stdin, tag=tag)


def run_command(cmd: str, background: bool, envs: dict[str, str] | None, cwd: str | None, stdin: bool | None, timeout: float | None) -> RunCommand:
    """``commands.run``'s request: a background command gets stdin unless ``stdin=False``, and no
    timeout unless one is given (the default is the foreground's)."""
    use_stdin = background if stdin is None else stdin
    return RunCommand(cmd, envs, cwd, use_stdin, None if background and timeout is DEFAULT_COMMAND_TIMEOUT else timeout)


def connect_command(pid: int, timeout: float | None) -> CommandStream:
    """Follow a running command from now on; ``timeout`` (``None`` or 0: none) ends only the following."""
    if isinstance(pid, bool) or not isinstance(pid, int):
        raise InvalidArgumentException(f"pid must be an integer, not {pid!r}")
    timeout = check_seconds(timeout, zero_is_none=True)
    wait = None if timeout is None else timeout + COMMAND_WAIT_MARGIN
    return CommandStream("command.connect", wait, pid=pid, timeout=timeout)


def process_list(wait: float | None) -> Simple[list[ProcessInfo]]:
    return Simple("command.list", lambda h: [ProcessInfo(c["pid"], c.get("tag"), c["cmd"], c["args"], c["envs"], c["cwd"]) for c in h["commands"]], wait)
