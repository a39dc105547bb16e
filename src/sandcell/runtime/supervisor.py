"""The supervisor: the one process inside a sandbox that the host talks to.

It reads request frames on stdin and writes event frames on stdout (see
``sandcell.protocol``), and owns everything in the sandbox: code contexts,
commands and file operations. Requests run concurrently, each as a task;
each ends with exactly one ``done`` or ``fail`` frame.

When the host goes away (EOF on stdin) the supervisor exits, and with it the
sandbox: it is the main process of the sandbox's pid namespace.
"""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import shutil
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from sandcell import protocol
from sandcell.protocol import HOME, WORK_DIR, normalize_language

from . import files, watch
from .aio import PIPE_READ
from .commands import Commands
from .contexts import CONTEXT_CLASSES, Context, Runtime, python_zygote, start_context, working_directory
from .hardening import set_dumpable, set_name
from .spares import Spares

# E2B's code interpreter lists a Python and a JavaScript context from the start.
# Those not in the policy's ``prestart`` are listed at once and started by their
# first run (a Node process costs ~50 MiB), from the sandbox's spare if it keeps one.
LISTED_DEFAULTS = ("python", "javascript")

Handler = Callable[["Supervisor", dict[str, Any], bytes, Callable[..., Awaitable[None]]], Awaitable[Any]]
HANDLERS: dict[str, Handler] = {}


def handler(op: str) -> Callable[[Handler], Handler]:
    def register(function: Handler) -> Handler:
        HANDLERS[op] = function
        return function

    return register


