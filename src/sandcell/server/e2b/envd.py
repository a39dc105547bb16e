"""E2B's envd (port 49983): Connect RPC ``process.Process`` and ``filesystem.Filesystem``, plus ``/files`` and ``/health``.

The Connect services are the ones generated in the official ``e2b`` wheel,
served by ``connectrpc``; each method translates to one call on our
``AsyncSandbox``. The sandbox is the one the ``E2b-Sandbox-Id`` header names,
resolved and authorised once by the data-plane dispatcher.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import signal
import uuid
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from e2b.envd.filesystem import filesystem_connect as fsc
from e2b.envd.filesystem import filesystem_pb as fs
from e2b.envd.process import process_connect as pc
from e2b.envd.process import process_pb as pb
from protobuf import Oneof
from protobuf.wkt.google.protobuf.timestamp_pb import Timestamp
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandcell.protocol import HOME
from sandcell.sandbox import AsyncSandbox
from sandcell.sandbox.errors import kind_of
from sandcell.sandbox.models import (
    CommandExitException,
    EntryInfo,
    FileType,
    SandboxException,
)
from sandcell.server.deps import bounded_request, bounded_stream, current_sandbox, gunzipped, resolved_live, write_upload
from sandcell.server.errors import ERROR_HANDLERS, ApiError
from sandcell.server.manager import SandboxManager
from sandcell.server.streaming import Backlog, ClosingStream, dropped_notice

log = logging.getLogger("sandcell.server")
# The generated messages type each oneof alternative by its field name as a
# literal, which mypy does not infer from a plain ``Oneof("start", ...)``.
WatchStart = Oneof[Literal["start"], fs.WatchDirResponse.StartEvent]
WatchKeepAlive = Oneof[Literal["keepalive"], fs.WatchDirResponse.KeepAlive]
WatchEvent = Oneof[Literal["filesystem"], fs.FilesystemEvent]
StartEvent = Oneof[Literal["start"], pb.ProcessEvent.StartEvent]
DataEvent = Oneof[Literal["data"], pb.ProcessEvent.DataEvent]
EndEvent = Oneof[Literal["end"], pb.ProcessEvent.EndEvent]
Stdout = Oneof[Literal["stdout"], bytes]
Stderr = Oneof[Literal["stderr"], bytes]
LOGIN_SHELL = ("/bin/bash", "-l", "-c")
WATCH_BACKLOG = 10_000
KEEPALIVE_SECONDS = 30
DEADLINE_SLACK = 0.25
_KILLS: set[asyncio.Future[Any]] = set()  # kills in flight, held until done
EVENT_TYPES = {name.lower(): member for name, member in fs.EventType.__members__.items()}
# envd knows no devices, FIFOs or sockets: those are UNSPECIFIED (the SDK's type None).
FILE_TYPES = {FileType.FILE: fs.FileType.FILE, FileType.DIR: fs.FileType.DIRECTORY, FileType.SYMLINK: fs.FileType.SYMLINK}


@asynccontextmanager
async def connect_errors() -> AsyncIterator[None]:
    """Our sandbox exceptions as Connect error codes, which the SDK maps back to its own."""
    try:
        yield
    except SandboxException as exc:
        raise ConnectError(Code[kind_of(exc).connect_code], str(exc)) from exc


async def _spooled(part: UploadFile) -> AsyncIterator[bytes]:
    """A multipart file as the parser spooled it (to disk past 1 MiB), a MiB at a time."""
    while chunk := await part.read(1024 * 1024):
        yield chunk


def _absolute(path: str) -> str:
    return path if path.startswith("/") else os.path.join(HOME, path)


def entry_pb(entry: EntryInfo) -> fs.EntryInfo:
    return fs.EntryInfo(
        name=entry.name,
        type=FILE_TYPES.get(entry.type, fs.FileType.UNSPECIFIED),
        path=entry.path,
        size=entry.size,
        mode=entry.mode,
        permissions=entry.permissions,
        owner=entry.owner,
        group=entry.group,
        modified_time=Timestamp.from_datetime(entry.modified_time),
        symlink_target=entry.symlink_target,
        is_symlink=entry.symlink_target is not None,
    )


class Services:
    """The sandbox of each request, as the dispatcher resolved it; shared by both Connect services."""

    def __init__(self, manager: SandboxManager) -> None:
        self.manager = manager  # for the server's settings

    def sandbox(self, ctx: RequestContext[Any, Any]) -> AsyncSandbox:
        return current_sandbox.get().sandbox


class FilesystemService(Services, fsc.Filesystem):
    def __init__(self, manager: SandboxManager) -> None:
        super().__init__(manager)
        self.watchers: dict[str, Watcher] = {}

    async def stat(self, request: fs.StatRequest, ctx: RequestContext[Any, Any]) -> fs.StatResponse:
        async with connect_errors():
            return fs.StatResponse(entry=entry_pb(await self.sandbox(ctx).files.get_info(_absolute(request.path))))

    async def make_dir(self, request: fs.MakeDirRequest, ctx: RequestContext[Any, Any]) -> fs.MakeDirResponse:
        sandbox, path = self.sandbox(ctx), _absolute(request.path)
        async with connect_errors():
            if not await sandbox.files.make_dir(path):
                raise ConnectError(Code.ALREADY_EXISTS, f"{path} already exists")
            return fs.MakeDirResponse(entry=entry_pb(await sandbox.files.get_info(path)))

    async def move(self, request: fs.MoveRequest, ctx: RequestContext[Any, Any]) -> fs.MoveResponse:
        async with connect_errors():
            entry = await self.sandbox(ctx).files.rename(_absolute(request.source), _absolute(request.destination))
            return fs.MoveResponse(entry=entry_pb(entry))

    async def list_dir(self, request: fs.ListDirRequest, ctx: RequestContext[Any, Any]) -> fs.ListDirResponse:
        async with connect_errors():
            entries = await self.sandbox(ctx).files.list(_absolute(request.path), depth=request.depth or 1)
            return fs.ListDirResponse(entries=[entry_pb(entry) for entry in entries])

    async def remove(self, request: fs.RemoveRequest, ctx: RequestContext[Any, Any]) -> fs.RemoveResponse:
        async with connect_errors():
            await self.sandbox(ctx).files.remove(_absolute(request.path))
            return fs.RemoveResponse()

    async def watch_dir(self, request: fs.WatchDirRequest, ctx: RequestContext[Any, Any]) -> AsyncIterator[fs.WatchDirResponse]:
        events: asyncio.Queue[fs.FilesystemEvent] = asyncio.Queue(maxsize=WATCH_BACKLOG)
        async with connect_errors():
            handle = await self.sandbox(ctx).files.watch_dir(_absolute(request.path), lambda event: _offer(events, event), recursive=request.recursive)
        try:
            yield fs.WatchDirResponse(event=WatchStart("start", fs.WatchDirResponse.StartEvent()))
            while True:
                try:
                    event = await asyncio.wait_for(events.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield fs.WatchDirResponse(event=WatchKeepAlive("keepalive", fs.WatchDirResponse.KeepAlive()))
                else:
                    yield fs.WatchDirResponse(event=WatchEvent("filesystem", event))
        finally:
            await handle.stop()

    async def create_watcher(self, request: fs.CreateWatcherRequest, ctx: RequestContext[Any, Any]) -> fs.CreateWatcherResponse:
        sandbox = self.sandbox(ctx)
        for watcher_id, watcher in list(self.watchers.items()):
            if watcher.sandbox.stop_reason is not None:
                del self.watchers[watcher_id]
        events: asyncio.Queue[fs.FilesystemEvent] = asyncio.Queue(maxsize=WATCH_BACKLOG)
        async with connect_errors():
            handle = await sandbox.files.watch_dir(_absolute(request.path), lambda event: _offer(events, event), recursive=request.recursive)
        watcher_id = uuid.uuid4().hex
        self.watchers[watcher_id] = Watcher(sandbox, handle, events)
        return fs.CreateWatcherResponse(watcher_id=watcher_id)

    def _watcher(self, watcher_id: str, ctx: RequestContext[Any, Any]) -> Watcher:
        watcher = self.watchers.get(watcher_id)
        if watcher is None or watcher.sandbox is not self.sandbox(ctx):
            raise ConnectError(Code.NOT_FOUND, f"watcher {watcher_id} not found")
        return watcher

    async def get_watcher_events(self, request: fs.GetWatcherEventsRequest, ctx: RequestContext[Any, Any]) -> fs.GetWatcherEventsResponse:
        queue = self._watcher(request.watcher_id, ctx).events
        return fs.GetWatcherEventsResponse(events=[queue.get_nowait() for _ in range(queue.qsize())])

    async def remove_watcher(self, request: fs.RemoveWatcherRequest, ctx: RequestContext[Any, Any]) -> fs.RemoveWatcherResponse:
        watcher = self._watcher(request.watcher_id, ctx)
        del self.watchers[request.watcher_id]
        async with connect_errors():
            await watcher.handle.stop()
        return fs.RemoveWatcherResponse()


@dataclass
class Watcher:
    sandbox: AsyncSandbox
    handle: Any
    events: asyncio.Queue[fs.FilesystemEvent]


def _offer(queue: asyncio.Queue[fs.FilesystemEvent], event: Any) -> None:
    """Queue a watch event for the client; past the backlog, the oldest are dropped, not the server's memory."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(fs.FilesystemEvent(name=event.name, type=EVENT_TYPES[str(getattr(event.type, "value", event.type)).lower()]))


