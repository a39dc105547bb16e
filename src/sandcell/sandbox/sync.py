"""``Sandbox``: the blocking API, shaped like ``e2b_code_interpreter.Sandbox``."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import IO, Any, Literal, Self, TypeVar

from sandcell.isolation import DEFAULT_TEMPLATE, Limits

from . import operations as ops
from .backend import SandboxBackend
from .bases import CommandHandleBase, SandboxBase
from .exchange import SyncExchange, fire
from .factories import fork_backend, new_backend, server_backend
from .models import CommandResult, Context, EntryInfo, Execution, FilesystemEvent, ProcessInfo, SandboxException, SandboxInfo, SandboxMetrics, WriteInfo
from .operations import DEFAULT_COMMAND_TIMEOUT, DEFAULT_RUN_TIMEOUT
from .pool import SandboxPool

T = TypeVar("T")


class Sandbox(SandboxBase):
    """An isolated machine for running untrusted code; see ``Sandbox.create``."""

    def __init__(self, backend: SandboxBackend) -> None:
        super().__init__(backend)
        self.files = Filesystem(self)
        self.commands = Commands(self)

    @classmethod
    def create(
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
    ) -> Sandbox:
        """Start a sandbox; it is killed after ``timeout`` seconds (``None``: never).

        With ``api_url`` (or ``SANDCELL_API_URL``) the sandbox runs on that
        ``sandcell serve``, authenticated by ``api_key`` (or ``SANDCELL_API_KEY``).

        ``pool``: a ``SandboxPool`` to take a ready sandbox from (about a
        round trip instead of a start; pandas already imported); ``None``,
        the process-wide pool if ``SANDCELL_POOL_SIZE`` is set; ``False``,
        always a cold start. Either way the sandbox is isolated alike.

        ``template``: what the sandbox has installed. ``code-interpreter-v1``
        (the default, as in E2B's code interpreter) has E2B's packages
        (scikit-learn, scipy, seaborn, plotly...); ``base`` only IPython,
        numpy, pandas and matplotlib.
        """
        backend = new_backend(timeout, envs, limits, metadata, network, api_url, api_key, pool, template)
        backend.wait_started()
        return cls(backend)

    @classmethod
    def connect(cls, sandbox_id: str, api_url: str | None = None, api_key: str | None = None) -> Sandbox:
        """Attach to a sandbox running on a ``sandcell serve`` server."""
        return cls(server_backend(sandbox_id, api_url, api_key))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def __repr__(self) -> str:
        return f"Sandbox({self.sandbox_id}{'' if self.is_running() else ', stopped'})"

    # -- requests (see ``exchange.py``) -------------------------------------------
    def _call(self, operation: ops.Operation[T]) -> T:
        return SyncExchange(self._backend, operation).run()

    def _open(self, operation: ops.Operation[T]) -> SyncExchange[T]:
        """Start a long-lived request (a background command, a watch, a read) and wait for its first event.

        A request that fails to start raises here; after that its frames are the handle's.
        """
        exchange = SyncExchange(self._backend, operation)
        exchange.start()
        return exchange

    # -- code ------------------------------------------------------------------
    def run_code(
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
        """Run ``code`` in a context (the language's default one unless given).

        Callbacks fire while the code runs. A ``timeout`` interrupts the code
        and keeps the context's state; the error is then ``TimeoutError``.
        """
        callbacks = {"on_stdout": on_stdout, "on_stderr": on_stderr, "on_result": on_result, "on_error": on_error}
        return self._call(ops.run_code(self._backend, code, language, context, callbacks, envs, timeout))

    def create_code_context(self, cwd: str | None = None, language: str | None = None, envs: dict[str, str] | None = None) -> Context:
        return self._call(ops.create_context(cwd, language, envs))

    def list_code_contexts(self) -> list[Context]:
        return self._call(ops.list_contexts())

    def restart_code_context(self, context: Context | str) -> None:
        self._call(ops.context_op("restart_context", context))

    def remove_code_context(self, context: Context | str) -> None:
        self._call(ops.context_op("remove_context", context))

    # -- lifecycle -------------------------------------------------------------
    def fork(self, timeout: float | None = 300) -> Sandbox:
        """A new, independent sandbox with a copy of this one's ``/home/user`` and Python state.

        The default Python context's variables, functions, classes, modules
        and open pyplot figures are copied (pickled with dill inside the
        sandboxes); objects that cannot be pickled are left behind with a
        warning. JavaScript and Bash state is not copied. Changes on either
        side are invisible to the other.
        """
        return Sandbox(fork_backend(self._backend, timeout))

    def kill(self) -> None:
        """Kill every process of the sandbox; its files are gone with it."""
        self._backend.kill("it was killed")

    def is_running(self) -> bool:
        return self._backend.running

    def set_timeout(self, timeout: float | None) -> None:
        self._backend.set_timeout(timeout)

    def get_info(self) -> SandboxInfo:
        return self._backend.info()

    def pause(self) -> None:
        """Freeze the sandbox: its processes stop, its timeout clock too; state is kept.

        Until ``resume()``, requests raise ``SandboxPausedException`` at once
        (see ``SandboxCore.pause`` for why not resume implicitly). Idempotent.
        """
        self._backend.pause()

    def resume(self) -> None:
        """Thaw a paused sandbox; its timeout goes on with the time it had left."""
        self._backend.resume()

    def get_metrics(self) -> SandboxMetrics:
        """CPU (since the previous call), memory and ``/home/user`` disk usage, like E2B's."""
        disk = self._call(ops.disk_usage(60.0))
        return ops.metrics(self._backend.usage(), disk)

    def memory_usage(self) -> int | None:
        """Bytes of memory the sandbox uses now (processes and files), if known."""
        return self._backend.memory_bytes()


class Filesystem:
    """Files inside the sandbox; relative paths start at ``/home/user``."""

    def __init__(self, sandbox: Sandbox, request_timeout: float = 60.0) -> None:
        self._sandbox = sandbox
        self._wait = request_timeout

    def read(self, path: str, format: Literal["text", "bytes", "stream"] = "text", *, limit: int | None = None, follow_links: bool = True) -> Any:
        """A regular file's contents: ``text``, ``bytes``, or ``stream`` (an iterator of ``bytes`` chunks,
        read from the sandbox as they are taken).

        Devices, FIFOs and sockets are refused (``InvalidArgumentException``),
        and so is a symbolic link unless ``follow_links``. A file larger than
        ``limit`` bytes (default: the sandbox's disk size, at least 1 GiB) is
        refused; one that grows while read is read to its size when opened.
        """
        operation = ops.ReadFile(path, format, self._wait, ops.read_limit(self._sandbox._backend.policy.limits) if limit is None else limit, follow_links)
        if format == "stream":
            return self._sandbox._open(operation).chunks(operation)
        return self._sandbox._call(operation)

    def write(self, path: str, data: str | bytes | IO[Any]) -> WriteInfo:
        """Write ``data`` (a readable file is read and sent a piece at a time) to ``path``, creating parents."""
        result = None
        for index, piece in enumerate(ops.pieces(data)):
            result = self._sandbox._call(ops.write_part(path, piece, index == 0, self._wait))
        assert result is not None  # pieces() gives at least one
        return result

    def list(self, path: str, depth: int = 1) -> list[EntryInfo]:
        return self._sandbox._call(ops.list_files(path, depth, self._wait))

    def get_info(self, path: str) -> EntryInfo:
        return self._sandbox._call(ops.file_info(path, self._wait))

    def exists(self, path: str) -> bool:
        return self._sandbox._call(ops.file_exists(path, self._wait))

    def remove(self, path: str) -> None:
        self._sandbox._call(ops.remove_file(path, self._wait))

    def make_dir(self, path: str) -> bool:
        """Create ``path`` and its parents; ``False`` if it already existed."""
        return self._sandbox._call(ops.make_dir(path, self._wait))

    def rename(self, old_path: str, new_path: str) -> EntryInfo:
        return self._sandbox._call(ops.rename(old_path, new_path, self._wait))

    def watch_dir(self, path: str, recursive: bool = False) -> WatchHandle:
        """Start collecting events in directory ``path``; fetch them with ``get_new_events()``.

        Events that happen after this returns are never missed. Raises
        ``NotFoundException`` for a missing path, ``InvalidArgumentException``
        for a file.
        """
        events: list[FilesystemEvent] = []
        operation = ops.WatchDir(path, recursive, events.append)
        return WatchHandle(self._sandbox._open(operation), events)


class WatchHandle:
    """A directory watch, polled like E2B's sync ``WatchHandle``; ``stop()`` ends it."""

    def __init__(self, exchange: SyncExchange[None], events: list[FilesystemEvent]) -> None:
        self._exchange = exchange
        self._events = events  # filled by the operation's callback
        self._stopped = False

    def get_new_events(self) -> list[FilesystemEvent]:
        """The events since the last call (or the start).

        After the watch ended on its own (the directory was removed), the last
        events come first, then ``[]``; if it ended with an error (the sandbox
        died), that error is raised once the events before it were fetched.
        """
        if self._stopped:
            raise SandboxException("the watcher is already stopped")
        fire(self._exchange.poll())
        events, self._events[:] = list(self._events), []
        if not events and self._exchange.terminal is not None:
            self._exchange.outcome()
        return events

    def stop(self) -> None:
        """End the watch in the sandbox (its inotify instance is closed); idempotent."""
        if self._stopped:
            return
        self._stopped = True
        exchange = self._exchange
        if exchange.terminal is None and exchange.backend.stop_reason is None and not exchange.backend.paused:
            exchange.drain(ops.STOP_WAIT)
        exchange.close()  # a paused sandbox gets the cancel when resumed


class CommandHandle(CommandHandleBase[Sandbox, SyncExchange[CommandResult]]):
    """A command running in the background: started here, or followed with ``commands.connect``."""

    def wait(self, on_stdout: Callable[[str], Any] | None = None, on_stderr: Callable[[str], Any] | None = None) -> CommandResult:
        """Wait for the exit; raises ``CommandExitException`` on a non-zero code.

        If no output or exit comes in time, the command is given up (cancelled, forgotten) and
        ``TimeoutException`` raised."""
        if self._follow(on_stdout, on_stderr):
            return self._exchange.run()
        return self._exchange.outcome()

    def kill(self) -> bool:
        return self._sandbox.commands.kill(self.pid)

    def send_stdin(self, data: str | bytes) -> None:
        self._sandbox.commands.send_stdin(self.pid, data)

    def close_stdin(self) -> None:
        self._sandbox.commands.close_stdin(self.pid)


class Commands:
    """Shell commands (``bash -l -c``) inside the sandbox."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    def run(
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
        """Run ``cmd``; returns a ``CommandResult``, or a ``CommandHandle`` if ``background``.

        A foreground command that exits non-zero raises ``CommandExitException``.
        Background commands get stdin unless ``stdin=False``.
        """
        handle = self._start(ops.run_command(cmd, background, envs, cwd, stdin, timeout))
        if background:
            return handle
        return handle.wait(on_stdout, on_stderr)

    def connect(self, pid: int, timeout: float | None = 60) -> CommandHandle:
        """Follow a command started earlier: its output from now on, and its exit.

        Any number of handles may follow one command; each gets all output
        from the moment it connected. ``timeout`` (``None`` or 0: unlimited)
        ends this following with ``TimeoutException``, not the command.
        Raises ``NotFoundException`` if no command has that pid.
        """
        return self._start(ops.connect_command(pid, timeout))

    def _start(self, operation: ops.CommandStream) -> CommandHandle:
        return CommandHandle(self._sandbox, operation, self._sandbox._open(operation))

    def send_stdin(self, pid: int, data: str | bytes) -> None:
        self._sandbox._call(ops.send_stdin(pid, data))

    def close_stdin(self, pid: int) -> None:
        self._sandbox._call(ops.close_stdin(pid))

    def kill(self, pid: int) -> bool:
        """SIGKILL the command and what it started; ``False`` if it was not running."""
        return self.send_signal(pid, signal.SIGKILL)

    def send_signal(self, pid: int, signum: int) -> bool:
        """Send ``signum`` (e.g. ``signal.SIGTERM``) to the command's process group; ``False`` if it was not running."""
        return self._sandbox._call(ops.signal_command(pid, signum))

    def list(self) -> list[ProcessInfo]:
        return self._sandbox._call(ops.process_list(60.0))