def error_name(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "Timeout"
    if isinstance(exc, FileNotFoundError):
        return "NotFound"
    if isinstance(exc, FileExistsError):
        return "AlreadyExists"
    if isinstance(exc, PermissionError):
        return "PermissionDenied"
    if isinstance(exc, (IsADirectoryError, NotADirectoryError, ValueError, KeyError, TypeError)):
        return "InvalidArgument"
    if isinstance(exc, (ProcessLookupError, LookupError)):
        return "NotFound"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "DiskFull"
    if isinstance(exc, OSError) and exc.errno in (errno.ENAMETOOLONG, errno.ELOOP, errno.EINVAL, errno.EROFS, errno.ENOTEMPTY, errno.EXDEV, errno.EILSEQ):
        return "InvalidArgument"  # the path asked for is at fault, not the sandbox
    return type(exc).__name__


class Window:
    """How many more frames a read may send before the host takes some (``protocol.READ_WINDOW``)."""

    def __init__(self, size: int) -> None:
        self.size = self.credit = size
        self.granted = asyncio.Event()

    async def take(self) -> None:
        while self.credit <= 0:
            self.granted.clear()
            await self.granted.wait()
        self.credit -= 1

    def grant(self, frames: int) -> None:
        self.credit = min(self.credit + max(frames, 0), self.size)
        self.granted.set()


class Supervisor:
    def __init__(self, config: dict[str, Any], zygote_link: socket.socket | None = None) -> None:
        self.zygote_link = zygote_link
        self.home = config.get("home", HOME)
        self.runtime = Runtime(
            python=config["python"],
            stage=config["stage"],
            acorn=config["acorn"],
            amaro=config["amaro"],
            work_dir=config.get("work_dir", WORK_DIR),
            base_env=config["env"],
            output_limit=int(config.get("output_limit", 16 * 1024 * 1024)),
            kill_grace=float(config.get("kill_grace", 3.0)),
            preload=tuple(config.get("preload", ())),
            memory_mb=int(config.get("memory_mb", 0)),
            site_dirs=tuple(config.get("site_dirs", ())),
        )
        os.makedirs(self.runtime.work_dir, mode=0o700, exist_ok=True)
        seed_matplotlib_cache(config.get("mpl_cache"), self.runtime.base_env.get("MPLCONFIGDIR"))
        self.contexts: dict[str, Context] = {}
        self.defaults: dict[str, Context] = {}
        self.commands = Commands(self.runtime.base_env, self.runtime.output_limit)
        self.tasks: dict[Any, asyncio.Task[Any]] = {}
        self.writer: asyncio.StreamWriter | None = None
        self.write_lock = asyncio.Lock()
        self.prestart = config.get("prestart", ["python"])
        self.spares = Spares(self.runtime, self.home, config.get("spares", []))
        self.default_lock = asyncio.Lock()
        self.windows: dict[Any, Window] = {}  # the reads under way, by request id

    async def send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        assert self.writer is not None
        async with self.write_lock:
            self.writer.write(protocol.encode(header, payload))
            await self.writer.drain()

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=protocol.MAX_PAYLOAD)
        requests, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(0, "rb", 0))
        # asyncio reads 256 KiB at a time: a buffer glibc maps and unmaps per read (a pipe holds 64 KiB).
        requests.max_size = PIPE_READ  # type: ignore[attr-defined]
        transport, proto = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, os.fdopen(1, "wb", 0))
        self.writer = asyncio.StreamWriter(transport, proto, None, loop)
        zygote = python_zygote(self.runtime, self.home)
        try:
            if self.zygote_link is not None:
                zygote.adopt(self.zygote_link)
            else:
                await zygote.start()
            self.runtime.zygote = zygote
        except OSError as exc:
            print(f"sandcell supervisor: no Python zygote ({exc}); contexts start cold", file=sys.stderr)
        # Ready means ready: the default contexts exist before the host hears
        # hello, so code the sandbox runs first cannot starve them (a fork bomb).
        for outcome in await asyncio.gather(*(self.default_context(language) for language in self.prestart), return_exceptions=True):
            if isinstance(outcome, BaseException):
                print(f"sandcell supervisor: a default context failed to start: {outcome}", file=sys.stderr)
        for language in LISTED_DEFAULTS:
            if language not in self.defaults:
                context = self.defaults[language] = CONTEXT_CLASSES[language](self.runtime, self.home, {})
                self.contexts[context.id] = context
        await self.send({"type": "hello", "pid": os.getpid()})
        self.spares.fill()
        while True:
            try:
                prefix = await reader.readexactly(protocol.HEADER.size)
            except asyncio.IncompleteReadError:
                break
            head_len, payload_len = protocol.parse_lengths(prefix)
            header = protocol.parse_header(await reader.readexactly(head_len))
            payload = await reader.readexactly(payload_len) if payload_len else b""
            request_id = header.get("id")
            self.tasks[request_id] = asyncio.ensure_future(self.dispatch(request_id, header, payload))
        await self.shutdown()

    async def shutdown(self) -> None:
        if self.runtime.zygote is not None:
            self.runtime.zygote.stop()
        await self.spares.stop()
        await self.commands.stop_all()
        for context in self.contexts.values():
            await context.stop()

    async def dispatch(self, request_id: Any, header: dict[str, Any], payload: bytes) -> None:
        async def emit(event: dict[str, Any], data: bytes = b"") -> None:
            await self.send({**event, "id": request_id}, data)

        try:
            op = header.get("op")
            function = HANDLERS.get(op or "")
            if function is None:
                raise ValueError(f"unknown operation {op!r}")
            result = await function(self, header, payload, emit)
            await emit({"type": protocol.DONE, **(result or {})})
        except asyncio.CancelledError:
            await emit({"type": protocol.FAIL, "error": {"name": "Cancelled", "message": "the request was cancelled"}})
        except Exception as exc:  # noqa: BLE001 - whatever a request raises is its FAIL answer
            await emit({"type": protocol.FAIL, "error": {"name": error_name(exc), "message": str(exc) or type(exc).__name__}})
        finally:
            self.tasks.pop(request_id, None)

    # -- contexts -----------------------------------------------------------
    async def default_context(self, language: str) -> Context:
        async with self.default_lock:
            context = self.defaults.get(language)
            if context is None:
                context = self.defaults[language] = await self.new_context(language, self.home, {})
        return context

    async def new_context(self, language: str, cwd: str, env: dict[str, str]) -> Context:
        """A started context: the language's spare if there is one, else a new start."""
        context = await self.spares.take(language, cwd, env)
        if context is None:
            context = await start_context(self.runtime, language, cwd, env)
        self.contexts[context.id] = context
        return context

    async def ready(self, context: Context) -> Context:
        """``context`` to run code in: a listed default never started yet becomes the language's spare, if any, in the same place and with the same id."""
        if context.started:
            return context
        async with self.default_lock:
            if context.started or self.contexts.get(context.id) is not context:
                return self.contexts.get(context.id, context)
            spare = await self.spares.take(context.language, context.cwd, context.env)
            if spare is None:
                return context  # its first run starts it
            spare.id = context.id
            self.contexts[context.id] = spare
            self.defaults = {language: spare if default is context else default for language, default in self.defaults.items()}
            return spare

    async def restart_defaults(self) -> None:
        """Restart the default contexts so they take the current environment (their state is lost); one not started yet will take it when it starts."""

        async def restart(context: Context) -> None:
            async with context.lock:
                await context.restart()

        await asyncio.gather(*(restart(context) for context in self.defaults.values() if context.started))

    def context(self, context_id: str) -> Context:
        try:
            return self.contexts[context_id]
        except KeyError:
            raise LookupError(f"no code context {context_id!r}") from None


