"""sandcell's own REST API under ``/v1``, documented by the generated OpenAPI spec.

Lifecycle, code, files and commands for any HTTP client, plus one low-level
route, ``/requests``, that carries the supervisor's own frames: the Python
client (``Sandbox.create(api_url=...)``) runs the very same ``Sandbox`` code
over it as in-process, so the two cannot drift apart.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import io
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from sandcell import protocol
from sandcell.isolation import DEFAULT_TEMPLATE, Limits
from sandcell.sandbox.connection import Frame
from sandcell.sandbox.exchange import AsyncExchange
from sandcell.sandbox.models import CommandExitException
from sandcell.sandbox.operations import Tunnelled

from .deps import bounded_body, bounded_stream, current_team, manager_of, write_upload
from .errors import ApiError
from .manager import LiveSandbox
from .store import LIVE_STATES, SandboxRecord, Team
from .streaming import ClosingStream, execution_lines, until_gone

FRAMES = "application/x-sandcell-frames"
# Requests only the host itself may make: a client's own cancel goes through
# /requests/{id}/cancel, a resync would cut the server's stream, and the
# server grants a read's flow control (files.more) as it forwards the frames.
HOST_ONLY_OPS = frozenset({"cancel", "hello", "resync", "files.more"})
SMALL_FRAME = 1024 * 1024
router = APIRouter(prefix="/v1", tags=["sandcell"])


class LimitsIn(BaseModel):
    memory_mb: int | None = Field(default=None, description="memory for processes and files, MiB")
    cpus: float | None = None
    pids: int | None = None
    disk_mb: int | None = Field(default=None, description="size of /home/user and of /tmp, MiB each")
    open_files: int | None = None
    output_mb: int | None = Field(default=None, description="output one run may print before it is cut")


class CreateSandbox(BaseModel):
    template: str = Field(default=DEFAULT_TEMPLATE, description="code-interpreter-v1 (E2B's packages) or base (IPython, numpy, pandas, matplotlib)")
    timeout: float | None = Field(default=None, description="seconds until the sandbox is killed (server default if unset)")
    metadata: dict[str, str] = {}
    envs: dict[str, str] = {}
    limits: LimitsIn = LimitsIn()
    network: bool = Field(False, description="allow outbound network access")


class SandboxOut(BaseModel):
    sandbox_id: str
    template: str
    state: str
    started_at: datetime.datetime
    end_at: datetime.datetime | None
    metadata: dict[str, str]
    limits: dict[str, Any]
    network: bool
    reason: str | None = Field(default=None, description="why it ended, once it has")


class Timeout(BaseModel):
    timeout: float


class Fork(BaseModel):
    timeout: float | None = Field(default=None, description="the new sandbox's timeout (server default if unset)")


class RunCode(BaseModel):
    code: str
    language: str | None = Field(default=None, description="python (default), javascript, bash, r or java")
    context_id: str | None = None
    envs: dict[str, str] = {}
    timeout: float | None = Field(default=None, description="seconds before the code is interrupted (its state is kept)")


class CreateContext(BaseModel):
    language: str | None = None
    cwd: str | None = None
    envs: dict[str, str] = {}


class RunCommand(BaseModel):
    cmd: str = Field(description="run by bash -l -c")
    envs: dict[str, str] = {}
    cwd: str | None = None
    timeout: float | None = 60


class CommandOut(BaseModel):
    stdout: str
    stderr: str
    exit_code: int
    error: str | None = None


def sandbox_out(record: SandboxRecord) -> SandboxOut:
    return SandboxOut(
        sandbox_id=record.id,
        template=record.template,
        state=record.state,
        started_at=record.started_at,
        end_at=record.end_at,
        metadata=record.metadata,
        limits=record.limits,
        network=record.allow_internet,
        reason=record.reason,
    )


def _live(request: Request, sandbox_id: str, team: Team) -> LiveSandbox:
    return manager_of(request).get(team, sandbox_id)


# -- lifecycle ---------------------------------------------------------------------


@router.post("/sandboxes", status_code=201, response_model=SandboxOut)
async def create_sandbox(body: CreateSandbox, request: Request, team: Team = Depends(current_team)) -> SandboxOut:
    manager = manager_of(request)
    asked = {name: value for name, value in body.limits.model_dump().items() if value is not None}
    try:
        limits = Limits(**(manager.config.limits.to_dict() | asked))
    except (TypeError, ValueError) as exc:
        raise ApiError(400, str(exc)) from None
    live = await manager.create(team, body.template, body.timeout, body.metadata, body.envs, body.network, limits)
    return sandbox_out(live.record)


@router.get("/sandboxes", response_model=list[SandboxOut])
async def list_sandboxes(
    request: Request,
    state: list[Literal["running", "paused", "killed", "ended", "stopped", "lost"]] = Query(list(LIVE_STATES)),
    metadata: list[str] = Query([], description="key=value; repeat to require several"),
    team: Team = Depends(current_team),
) -> list[SandboxOut]:
    wanted = dict(item.partition("=")[::2] for item in metadata)
    return [sandbox_out(record) for record in manager_of(request).records(team, tuple(state), wanted)]


@router.get("/sandboxes/{sandbox_id}", response_model=SandboxOut)
async def get_sandbox(sandbox_id: str, request: Request, team: Team = Depends(current_team)) -> SandboxOut:
    return sandbox_out(_live(request, sandbox_id, team).record)


@router.delete("/sandboxes/{sandbox_id}", status_code=204)
async def kill_sandbox(sandbox_id: str, request: Request, team: Team = Depends(current_team)) -> Response:
    await manager_of(request).kill(_live(request, sandbox_id, team))
    return Response(status_code=204)


@router.post("/sandboxes/{sandbox_id}/timeout", response_model=SandboxOut)
async def set_timeout(sandbox_id: str, body: Timeout, request: Request, team: Team = Depends(current_team)) -> SandboxOut:
    live = _live(request, sandbox_id, team)
    await manager_of(request).set_timeout(live, body.timeout)
    return sandbox_out(live.record)


@router.post("/sandboxes/{sandbox_id}/fork", status_code=201, response_model=SandboxOut)
async def fork(sandbox_id: str, body: Fork, request: Request, team: Team = Depends(current_team)) -> SandboxOut:
    """A new sandbox with a copy of this one's /home/user and Python state; see ``Sandbox.fork``."""
    child = await manager_of(request).fork(team, _live(request, sandbox_id, team), body.timeout)
    return sandbox_out(child.record)