def _command_line(config: pb.ProcessConfig) -> str:
    """What bash runs: ``commands.run`` arrives as ``/bin/bash -l -c CMD``; anything else is exec'd as given."""
    args = list(config.args)
    if (config.cmd, *args[:2]) == LOGIN_SHELL and len(args) == 3:
        return args[2]
    return "exec " + shlex.join([config.cmd, *args])


def _start_event(pid: int) -> pb.ProcessEvent:
    return pb.ProcessEvent(event=StartEvent("start", pb.ProcessEvent.StartEvent(pid=pid)))


def _data_event(stream: Literal["stdout", "stderr"], text: str) -> pb.ProcessEvent:
    output = Stdout("stdout", text.encode()) if stream == "stdout" else Stderr("stderr", text.encode())
    return pb.ProcessEvent(event=DataEvent("data", pb.ProcessEvent.DataEvent(output=output)))


def _end_event(exit_code: int, error: str | None) -> pb.ProcessEvent:
    status = (
        f"exit status {exit_code}"
        if exit_code >= 0
        else f"signal: {signal.Signals(-exit_code).name.lower()[3:]}"
        if -exit_code in signal.valid_signals()
        else "killed"
    )
    return pb.ProcessEvent(event=EndEvent("end", pb.ProcessEvent.EndEvent(exit_code=exit_code, exited=exit_code >= 0, status=status, error=error)))