@handler("run_code")
async def run_code(sup: Supervisor, request: dict[str, Any], payload: bytes, emit: Any) -> dict[str, Any]:
    if request.get("context"):
        context = sup.context(request["context"])
        if request.get("language") and normalize_language(request["language"]) != context.language:
            raise ValueError(f"context {context.id} runs {context.language}, not {request['language']}")
    else:
        context = await sup.default_context(normalize_language(request.get("language")))
    context = await sup.ready(context)
    timeout = request.get("timeout")
    return await context.execute(request["code"], request.get("env") or {}, float(timeout) if timeout else None, emit, bool(request.get("silent")))


@handler("resync")
async def resync(sup: Supervisor, request: dict[str, Any], payload: bytes, emit: Any) -> dict[str, Any]:
    """A new host took over from one that died: end what the old one asked for, then mark where its frames end."""
    marker = protocol.RESYNC_MARK + bytes.fromhex(request["marker"])
    mine = asyncio.current_task()
    orphans = [task for task in sup.tasks.values() if task is not mine]
    for task in orphans:
        task.cancel()
    if orphans:
        await asyncio.wait(orphans, timeout=sup.runtime.kill_grace + 2)
    assert sup.writer is not None
    async with sup.write_lock:
        sup.writer.write(marker)
        await sup.writer.drain()
    return {}


@handler("cancel")
async def cancel(sup: Supervisor, request: dict[str, Any], payload: bytes, emit: Any) -> dict[str, Any]:
    task = sup.tasks.get(request["target"])
    # A second cancel must not land inside the first one's clean-up (which
    # interrupts the context and waits for it): only the first counts.
    if task is not None and not task.cancelling():
        task.cancel()
    return {"cancelled": task is not None}


@handler("create_context")
async def create_context(sup: Supervisor, request: dict[str, Any], payload: bytes, emit: Any) -> dict[str, Any]:
    language = normalize_language(request.get("language"))
    cwd = working_directory(files.resolve(request.get("cwd") or sup.home, sup.home))
    context = await sup.new_context(language, cwd, request.get("env") or {})
    return {"context": context.describe()}


@handler("set_env")
async def set_env(sup: Supervisor, request: dict[str, Any], payload: bytes, emit: Any) -> dict[str, Any]:
    """Add sandbox-wide environment variables, as ``envs`` at create time would have.

    A pooled sandbox is started before its envs are known and gets them
    here, before it is handed out. They apply to every context and command
    started from now on, and to the default contexts, which restart (a fork
    for Python). Modules the zygote preloaded were imported before: what
    they read from the environment at import time stays as it was.
    """
    env = request.get("env") or {}
    if not all(isinstance(name, str) and isinstance(value, str) for name, value in env.items()):
        raise ValueError("env must map str to str")
    sup.runtime.base_env.update(env)
    await sup.restart_defaults()
    return {}


@handler("list_contexts")
async def list_contexts(sup: Supervisor, request: dict[str, Any], payload: bytes, emit: Any) -> dict[str, Any]:
    return {"contexts": [context.describe() for context in sup.contexts.values()]}


@handler("restart_context")
async def restart_context(sup: Supervisor, request: dict[str, Any], payload: bytes, emit: Any) -> dict[str, Any]:
    context = sup.context(request["context"])
    context.interrupt("interrupted: the context is restarting")
    async with context.lock:
        if context.started:  # one not started yet has nothing to forget
            await context.restart()
    return {"context": context.describe()}