@router.post("/sandboxes/{sandbox_id}/pause", response_model=SandboxOut)
async def pause(sandbox_id: str, request: Request, team: Team = Depends(current_team)) -> SandboxOut:
    live = _live(request, sandbox_id, team)
    await manager_of(request).pause(live)
    return sandbox_out(live.record)


@router.post("/sandboxes/{sandbox_id}/resume", response_model=SandboxOut)
async def resume(sandbox_id: str, request: Request, team: Team = Depends(current_team)) -> SandboxOut:
    live = _live(request, sandbox_id, team)
    await manager_of(request).resume(live)
    return sandbox_out(live.record)


@router.get("/sandboxes/{sandbox_id}/metrics")
async def metrics(sandbox_id: str, request: Request, team: Team = Depends(current_team)) -> dict[str, Any]:
    sample = await _live(request, sandbox_id, team).sandbox.get_metrics()
    return dataclasses.asdict(sample)


@router.get("/sandboxes/{sandbox_id}/usage", include_in_schema=False)
async def host_usage(sandbox_id: str, request: Request, team: Team = Depends(current_team)) -> dict[str, Any]:
    """The host-side figures (cgroups) the Python client folds into ``get_metrics``."""
    live = _live(request, sandbox_id, team)
    return dataclasses.asdict(live.core.usage()) | {"oom": live.core.oom_reason()}


# -- code, contexts, files, commands --------------------------------------------------


@router.post("/sandboxes/{sandbox_id}/code", response_class=StreamingResponse, responses={200: {"content": {"application/x-ndjson": {}}}})
async def run_code(sandbox_id: str, body: RunCode, request: Request, team: Team = Depends(current_team)) -> Response:
    """Run code; the answer streams NDJSON lines as the code runs: stdout, stderr, result, error, number_of_executions, end_of_execution."""
    sandbox = _live(request, sandbox_id, team).sandbox
    return await execution_lines(
        request, sandbox, body.code, body.language, body.context_id, body.envs, body.timeout, manager_of(request).config.client_patience
    )


@router.post("/sandboxes/{sandbox_id}/contexts")
async def create_context(sandbox_id: str, body: CreateContext, request: Request, team: Team = Depends(current_team)) -> dict[str, str]:
    context = await _live(request, sandbox_id, team).sandbox.create_code_context(body.cwd, body.language, body.envs)
    return dataclasses.asdict(context)


@router.get("/sandboxes/{sandbox_id}/contexts")
async def list_contexts(sandbox_id: str, request: Request, team: Team = Depends(current_team)) -> list[dict[str, str]]:
    return [dataclasses.asdict(context) for context in await _live(request, sandbox_id, team).sandbox.list_code_contexts()]


@router.post("/sandboxes/{sandbox_id}/contexts/{context_id}/restart", status_code=204)
async def restart_context(sandbox_id: str, context_id: str, request: Request, team: Team = Depends(current_team)) -> Response:
    await _live(request, sandbox_id, team).sandbox.restart_code_context(context_id)
    return Response(status_code=204)


@router.delete("/sandboxes/{sandbox_id}/contexts/{context_id}", status_code=204)
async def remove_context(sandbox_id: str, context_id: str, request: Request, team: Team = Depends(current_team)) -> Response:
    await _live(request, sandbox_id, team).sandbox.remove_code_context(context_id)
    return Response(status_code=204)


