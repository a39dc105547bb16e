"""``AsyncSandbox``: the same surface as ``Sandbox``, with ``async``/``await``.

Callbacks may be plain functions or coroutine functions; both are called on
the caller's event loop, in order, while the code runs.
"""

from __future__ import annotations

import asyncio
import inspect
import signal
from typing import IO, Any, AsyncIterable, AsyncIterator, Callable, Iterable, Literal

from sandcell import protocol
from sandcell.isolation import Limits

from . import operations as ops
from .connection import AsyncStream
from .core import SandboxCore, new_core, server_core, timeout_error
from .models import CommandResult, Context, EntryInfo, Execution, FilesystemEvent, ProcessInfo, SandboxInfo, SandboxMetrics, WriteInfo
from .pool import SandboxPool
from .sync import DEFAULT_COMMAND_TIMEOUT, DEFAULT_RUN_TIMEOUT, START_WAIT, STOP_WAIT


async def _each(items: Iterable[bytes]) -> AsyncIterator[bytes]:
    for item in items:
        yield item


async def _fire(calls: ops.Calls) -> None:
    for callback, value in calls:
        outcome = callback(value)
        if inspect.isawaitable(outcome):
            await outcome


class AsyncSandbox:
    def __init__(self, core: SandboxCore) -> None:
        self._core = core
        self.files = AsyncFilesystem(self)
        self.commands = AsyncCommands(self)

    @classmethod
    async def create(
        cls,
        timeout: float | None = 300,
        envs: dict[str, str] | None = None,
        limits: Limits | None = None,
        metadata: dict[str, str] | None = None,
        network: bool = False,
        api_url: str | None = None,
        api_key: str | None = None,
        pool: SandboxPool | Literal[False] | None = None,
    ) -> AsyncSandbox:
        """Start a sandbox, here or on a ``sandcell serve`` server; see ``Sandbox.create``."""
        core = await asyncio.to_thread(new_core, timeout, envs, limits, metadata, network, api_url, api_key, pool)
        await asyncio.to_thread(core.wait_started)
        return cls(core)

    @classmethod
    async def connect(cls, sandbox_id: str, api_url: str | None = None, api_key: str | None = None) -> AsyncSandbox:
        """Attach to a sandbox running on a ``sandcell serve`` server."""
        return cls(await asyncio.to_thread(server_core, sandbox_id, api_url, api_key))

    @property
    def sandbox_id(self) -> str:
        return self._core.sandbox_id

    @property
    def stop_reason(self) -> str | None:
        """Why the sandbox is not running (timeout, kill, crash); ``None`` while it is."""
        return self._core.stop_reason

    async def __aenter__(self) -> AsyncSandbox:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.kill()

    async def _call(self, operation: ops.Operation) -> Any:
        self._core.ensure_running()
        stream = AsyncStream()
        request_id = self._core.connection.open(operation.header, operation.payload, stream)
        try:
            while True:
                try:
                    header, payload = await stream.get(operation.wait)
                except asyncio.TimeoutError:
                    raise timeout_error(operation.header["op"], operation.wait) from None
                if header["type"] in protocol.TERMINAL:
                    return operation.finish(header)
                await _fire(operation.feed(header, payload))
        except BaseException:  # cancelled (the code stops, the context keeps its state), timed out, or refused
            self._core.cancel(request_id)
            self._core.connection.forget(request_id)
            raise

    async def _read_stream(self, operation: ops.ReadFile) -> AsyncIterator[bytes]:
        """A read's chunks as the caller takes them; see ``Sandbox._read_stream``."""
        stream, request_id = await self._open(operation)

        async def chunks() -> AsyncIterator[bytes]:
            ended = False
            try:
                if operation.chunks:  # a supervisor from before the ``opened`` frame
                    yield b"".join(operation.chunks)
                while True:
                    try:
                        header, payload = await stream.get(operation.wait)
                    except TimeoutError:
                        raise timeout_error(operation.header["op"], operation.wait) from None
                    if header["type"] in protocol.TERMINAL:
                        ended = True
                        operation.finish(header)
                        return
                    if data := operation.take(header, payload):
                        yield data
            finally:
                if not ended:
                    self._core.cancel(request_id)
                    self._core.connection.forget(request_id)

        return chunks()

    async def _open(self, operation: ops.Operation) -> tuple[AsyncStream, int]:
        """Start a long-lived request and wait for its first event; see ``Sandbox._open``."""
        self._core.ensure_running()
        stream = AsyncStream()
        request_id = self._core.connection.open(operation.header, operation.payload, stream)
        try:
            header, payload = await stream.get(START_WAIT)
        except asyncio.TimeoutError:
            self._core.cancel(request_id)
            self._core.connection.forget(request_id)
            raise timeout_error(operation.header["op"], START_WAIT) from None
        if header["type"] in protocol.TERMINAL:
            operation.finish(header)  # raises: it failed to start
        await _fire(operation.feed(header, payload))
        return stream, request_id

    async def run_code(
        self,
        code: str,
        language: str | None = None,
        context: Context | None = None,
        on_stdout: Callable[[Any], Any] | None = None,
        on_stderr: Callable[[Any], Any] | None = None,
        on_result: Callable[[Any], Any] | None = None,
        on_error: Callable[[Any], Any] | None = None,
        envs: dict[str, str] | None = None,
        timeout: float | None = DEFAULT_RUN_TIMEOUT,
    ) -> Execution:
        callbacks = {"on_stdout": on_stdout, "on_stderr": on_stderr, "on_result": on_result, "on_error": on_error}
        core = self._core
        return await self._call(ops.RunCode(code, language, context, envs, timeout, callbacks, core.oom_reason, core.policy.kill_grace))

    async def create_code_context(self, cwd: str | None = None, language: str | None = None, envs: dict[str, str] | None = None) -> Context:
        return await self._call(ops.create_context(cwd, language, envs))

    async def list_code_contexts(self) -> list[Context]:
        return await self._call(ops.list_contexts())

    async def restart_code_context(self, context: Context | str) -> None:
        await self._call(ops.context_op("restart_context", context))

    async def remove_code_context(self, context: Context | str) -> None:
        await self._call(ops.context_op("remove_context", context))

    async def fork(self, timeout: float | None = 300) -> AsyncSandbox:
        """A new, independent sandbox with a copy of this one's files and Python state; see ``Sandbox.fork``."""
        return AsyncSandbox(await asyncio.to_thread(self._core.fork, timeout))

    async def kill(self) -> None:
        await asyncio.to_thread(self._core.kill, "it was killed")

    async def is_running(self) -> bool:
        return self._core.running

    async def set_timeout(self, timeout: float | None) -> None:
        self._core.set_timeout(timeout)

    async def get_info(self) -> SandboxInfo:
        return self._core.info()

    async def pause(self) -> None:
        """Freeze the sandbox; see ``Sandbox.pause``."""
        await asyncio.to_thread(self._core.pause)

    async def resume(self) -> None:
        await asyncio.to_thread(self._core.resume)

    async def get_metrics(self) -> SandboxMetrics:
        return await self._call(ops.get_metrics(self._core.usage, 60.0))