async def _events(handle: Any, wrap: Callable[[pb.ProcessEvent], Any], patience: float, deadline_ms: float | None = None) -> AsyncIterator[Any]:
    """A command's output as envd events, as it comes; the end event carries its exit code.

    Past ``deadline_ms`` (the client's Connect timeout on ``Start``) the
    command is killed, as envd does: that is what ``commands.run(timeout=)``
    means to E2B's SDKs. A client reading nothing for ``patience`` seconds
    loses the rest of the output (see ``Backlog``), not the end event.
    """
    queue: Backlog[pb.ProcessEvent | None] = Backlog(patience, lambda: _data_event("stderr", dropped_notice(patience)))
    loop = asyncio.get_running_loop()
    timeout = None if deadline_ms is None else deadline_ms / 1000
    deadline = None if timeout is None else loop.time() + timeout

    async def pump() -> None:
        try:
            result = await handle.wait(
                on_stdout=lambda text: queue.put(_data_event("stdout", text), len(text)),
                on_stderr=lambda text: queue.put(_data_event("stderr", text), len(text)),
            )
            queue.end(_end_event(result.exit_code, result.error))
        except CommandExitException as exc:
            queue.end(_end_event(exc.exit_code, exc.error))
        finally:
            queue.end(None)

    task = asyncio.create_task(pump())
    try:
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), None if deadline is None else max(deadline - loop.time(), 0))
            except TimeoutError:
                raise ConnectError(Code.DEADLINE_EXCEEDED, f"the command ran past its timeout of {timeout:g} s and was killed") from None
            if event is None:
                break
            yield wrap(event)
        await task  # re-raises a failure of the sandbox itself
    finally:
        task.cancel()
        # The client's own timer may close the stream a moment before ours
        # fires; either way a command past its deadline dies. A client that
        # merely goes away leaves it running.
        if not task.done() and deadline is not None and loop.time() >= deadline - DEADLINE_SLACK:
            killing = asyncio.ensure_future(handle.kill())
            _KILLS.add(killing)
            killing.add_done_callback(_KILLS.discard)