@router.get("/sandboxes/{sandbox_id}/files", response_class=Response, responses={200: {"content": {"application/octet-stream": {}}}})
async def download(sandbox_id: str, request: Request, path: str, team: Team = Depends(current_team)) -> Response:
    """A regular file, streamed as the client takes it."""
    chunks = await _live(request, sandbox_id, team).sandbox.files.read(path, format="stream")
    return ClosingStream(chunks, media_type="application/octet-stream")


@router.put("/sandboxes/{sandbox_id}/files")
async def upload(sandbox_id: str, request: Request, path: str, team: Team = Depends(current_team)) -> dict[str, Any]:
    """Write the raw request body to ``path`` (parents are created), streamed in as it arrives."""
    live = _live(request, sandbox_id, team)
    manager = manager_of(request)
    async with manager.upload_slot(team.id):
        info = await write_upload(live.sandbox, path, bounded_stream(request, manager.config.max_upload_bytes))
    return dataclasses.asdict(info)


@router.get("/sandboxes/{sandbox_id}/files/list")
async def list_files(sandbox_id: str, request: Request, path: str, depth: int = 1, team: Team = Depends(current_team)) -> list[dict[str, Any]]:
    entries = await _live(request, sandbox_id, team).sandbox.files.list(path, depth)
    return [dataclasses.asdict(entry) for entry in entries]


@router.delete("/sandboxes/{sandbox_id}/files", status_code=204)
async def remove_file(sandbox_id: str, request: Request, path: str, team: Team = Depends(current_team)) -> Response:
    await _live(request, sandbox_id, team).sandbox.files.remove(path)
    return Response(status_code=204)


@router.post("/sandboxes/{sandbox_id}/commands", response_model=CommandOut)
async def run_command(sandbox_id: str, body: RunCommand, request: Request, team: Team = Depends(current_team)) -> CommandOut:
    """Run a command to its end; a non-zero exit is an answer, not an error."""
    sandbox = _live(request, sandbox_id, team).sandbox
    try:
        result = await sandbox.commands.run(body.cmd, envs=body.envs, cwd=body.cwd, timeout=body.timeout)
    except CommandExitException as exc:
        result = exc
    return CommandOut(stdout=result.stdout, stderr=result.stderr, exit_code=result.exit_code, error=result.error)


# -- the frame tunnel used by the Python client ------------------------------------------


async def _tunnel_frame(request: Request, team: Team) -> Frame:
    """The one frame a ``/requests`` body holds; any but a small one (a piece of a file) is read
    in one of the team's upload slots, as uploads are."""
    manager = manager_of(request)
    limit = protocol.HEADER.size + protocol.MAX_HEADER + min(manager.config.max_upload_bytes, protocol.MAX_PAYLOAD)
    small = 0 < int(request.headers.get("content-length") or 0) <= SMALL_FRAME
    async with contextlib.nullcontext() if small else manager.upload_slot(team.id):
        body = await bounded_body(request, limit)
    try:
        frame = protocol.read_frame(io.BytesIO(body))
    except (protocol.ProtocolError, EOFError, ValueError) as exc:
        raise ApiError(400, f"malformed frame: {exc}") from None
    if frame is None:
        raise ApiError(400, "the body holds no frame")
    return frame


@router.post("/sandboxes/{sandbox_id}/requests", include_in_schema=False)
async def supervisor_request(sandbox_id: str, request: Request, team: Team = Depends(current_team)) -> Response:
    """One supervisor request, in and out as protocol frames.

    The server gives the request its own id (answered first, in an
    ``accepted`` frame), so clients cannot reach each other's requests;
    cancelling goes through ``/requests/{id}/cancel``.
    """
    live = _live(request, sandbox_id, team)
    if live.paused:
        raise ApiError(409, f"sandbox {sandbox_id} is paused; resume it first")
    header, payload = await _tunnel_frame(request, team)
    if not isinstance(header.get("op"), str) or header["op"] in HOST_ONLY_OPS:
        raise ApiError(400, "the frame needs an op (cancel through /requests/{id}/cancel)")
    fields = {key: value for key, value in header.items() if key not in ("id", "op")}
    exchange = AsyncExchange(live.core, Tunnelled(header["op"], None, payload, **fields))

    async def next_frame() -> Frame | None:
        return None if exchange.terminal is not None else await exchange.next_frame(None)

    async def frames() -> AsyncIterator[bytes]:
        try:
            yield protocol.encode({"type": "accepted", "request": exchange.request_id})
            async for reply, data in until_gone(next_frame, request):
                yield protocol.encode(reply, data)
        finally:
            exchange.close()  # cancelled in the sandbox unless it ended

    return StreamingResponse(frames(), media_type=FRAMES)


@router.post("/sandboxes/{sandbox_id}/requests/{request_id}/cancel", status_code=204, include_in_schema=False)
async def cancel_request(sandbox_id: str, request_id: int, request: Request, team: Team = Depends(current_team)) -> Response:
    _live(request, sandbox_id, team).core.cancel(request_id)
    return Response(status_code=204)