class AsyncFilesystem:
    def __init__(self, sandbox: AsyncSandbox, request_timeout: float = 60.0) -> None:
        self._sandbox = sandbox
        self._wait = request_timeout

    async def read(self, path: str, format: Literal["text", "bytes", "stream"] = "text", *, limit: int | None = None, follow_links: bool = True) -> Any:
        """See ``Filesystem.read``; ``stream`` gives an async iterator of ``bytes`` chunks."""
        operation = ops.ReadFile(path, format, self._wait, ops.read_limit(self._sandbox._core.policy.limits) if limit is None else limit, follow_links)
        if format == "stream":
            return await self._sandbox._read_stream(operation)
        return await self._sandbox._call(operation)

    async def write(self, path: str, data: str | bytes | IO[Any] | AsyncIterable[bytes]) -> WriteInfo:
        """See ``Filesystem.write``; ``data`` may also be an async iterable of ``bytes`` (an upload as it arrives)."""
        result = None
        first = True
        async for piece in ops.gathered(data) if isinstance(data, AsyncIterable) else _each(ops.pieces(data)):
            result = await self._sandbox._call(ops.write_part(path, piece, first, self._wait))
            first = False
        return result  # type: ignore[return-value]

    async def list(self, path: str, depth: int = 1) -> list[EntryInfo]:
        return await self._sandbox._call(ops.list_files(path, depth, self._wait))

    async def get_info(self, path: str) -> EntryInfo:
        return await self._sandbox._call(ops.file_info(path, self._wait))

    async def exists(self, path: str) -> bool:
        return await self._sandbox._call(ops.file_exists(path, self._wait))

    async def remove(self, path: str) -> None:
        await self._sandbox._call(ops.remove_file(path, self._wait))

    async def make_dir(self, path: str) -> bool:
        return await self._sandbox._call(ops.make_dir(path, self._wait))

    async def rename(self, old_path: str, new_path: str) -> EntryInfo:
        return await self._sandbox._call(ops.rename(old_path, new_path, self._wait))

    async def watch_dir(
        self,
        path: str,
        on_event: Callable[[FilesystemEvent], Any],
        recursive: bool = False,
        on_exit: Callable[[Exception | None], Any] | None = None,
        timeout: float | None = 60,
    ) -> AsyncWatchHandle:
        """Call ``on_event`` for each event in directory ``path`` until ``stop()``.

        As in E2B, the watch ends by itself after ``timeout`` seconds (``None``
        or 0: never), with ``TimeoutException`` passed to ``on_exit``; ``on_exit``
        gets ``None`` after ``stop()`` or when the directory is removed.
        Raises ``NotFoundException`` for a missing path, ``InvalidArgumentException`` for a file.
        """
        operation = ops.WatchDir(path, recursive, on_event, timeout)
        stream, request_id = await self._sandbox._open(operation)
        return AsyncWatchHandle(self._sandbox, operation, stream, request_id, on_exit)


