"""``AsyncSandbox``: the same surface as ``Sandbox``, with ``async``/``await``.

Callbacks may be plain functions or coroutine functions; both are called on
the caller's event loop, in order, while the code runs.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import IO, Any, Literal, Self, TypeVar

from sandcell.isolation import DEFAULT_TEMPLATE, Limits

from . import operations as ops
from .backend import SandboxBackend
from .bases import CommandHandleBase, SandboxBase
from .exchange import AsyncExchange, fire_async
from .factories import fork_backend, new_backend, server_backend
from .models import CommandResult, Context, EntryInfo, Execution, FilesystemEvent, ProcessInfo, SandboxInfo, SandboxMetrics, WriteInfo
from .operations import DEFAULT_COMMAND_TIMEOUT, DEFAULT_RUN_TIMEOUT
from .pool import SandboxPool

T = TypeVar("T")


async def _each(items: Iterable[bytes]) -> AsyncIterator[bytes]:
    for item in items:
        yield item


class AsyncSandbox(SandboxBase):
    """The sandbox of ``Sandbox``, with ``async``/``await``."""

    def __init__(self, backend: SandboxBackend) -> None:
        super().__init__(backend)
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
        template: str = DEFAULT_TEMPLATE,
    ) -> AsyncSandbox:
        """Start a sandbox, here or on a ``sandcell serve`` server; see ``Sandbox.create``."""
        backend = await asyncio.to_thread(new_backend, timeout, envs, limits, metadata, network, api_url, api_key, pool, template)
        await asyncio.to_thread(backend.wait_started)
        return cls(backend)

    @classmethod
    async def connect(cls, sandbox_id: str, api_url: str | None = None, api_key: str | None = None) -> AsyncSandbox:
        """Attach to a sandbox running on a ``sandcell serve`` server."""
        return cls(await asyncio.to_thread(server_backend, sandbox_id, api_url, api_key))

    async def _lifecycle(self, call: Callable[..., T], *args: Any) -> T:
        """A backend call that may wait on the network, made off the event loop."""
        if self._backend.blocks:
            return await asyncio.to_thread(call, *args)
        return call(*args)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.kill()

    # -- requests (see ``exchange.py``) -------------------------------------------
    async def _call(self, operation: ops.Operation[T]) -> T:
        return await AsyncExchange(self._backend, operation).run()

    async def _open(self, operation: ops.Operation[T]) -> AsyncExchange[T]:
        """Start a long-lived request and wait for its first event; see ``Sandbox._open``."""
        exchange = AsyncExchange(self._backend, operation)
        await exchange.start()
        return exchange

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
        return await self._call(ops.run_code(self._backend, code, language, context, callbacks, envs, timeout))

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
        return AsyncSandbox(await asyncio.to_thread(fork_backend, self._backend, timeout))

    async def kill(self) -> None:
        await asyncio.to_thread(self._backend.kill, "it was killed")

    async def is_running(self) -> bool:
        return await self._lifecycle(lambda: self._backend.running)

    async def set_timeout(self, timeout: float | None) -> None:
        await self._lifecycle(self._backend.set_timeout, timeout)

    async def get_info(self) -> SandboxInfo:
        return await self._lifecycle(self._backend.info)

    async def pause(self) -> None:
        """Freeze the sandbox; see ``Sandbox.pause``."""
        await asyncio.to_thread(self._backend.pause)

    async def resume(self) -> None:
        await asyncio.to_thread(self._backend.resume)

    async def get_metrics(self) -> SandboxMetrics:
        disk = await self._call(ops.disk_usage(60.0))
        return ops.metrics(await self._lifecycle(self._backend.usage), disk)

    async def memory_usage(self) -> int | None:
        """Bytes of memory the sandbox uses now (processes and files), if known."""
        return await self._lifecycle(self._backend.memory_bytes)


class AsyncFilesystem:
    def __init__(self, sandbox: AsyncSandbox, request_timeout: float = 60.0) -> None:
        self._sandbox = sandbox
        self._wait = request_timeout

    async def read(self, path: str, format: Literal["text", "bytes", "stream"] = "text", *, limit: int | None = None, follow_links: bool = True) -> Any:
        """See ``Filesystem.read``; ``stream`` gives an async iterator of ``bytes`` chunks."""
        operation = ops.ReadFile(path, format, self._wait, ops.read_limit(self._sandbox._backend.policy.limits) if limit is None else limit, follow_links)
        if format == "stream":
            return (await self._sandbox._open(operation)).chunks(operation)
        return await self._sandbox._call(operation)

    async def write(self, path: str, data: str | bytes | IO[Any] | AsyncIterable[bytes]) -> WriteInfo:
        """See ``Filesystem.write``; ``data`` may also be an async iterable of ``bytes`` (an upload as it arrives)."""
        result = None
        first = True
        async for piece in ops.gathered(data) if isinstance(data, AsyncIterable) else _each(ops.pieces(data)):
            result = await self._sandbox._call(ops.write_part(path, piece, first, self._wait))
            first = False
        assert result is not None  # gathered() and pieces() give at least one
        return result

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
        return AsyncWatchHandle(await self._sandbox._open(ops.WatchDir(path, recursive, on_event, timeout)), on_exit)


class AsyncWatchHandle:
    """A directory watch delivering events to its callback from a task on the caller's loop."""

    def __init__(self, exchange: AsyncExchange[None], on_exit: Callable[[Exception | None], Any] | None) -> None:
        self._exchange = exchange
        self._on_exit = on_exit
        self._task = asyncio.ensure_future(self._deliver())

    async def _deliver(self) -> None:
        error: Exception | None = None
        try:
            await self._exchange.run()
        except asyncio.CancelledError:
            if self._on_exit is not None:
                await fire_async([(self._on_exit, None)])
            raise
        except Exception as exc:  # noqa: BLE001 - a failed watch or callback ends the watch; on_exit hears why
            error = exc
        if self._on_exit is not None:
            await fire_async([(self._on_exit, error)])

    async def stop(self) -> None:
        """End the watch; returns once ``on_exit`` ran (idempotent)."""
        exchange = self._exchange
        if not exchange.done and exchange.backend.stop_reason is None:
            exchange.cancel()  # a paused sandbox gets it when resumed
            await asyncio.wait([self._task], timeout=0 if exchange.backend.paused else ops.STOP_WAIT)
            if not exchange.done:  # a paused or hung sandbox: stop listening anyway
                exchange.close()
                self._task.cancel()
        await asyncio.wait([self._task])


class AsyncCommandHandle(CommandHandleBase[AsyncSandbox, AsyncExchange[CommandResult]]):
    """A command running in the background; see ``CommandHandle``."""

    async def wait(self, on_stdout: Callable[[str], Any] | None = None, on_stderr: Callable[[str], Any] | None = None) -> CommandResult:
        """See ``CommandHandle.wait``."""
        if self._follow(on_stdout, on_stderr):
            return await self._exchange.run()
        return self._exchange.outcome()

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
        handle = await self._start(ops.run_command(cmd, background, envs, cwd, stdin, timeout))
        if background:
            return handle
        return await handle.wait(on_stdout, on_stderr)

    async def connect(self, pid: int, timeout: float | None = 60) -> AsyncCommandHandle:
        """Follow a command started earlier; see ``Commands.connect``."""
        return await self._start(ops.connect_command(pid, timeout))

    async def _start(self, operation: ops.CommandStream) -> AsyncCommandHandle:
        return AsyncCommandHandle(self._sandbox, operation, await self._sandbox._open(operation))

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