class ProcessService(Services, pc.Process):
    def _pid(self, sandbox: AsyncSandbox, selector: pb.ProcessSelector | None) -> int:
        match selector.selector if selector is not None else None:
            case Oneof(field="pid", value=int(pid)):
                return pid
            case Oneof(field="tag", value=tag):
                raise ConnectError(Code.NOT_FOUND, f"no process with tag {tag!r}")
        raise ConnectError(Code.INVALID_ARGUMENT, "a process selector (pid or tag) is required")

    async def list(self, request: pb.ListRequest, ctx: RequestContext[Any, Any]) -> pb.ListResponse:
        async with connect_errors():
            processes = await self.sandbox(ctx).commands.list()
        return pb.ListResponse(
            processes=[
                pb.ProcessInfo(
                    pid=process.pid, tag=process.tag, config=pb.ProcessConfig(cmd=process.cmd, args=process.args, envs=process.envs, cwd=process.cwd)
                )
                for process in processes
            ]
        )

    async def start(self, request: pb.StartRequest, ctx: RequestContext[Any, Any]) -> AsyncIterator[pb.StartResponse]:
        if request.pty is not None:
            raise ConnectError(Code.UNIMPLEMENTED, "pseudo-terminals are not supported by sandcell; use commands.run")
        if request.process is None or not request.process.cmd:
            raise ConnectError(Code.INVALID_ARGUMENT, "process.cmd is required")
        sandbox = self.sandbox(ctx)
        config = request.process
        async with connect_errors():
            handle = await sandbox.commands.run(
                _command_line(config),
                background=True,
                envs=dict(config.envs),
                cwd=config.cwd or None,
                stdin=request.stdin is not False,
                timeout=None,
            )
        yield pb.StartResponse(event=_start_event(handle.pid))
        async with connect_errors():
            async for event in _events(handle, lambda event: pb.StartResponse(event=event), self.manager.config.client_patience, ctx.timeout_ms):
                yield event

    async def connect(self, request: pb.ConnectRequest, ctx: RequestContext[Any, Any]) -> AsyncIterator[pb.ConnectResponse]:
        sandbox = self.sandbox(ctx)
        pid = self._pid(sandbox, request.process)
        async with connect_errors():
            handle = await sandbox.commands.connect(pid)
        yield pb.ConnectResponse(event=_start_event(pid))
        async with connect_errors():
            async for event in _events(handle, lambda event: pb.ConnectResponse(event=event), self.manager.config.client_patience):
                yield event

    async def update(self, request: pb.UpdateRequest, ctx: RequestContext[Any, Any]) -> pb.UpdateResponse:
        raise ConnectError(Code.UNIMPLEMENTED, "pseudo-terminals are not supported by sandcell")

    async def _send(self, sandbox: AsyncSandbox, pid: int, data: pb.ProcessInput | None) -> None:
        match data.input if data is not None else None:
            case Oneof(field="stdin", value=chunk):
                async with connect_errors():
                    await sandbox.commands.send_stdin(pid, chunk)
            case Oneof(field="pty"):
                raise ConnectError(Code.UNIMPLEMENTED, "pseudo-terminals are not supported by sandcell")

    async def send_input(self, request: pb.SendInputRequest, ctx: RequestContext[Any, Any]) -> pb.SendInputResponse:
        sandbox = self.sandbox(ctx)
        await self._send(sandbox, self._pid(sandbox, request.process), request.input)
        return pb.SendInputResponse()

    async def stream_input(self, requests: AsyncIterator[pb.StreamInputRequest], ctx: RequestContext[Any, Any]) -> pb.StreamInputResponse:
        sandbox = self.sandbox(ctx)
        pid: int | None = None
        async for message in requests:
            match message.event:
                case Oneof(field="start", value=pb.StreamInputRequest.StartEvent() as start):
                    pid = self._pid(sandbox, start.process)
                case Oneof(field="data", value=pb.StreamInputRequest.DataEvent() as data) if pid is not None:
                    await self._send(sandbox, pid, data.input)
        return pb.StreamInputResponse()

    async def send_signal(self, request: pb.SendSignalRequest, ctx: RequestContext[Any, Any]) -> pb.SendSignalResponse:
        sandbox = self.sandbox(ctx)
        pid = self._pid(sandbox, request.process)
        async with connect_errors():
            if request.signal == pb.Signal.SIGTERM:
                delivered = await sandbox.commands.send_signal(pid, signal.SIGTERM)
            else:
                delivered = await sandbox.commands.kill(pid)
        if not delivered:
            raise ConnectError(Code.NOT_FOUND, f"process {pid} not found")
        return pb.SendSignalResponse()

    async def close_stdin(self, request: pb.CloseStdinRequest, ctx: RequestContext[Any, Any]) -> pb.CloseStdinResponse:
        sandbox = self.sandbox(ctx)
        async with connect_errors():
            await sandbox.commands.close_stdin(self._pid(sandbox, request.process))
        return pb.CloseStdinResponse()