class AsyncWatchHandle:
    """A directory watch delivering events to its callback from a task on the caller's loop."""

    def __init__(self, sandbox: AsyncSandbox, operation: ops.WatchDir, stream: AsyncStream, request_id: int, on_exit: Callable[[Exception | None], Any] | None) -> None:
        self._sandbox = sandbox
        self._operation = operation
        self._stream = stream
        self._request_id = request_id
        self._on_exit = on_exit
        self._ended = False
        self._task = asyncio.ensure_future(self._deliver())

    async def _deliver(self) -> None:
        error: Exception | None = None
        try:
            while True:
                header, payload = await self._stream.get(None)
                if header["type"] in protocol.TERMINAL:
                    self._ended = True
                    self._operation.finish(header)
                    break
                await _fire(self._operation.feed(header, payload))
        except asyncio.CancelledError:
            if self._on_exit is not None:
                await _fire([(self._on_exit, None)])
            raise
        except Exception as exc:  # noqa: BLE001 - a failed watch or callback ends the watch; on_exit hears why
            error = exc
            if not self._ended:
                self._end_in_sandbox()
        if self._on_exit is not None:
            await _fire([(self._on_exit, error)])

    def _end_in_sandbox(self) -> None:
        self._ended = True
        self._sandbox._core.cancel(self._request_id)
        self._sandbox._core.connection.forget(self._request_id)

    async def stop(self) -> None:
        """End the watch; returns once ``on_exit`` ran (idempotent)."""
        core = self._sandbox._core
        if not self._ended and core.running:
            core.cancel(self._request_id)  # a paused sandbox gets it when resumed
            await asyncio.wait([self._task], timeout=0 if core.paused else STOP_WAIT)
            if not self._ended:  # a paused or hung sandbox: stop listening anyway
                self._end_in_sandbox()
                self._task.cancel()
        await asyncio.wait([self._task])


class AsyncCommandHandle:
    def __init__(self, sandbox: AsyncSandbox, operation: ops.CommandStream, stream: AsyncStream) -> None:
        self._sandbox = sandbox
        self._operation = operation
        self._stream = stream

    @property
    def pid(self) -> int:
        assert self._operation.pid is not None
        return self._operation.pid

    async def wait(self, on_stdout: Callable[[str], Any] | None = None, on_stderr: Callable[[str], Any] | None = None) -> CommandResult:
        if self._operation.terminal is not None:
            return self._operation.finish(self._operation.terminal)
        self._operation.callbacks.update({"on_stdout": on_stdout, "on_stderr": on_stderr})
        while True:
            try:
                header, payload = await self._stream.get(self._operation.wait)
            except asyncio.TimeoutError:
                raise timeout_error("command", self._operation.wait) from None
            if header["type"] in protocol.TERMINAL:
                return self._operation.finish(header)
            await _fire(self._operation.feed(header, payload))

    async def kill(self) -> bool:
        return await self._sandbox.commands.kill(self.pid)

    async def send_stdin(self, data: str | bytes) -> None:
        await self._sandbox.commands.send_stdin(self.pid, data)

    async def close_stdin(self) -> None:
        await self._sandbox.commands.close_stdin(self.pid)


class AsyncCommands:
    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sandbox = sandbox

    async def run(
        self,
        cmd: str,
        background: bool = False,
        envs: dict[str, str] | None = None,
        cwd: str | None = None,
        on_stdout: Callable[[str], Any] | None = None,
        on_stderr: Callable[[str], Any] | None = None,
        stdin: bool | None = None,
        timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
    ) -> Any:
        use_stdin = background if stdin is None else stdin
        operation = ops.RunCommand(cmd, envs, cwd, use_stdin, None if background and timeout == DEFAULT_COMMAND_TIMEOUT else timeout)
        handle = await self._start(operation)
        if background:
            return handle
        return await handle.wait(on_stdout, on_stderr)

    async def connect(self, pid: int, timeout: float | None = 60) -> AsyncCommandHandle:
        """Follow a command started earlier; see ``Commands.connect``."""
        return await self._start(ops.connect_command(pid, timeout))

    async def _start(self, operation: ops.CommandStream) -> AsyncCommandHandle:
        stream, _ = await self._sandbox._open(operation)
        return AsyncCommandHandle(self._sandbox, operation, stream)

    async def send_stdin(self, pid: int, data: str | bytes) -> None:
        await self._sandbox._call(ops.send_stdin(pid, data))

    async def close_stdin(self, pid: int) -> None:
        await self._sandbox._call(ops.close_stdin(pid))

    async def kill(self, pid: int) -> bool:
        """SIGKILL the command and what it started; ``False`` if it was not running."""
        return await self.send_signal(pid, signal.SIGKILL)

    async def send_signal(self, pid: int, signum: int) -> bool:
        """Send ``signum`` to the command's process group; ``False`` if it was not running."""
        return await self._sandbox._call(ops.signal_command(pid, signum))

    async def list(self) -> list[ProcessInfo]:
        return await self._sandbox._call(ops.process_list(60.0))