@handler("remove_context")
async def remove_context(sup: Supervisor, request: dict[str, Any], payload: bytes, emit: Any) -> dict[str, Any]:
    context = sup.context(request["context"])
    sup.contexts.pop(context.id)
    for language, default in list(sup.defaults.items()):
        if default is context:
            del sup.defaults[language]
    await context.stop()
    return {}


# -- files --------------------------------------------------------------------
@handler("files.read")
async def files_read(sup: Supervisor, request: dict[str, Any], payload: bytes, emit: Any) -> dict[str, Any]:
    """A regular file (a FIFO with ``fifo``, for ``fork``) as ``data`` frames, after an ``opened``
    frame with its size; links are followed only with ``follow``, and at most ``limit`` bytes are
    sent. The host takes the frames at its pace: see ``protocol.READ_WINDOW``."""
    path = files.resolve(request["path"], sup.home)
    limit = request.get("limit")
    limit = None if limit is None else int(limit)
    reading = await asyncio.to_thread(files.open_for_read, path, bool(request.get("follow")), bool(request.get("fifo")), limit)
    window = sup.windows[request.get("id")] = Window(protocol.READ_WINDOW)
    try:
        await emit({"type": "opened", "size": reading.size})
        size = 0
        async for chunk in files.read_chunks(reading, path, limit):
            await window.take()
            size += len(chunk)
            await emit({"type": "data"}, chunk)
    finally:
        sup.windows.pop(request.get("id"), None)
        reading.close()
    return {"size": size}


@handler("files.more")
async def files_more(sup: Supervisor, request: dict[str, Any], payload: bytes, emit: Any) -> dict[str, Any]:
    """The host took ``frames`` more of read ``target``'s frames (a read that ended is no matter)."""
    window = sup.windows.get(request["target"])
    if window is not None:
        window.grant(int(request["frames"]))
    return {}


@handler("files.write")
async def files_write(sup: Supervisor, request: dict[str, Any], payload: bytes, emit: Any) -> dict[str, Any]:
    path = files.resolve(request["path"], sup.home)
    return {"entry": await asyncio.to_thread(files.write, path, payload, bool(request.get("append")))}


@handler("files.list")
async def files_list(sup: Supervisor, request: dict[str, Any], payload: bytes, emit: Any) -> dict[str, Any]:
    path = files.resolve(request["path"], sup.home)
    return {"entries": await asyncio.to_thread(files.list_dir, path, int(request.get("depth") or 1))}


@handler("files.stat")
async def files_stat(sup: Supervisor, request: dict[str, Any], payload: bytes, emit: Any) -> dict[str, Any]:
    return {"entry": files.entry(files.resolve(request["path"], sup.home))}


@handler("files.exists")
async def files_exists(sup: Supervisor, request: dict[str, Any], payload: bytes, emit: Any) -> dict[str, Any]:
    return {"exists": os.path.lexists(files.resolve(request["path"], sup.home))}


@handler("files.remove")
async def files_remove(sup: Supervisor, request: dict[str, Any], payload: bytes, emit: Any) -> dict[str, Any]:
    await asyncio.to_thread(files.remove, files.resolve(request["path"], sup.home))
    return {}


@handler("files.make_dir")
async def files_make_dir(sup: Supervisor, request: dict[str, Any], payload: bytes, emit: Any) -> dict[str, Any]:
    return {"created": files.make_dir(files.resolve(request["path"], sup.home))}


@handler("files.rename")
async def files_rename(sup: Supervisor, request: dict[str, Any], payload: bytes, emit: Any) -> dict[str, Any]:
    source = files.resolve(request["path"], sup.home)
    destination = files.resolve(request["destination"], sup.home)
    return {"entry": files.rename(source, destination)}


@handler("files.usage")
async def files_usage(sup: Supervisor, request: dict[str, Any], payload: bytes, emit: Any) -> dict[str, Any]:
    """Used and total bytes of the filesystem holding ``path`` (``/home/user``: a size-capped tmpfs)."""
    stats = os.statvfs(files.resolve(request.get("path") or sup.home, sup.home))
    return {"used": (stats.f_blocks - stats.f_bfree) * stats.f_frsize, "total": stats.f_blocks * stats.f_frsize}