# -- /files and /health: plain HTTP beside the Connect services ---------------------


def files_app(manager: SandboxManager) -> Starlette:
    live_of = resolved_live

    def path_of(request: Request) -> str:
        path = request.query_params.get("path")
        if not path:
            raise ApiError(400, "the path query parameter is required")
        return path

    async def download(request: Request) -> Response:
        """The file streamed as the client takes it (a few MiB of it on the server at most); refused
        before the answer starts if it is no regular file or too large."""
        path = path_of(request)
        chunks = await live_of(request).sandbox.files.read(_absolute(path), format="stream")
        name = os.path.basename(path)
        return ClosingStream(chunks, media_type="application/octet-stream", headers={"Content-Disposition": f'attachment; filename="{name}"'})

    async def write_one(sandbox: AsyncSandbox, path: str, chunks: AsyncIterator[bytes]) -> dict[str, str]:
        info = await write_upload(sandbox, _absolute(path), chunks)
        return {"name": info.name, "type": "file", "path": info.path}

    async def upload(request: Request) -> Response:
        """Each file streams into the sandbox as it arrives, in a slot of the team's (``upload_slot``)."""
        live = live_of(request)
        limit = manager.config.max_upload_bytes
        async with manager.upload_slot(live.record.team_id):
            if request.headers.get("content-type", "").startswith("multipart/form-data"):
                if int(request.headers.get("content-length") or 0) > limit:
                    raise ApiError(413, f"the upload is larger than the server's limit of {limit} bytes")
                written = []
                async with bounded_request(request, limit).form(max_files=1000, max_part_size=limit) as form:
                    for field_name, value in form.multi_items():
                        if isinstance(value, str):
                            continue
                        path = request.query_params.get("path") if len(form) == 1 and request.query_params.get("path") else value.filename
                        if not path:
                            raise ApiError(400, f"the part {field_name!r} names no file path")
                        written.append(await write_one(live.sandbox, path, _spooled(value)))
                return JSONResponse(written)
            path = path_of(request)
            body = bounded_stream(request, limit)
            if request.headers.get("content-encoding") == "gzip":
                body = gunzipped(body, limit)
            return JSONResponse([await write_one(live.sandbox, path, body)])

    async def health(request: Request) -> Response:
        return Response(status_code=204)

    return Starlette(
        routes=[Route("/files", download, methods=["GET"]), Route("/files", upload, methods=["POST"]), Route("/health", health)],
        exception_handlers=ERROR_HANDLERS,
    )


class UndecodableRequests:
    """Answer a request ``connectrpc`` fails to decode with a Connect ``invalid_argument``.

    On a body such as a JSON array, truncated JSON or gzip that is not, it
    raises a bare ``TypeError``, ``ValueError``, ``EOFError`` or ``zlib.error`` after answering ``unknown`` (a 500 for unary
    calls). Unary answers are small, so they are held until the call returns
    and replaced when it raised; a stream's error is already in its end message.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        streaming = dict(scope["headers"]).get(b"content-type", b"").startswith(b"application/connect+")
        held: list[Message] = []

        async def holding_send(message: Message) -> None:
            if streaming:
                await send(message)
            else:
                held.append(message)

        try:
            await self.app(scope, receive, holding_send)
        except (TypeError, ValueError, EOFError, zlib.error) as exc:
            log.info("undecodable Connect request: %s", exc)
            if not streaming:
                await JSONResponse({"code": "invalid_argument", "message": f"cannot decode the request: {exc}"}, status_code=400)(scope, receive, send)
            return
        for message in held:
            await send(message)


def envd_app(manager: SandboxManager) -> Starlette:
    process = pc.ProcessASGIApplication(ProcessService(manager))
    filesystem = fsc.FilesystemASGIApplication(FilesystemService(manager))
    return Starlette(
        routes=[
            Mount(process.path, app=UndecodableRequests(process)),
            Mount(filesystem.path, app=UndecodableRequests(filesystem)),
            Mount("/", app=files_app(manager)),
        ],
        exception_handlers=ERROR_HANDLERS,  # what escapes a Connect service too: JSON, not Starlette's text 500
    )
