"""E2B's control plane (the REST API behind ``E2B_API_URL``), on our manager.

Shapes follow E2B's OpenAPI spec as the official SDK's generated client
reads it: camelCase fields, 201 on create, 204 on kill, ``{code, message}``
errors.
"""

from __future__ import annotations

import datetime
import urllib.parse
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from sandcell.server.deps import current_team, json_object, manager_of, optional_number, string_map
from sandcell.server.errors import ApiError
from sandcell.server.manager import LiveSandbox, SandboxManager
from sandcell.server.store import LIVE_STATES, SandboxRecord, Team

# The newest envd the SDK knows: it then takes its current code paths
# (octet-stream uploads, file metadata, recursive watch).
ENVD_VERSION = "0.6.4"
CLIENT_ID = "sandcell"

router = APIRouter(tags=["e2b control plane"])


def body_schema(required: tuple[str, ...] = (), **properties: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI request body of a route that reads its JSON itself (the spec is what clients and the fuzz tests go by)."""
    schema = {"type": "object", "properties": properties, "required": list(required)}
    return {"requestBody": {"required": bool(required), "content": {"application/json": {"schema": schema}}}}


SECONDS = {"type": "number", "description": "seconds"}
STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}


def _time(moment: datetime.datetime | None) -> str:
    # E2B always has an end; a sandbox without a timeout reports a far one.
    return (moment or datetime.datetime(9999, 1, 1, tzinfo=datetime.UTC)).isoformat()


def sandbox_json(live: LiveSandbox) -> dict[str, Any]:
    return {
        "templateID": live.record.template,
        "sandboxID": live.id,
        "clientID": CLIENT_ID,
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": live.access_token,
        "alias": live.record.template,
    }


def listed_json(record: SandboxRecord) -> dict[str, Any]:
    return {
        "templateID": record.template,
        "alias": record.template,
        "sandboxID": record.id,
        "clientID": CLIENT_ID,
        "startedAt": _time(record.started_at),
        "endAt": _time(record.end_at),
        "cpuCount": record.limits.get("cpus", 1),
        "memoryMB": record.limits.get("memory_mb", 0),
        "diskSizeMB": record.limits.get("disk_mb", 0),
        "state": record.state,
        "envdVersion": ENVD_VERSION,
        "metadata": record.metadata,
    }


def detail_json(live: LiveSandbox) -> dict[str, Any]:
    return listed_json(live.record) | {"envdAccessToken": live.access_token, "allowInternetAccess": live.record.allow_internet}


CREATE_BODY = body_schema(
    ("templateID",), templateID={"type": "string"}, timeout=SECONDS, metadata=STRINGS, envVars=STRINGS, allowInternetAccess={"type": "boolean"}
)


@router.post("/sandboxes", status_code=201, openapi_extra=CREATE_BODY)
@router.post("/v2/sandboxes", status_code=201, openapi_extra=CREATE_BODY)
async def create(request: Request, team: Team = Depends(current_team)) -> JSONResponse:
    body = await json_object(request)
    template = body.get("templateID")
    if not isinstance(template, str):
        raise ApiError(400, "templateID is required")
    allow_internet = body.get("allowInternetAccess")
    network = body.get("network") or {}
    if isinstance(network, dict) and network.get("allowPublicTraffic") is False:
        allow_internet = False
    live = await manager_of(request).create(
        team,
        template=template,
        timeout=optional_number(body, "timeout"),
        metadata=string_map(body, "metadata"),
        envs=string_map(body, "envVars"),
        allow_internet=allow_internet is True,
    )
    return JSONResponse(sandbox_json(live), status_code=201)


def _metadata_query(raw: str | None) -> dict[str, str]:
    # The SDK sends metadata as one url-encoded "k=v&k2=v2" string.
    return dict(urllib.parse.parse_qsl(raw or "", keep_blank_values=True))


def _states(raw: str | None) -> tuple[str, ...]:
    if not raw:
        return LIVE_STATES
    states = tuple(state for state in raw.split(",") if state)
    unknown = set(states) - set(LIVE_STATES)
    if unknown:
        raise ApiError(400, f"unknown state(s) {sorted(unknown)}; use running or paused")
    return states


@router.get("/v2/sandboxes")
@router.get("/sandboxes")
async def list_sandboxes(
    request: Request, metadata: str | None = None, state: str | None = None, limit: int | None = None, team: Team = Depends(current_team)
) -> JSONResponse:
    records = manager_of(request).records(team, _states(state), _metadata_query(metadata))
    if limit is not None and limit > 0:
        records = records[:limit]
    return JSONResponse([listed_json(record) for record in records])


@router.get("/sandboxes/{sandbox_id}")
async def get_sandbox(sandbox_id: str, request: Request, team: Team = Depends(current_team)) -> JSONResponse:
    return JSONResponse(detail_json(manager_of(request).get(team, sandbox_id)))


@router.delete("/sandboxes/{sandbox_id}", status_code=204)
async def kill(sandbox_id: str, request: Request, team: Team = Depends(current_team)) -> Response:
    manager = manager_of(request)
    await manager.kill(manager.get(team, sandbox_id))
    return Response(status_code=204)


@router.post("/sandboxes/{sandbox_id}/timeout", status_code=204, openapi_extra=body_schema(("timeout",), timeout=SECONDS))
async def set_timeout(sandbox_id: str, request: Request, team: Team = Depends(current_team)) -> Response:
    manager = manager_of(request)
    live = manager.get(team, sandbox_id)
    timeout = optional_number(await json_object(request), "timeout")
    if timeout is None:
        raise ApiError(400, "timeout is required")
    await manager.set_timeout(live, timeout)
    return Response(status_code=204)


@router.post("/sandboxes/{sandbox_id}/refreshes", status_code=204, openapi_extra=body_schema(duration=SECONDS))
async def refresh(sandbox_id: str, request: Request, team: Team = Depends(current_team)) -> Response:
    manager = manager_of(request)
    live = manager.get(team, sandbox_id)
    duration = optional_number(await json_object(request, required=False), "duration")
    await manager.set_timeout(live, duration or manager.config.default_timeout)
    return Response(status_code=204)


@router.post("/sandboxes/{sandbox_id}/pause", status_code=204)
async def pause(sandbox_id: str, request: Request, team: Team = Depends(current_team)) -> Response:
    manager = manager_of(request)
    await manager.pause(manager.get(team, sandbox_id))
    return Response(status_code=204)


async def _resume(manager: SandboxManager, live: LiveSandbox, timeout: float | None) -> JSONResponse:
    was_paused = live.paused
    await manager.resume(live, timeout)
    return JSONResponse(sandbox_json(live), status_code=201 if was_paused else 200)


@router.post("/sandboxes/{sandbox_id}/resume", status_code=201, openapi_extra=body_schema(timeout=SECONDS))
async def resume(sandbox_id: str, request: Request, team: Team = Depends(current_team)) -> JSONResponse:
    manager = manager_of(request)
    live = manager.get(team, sandbox_id)
    if not live.paused:
        raise ApiError(409, f"sandbox {sandbox_id} is not paused")
    return await _resume(manager, live, optional_number(await json_object(request, required=False), "timeout"))


@router.post("/sandboxes/{sandbox_id}/connect", openapi_extra=body_schema(timeout=SECONDS))
@router.post("/v2/sandboxes/{sandbox_id}/connect", openapi_extra=body_schema(timeout=SECONDS))
async def connect(sandbox_id: str, request: Request, team: Team = Depends(current_team)) -> JSONResponse:
    manager = manager_of(request)
    live = manager.get(team, sandbox_id)
    timeout = optional_number(await json_object(request, required=False), "timeout")
    if timeout is not None and not live.paused and live.record.end_at is not None:
        # Connecting never shortens the life of a running sandbox.
        remaining = (live.record.end_at - datetime.datetime.now(datetime.UTC)).total_seconds()
        timeout = timeout if timeout > remaining else None
    return await _resume(manager, live, timeout)


@router.post("/sandboxes/{sandbox_id}/fork", status_code=201, openapi_extra=body_schema(count={"type": "integer"}, timeout=SECONDS))
async def fork(sandbox_id: str, request: Request, team: Team = Depends(current_team)) -> JSONResponse:
    manager = manager_of(request)
    live = manager.get(team, sandbox_id)
    body = await json_object(request, required=False)
    count = 1 if body.get("count") is None else body["count"]
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 10:
        raise ApiError(400, "count must be an integer from 1 to 10")
    results: list[dict[str, Any]] = []
    for _ in range(count):
        try:
            results.append({"sandbox": sandbox_json(await manager.fork(team, live, optional_number(body, "timeout")))})
        except ApiError as exc:
            results.append({"error": {"code": exc.status, "message": exc.message}})
    return JSONResponse(results, status_code=201)


@router.get("/sandboxes/{sandbox_id}/metrics")
async def metrics(sandbox_id: str, request: Request, team: Team = Depends(current_team)) -> JSONResponse:
    live = manager_of(request).get(team, sandbox_id)
    sample = await live.sandbox.get_metrics()
    return JSONResponse(
        [
            {
                "timestamp": sample.timestamp.isoformat(),
                "timestampUnix": int(sample.timestamp.timestamp()),
                "cpuCount": sample.cpu_count,
                "cpuUsedPct": sample.cpu_used_pct,
                "memUsed": sample.mem_used,
                "memTotal": sample.mem_total,
                "memCache": sample.mem_cache,
                "diskUsed": sample.disk_used,
                "diskTotal": sample.disk_total,
            }
        ]
    )


UNSUPPORTED = {
    "/sandboxes/{sandbox_id}/snapshots": "snapshots",
    "/sandboxes/{sandbox_id}/network": "changing a sandbox's network policy",
    "/sandboxes/{sandbox_id}/logs": "sandbox logs",
    "/v2/sandboxes/{sandbox_id}/logs": "sandbox logs",
    "/snapshots": "snapshots",
    "/templates": "building templates (sandcell has two built in: base and code-interpreter-v1)",
    "/v2/templates": "building templates (sandcell has two built in: base and code-interpreter-v1)",
    "/volumes": "volumes",
    "/secrets": "secrets",
}


def _not_supported(what: str) -> Any:
    async def answer(request: Request, team: Team = Depends(current_team)) -> JSONResponse:
        raise ApiError(501, f"sandcell does not support {what} yet")

    return answer


for _path, _what in UNSUPPORTED.items():
    router.add_api_route(_path, _not_supported(_what), methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    router.add_api_route(_path + "/{rest:path}", _not_supported(_what), methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