@handler("files.watch")
async def files_watch(sup: Supervisor, request: dict[str, Any], payload: bytes, emit: Any) -> dict[str, Any]:
    """Stream ``events`` frames until cancelled (the host stops the watch), the
    directory goes away, or ``timeout`` seconds pass; ``watching`` confirms the start."""
    timeout = request.get("timeout")
    with watch.DirectoryWatch(files.resolve(request["path"], sup.home), bool(request.get("recursive"))) as watcher:
        await emit({"type": "watching"})
        try:
            async with asyncio.timeout(float(timeout) if timeout else None):
                async for batch in watcher.batches():
                    await emit({"type": "events", "events": batch})
        except TimeoutError:
            raise TimeoutError(f"the watch ended after its timeout of {timeout:g} s") from None
    return {}


# -- commands -------------------------------------------------------------------
@handler("command.run")
async def command_run(sup: Supervisor, request: dict[str, Any], payload: bytes, emit: Any) -> dict[str, Any]:
    if request.get("cwd"):
        request["cwd"] = files.resolve(request["cwd"], sup.home)
    return await sup.commands.run(request, emit)


@handler("command.connect")
async def command_connect(sup: Supervisor, request: dict[str, Any], payload: bytes, emit: Any) -> dict[str, Any]:
    timeout = request.get("timeout")
    return await sup.commands.connect(int(request["pid"]), float(timeout) if timeout else None, emit)


@handler("command.stdin")
async def command_stdin(sup: Supervisor, request: dict[str, Any], payload: bytes, emit: Any) -> dict[str, Any]:
    await sup.commands.send_stdin(int(request["pid"]), payload, bool(request.get("close")))
    return {}


@handler("command.kill")
async def command_kill(sup: Supervisor, request: dict[str, Any], payload: bytes, emit: Any) -> dict[str, Any]:
    return {"killed": sup.commands.kill(int(request["pid"]), int(request.get("signal") or signal.SIGKILL))}


@handler("command.list")
async def command_list(sup: Supervisor, request: dict[str, Any], payload: bytes, emit: Any) -> dict[str, Any]:
    return {"commands": sup.commands.list()}


@handler("ping")
async def ping(sup: Supervisor, request: dict[str, Any], payload: bytes, emit: Any) -> dict[str, Any]:
    return {}


def seed_matplotlib_cache(source: str | None, target: str | None) -> None:
    """Copy the image's font cache so the first plot doesn't rebuild it (~1 s)."""
    if not source or not target or not os.path.isdir(source):
        return
    os.makedirs(target, exist_ok=True)
    for name in os.listdir(source):
        if name.endswith(".json"):
            shutil.copyfile(os.path.join(source, name), os.path.join(target, name))


def apply_rlimits(limits: dict[str, int]) -> None:
    for name, value in limits.items():
        which = getattr(resource, "RLIMIT_" + name.upper())
        resource.setrlimit(which, (value, value))


def main() -> None:
    run()


def read_config() -> dict[str, Any]:
    """The host's first frame on stdin: what this sandbox is (never in argv or the environment, which others may read)."""
    with os.fdopen(0, "rb", buffering=0, closefd=False) as stdin:  # unbuffered: nothing past the frame is taken
        frame = protocol.read_frame(stdin)
    if frame is None or frame[0].get("op") != "config" or not isinstance(frame[0].get("config"), dict):
        raise SystemExit("sandcell supervisor: the host sent no config")
    config: dict[str, Any] = frame[0]["config"]
    return config


def run(zygote_link: socket.socket | None = None) -> None:
    """Serve the host on fds 0 and 1; ``zygote_link`` reaches a zygote forked before this (see ``forkserver``)."""
    set_dumpable(False)
    set_name("sandcell-super")
    if os.getsid(0) != os.getpid():
        os.setsid()  # process group 2, which no process of the sandbox can join or signal (see seccomp)
    config = read_config()
    apply_rlimits(config.get("rlimits", {}))
    # Our own stderr goes to the host's diagnostics; contexts get pipes of their own.
    sys.stderr = os.fdopen(2, "w", buffering=1)
    asyncio.run(Supervisor(config, zygote_link).serve())
