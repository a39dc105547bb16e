"""What a client may ask of the server: limits within the operator's maxima and
the team's share, inputs checked at the edge, every error as ``{code, message}``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2b_code_interpreter import Sandbox as E2BSandbox
from fastapi import FastAPI
from serving import Keys, Server, start_server
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from sandcell import InvalidArgumentException, Limits, Sandbox
from sandcell.isolation import DEFAULT_TEMPLATE
from sandcell.server.errors import ERROR_HANDLERS, ApiError, CatchAll
from sandcell.server.manager import SandboxManager, ServerConfig
from sandcell.server.store import Store

BAD_ENV_NAMES = ["", "A\x01B", "A=B", "A\0B", "1ABC", "A B", "A\nB"]


@pytest.fixture
def api(server: Server, keys: Keys) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"X-API-Key": keys.alpha}, timeout=60) as client:
        yield client


@pytest.fixture
def sandbox_id(api: httpx.Client) -> Iterator[str]:
    created = api.post("/v1/sandboxes", json={"timeout": 120})
    assert created.status_code == 201, created.text
    yield created.json()["sandbox_id"]
    api.delete(f"/v1/sandboxes/{created.json()['sandbox_id']}")


def assert_error(response: httpx.Response, status: int, *fragments: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"code", "message"} and body["code"] == status, body
    for fragment in fragments:
        assert fragment.lower() in body["message"].lower(), body["message"]


# -- 7: operator maxima per sandbox and per team ----------------------------------------


@pytest.mark.parametrize(
    ("asked", "named"),
    [
        ({"limits": {"memory_mb": 1_000_000}}, "--max-memory-mb"),
        ({"limits": {"cpus": 1000}}, "--max-cpus"),
        ({"limits": {"pids": 50_000}}, "--max-pids"),
        ({"limits": {"disk_mb": 1_000_000}}, "--max-disk-mb"),
        ({"limits": {"open_files": 10_000_000}}, "--max-open-files"),
        ({"limits": {"output_mb": 100_000}}, "--max-output-mb"),
        ({"timeout": 10**9}, "--max-timeout"),
    ],
)
def test_limits_above_the_servers_maxima_are_refused(api: httpx.Client, asked: dict, named: str) -> None:
    before = {item["sandbox_id"] for item in api.get("/v1/sandboxes").json()}
    assert_error(api.post("/v1/sandboxes", json=asked), 400, named)
    assert {item["sandbox_id"] for item in api.get("/v1/sandboxes").json()} == before


@pytest.mark.slow
def test_a_team_cannot_pass_its_share_even_with_concurrent_creates(tmp_path: Path) -> None:
    db = tmp_path / "server.db"
    alpha, beta, gamma = (Store(db).create_key(team)[1] for team in ("alpha", "beta", "gamma"))
    shares = ["--max-sandboxes", "2", "--max-team-memory-mb", "1024", "--max-server-memory-mb", "2048", "--max-memory-mb", "1024"]
    server = start_server(db, tmp_path / "server.log", extra=shares)
    try:

        def create(key: str, memory_mb: int) -> httpx.Response:
            return httpx.post(server.url + "/v1/sandboxes", headers={"X-API-Key": key}, json={"timeout": 60, "limits": {"memory_mb": memory_mb}}, timeout=60)

        with concurrent.futures.ThreadPoolExecutor(5) as threads:
            answers = list(threads.map(lambda _: create(alpha, 256), range(5)))
        assert sorted(answer.status_code for answer in answers) == [201, 201, 429, 429, 429], [answer.text for answer in answers]
        assert_error(next(answer for answer in answers if answer.status_code == 429), 429, "--max-sandboxes")
        assert_error(create(alpha, 2048), 400, "--max-memory-mb")

        assert create(beta, 1024).status_code == 201  # another team has its own share
        assert_error(create(beta, 512), 429, "--max-team-memory-mb")
        assert_error(create(gamma, 768), 503, "--max-server-memory-mb")  # 512 + 1024 are held of the server's 2048
        assert create(gamma, 512).status_code == 201
    finally:
        server.stop()


@pytest.mark.slow
def test_server_pool_keeps_only_its_kind_and_stays_in_the_memory_budget(tmp_path: Path) -> None:
    """20 create+kill cycles with other limits used to leave two warm sandboxes per kind, outside any budget."""
    config = ServerConfig(pool_size=2, max_server_memory_mb=2048, kill_on_exit=True)

    async def scenario() -> None:
        manager = SandboxManager(Store(tmp_path / "server.db"), config)
        await manager.start()
        assert manager.pool is not None
        team = manager.store.team("alpha", create=True)
        assert team is not None
        try:
            for n in range(4):
                live = await manager.create(team, limits=Limits(memory_mb=200 + n))
                await manager.kill(live)
            await asyncio.sleep(2)
            assert list(manager.pool._ready) == [(Limits(), False, DEFAULT_TEMPLATE)], "the pool keeps kinds the operator did not configure"

            deadline = time.monotonic() + 60
            while manager.pool.ready() < 2:
                assert time.monotonic() < deadline, "the pool did not fill"
                await asyncio.sleep(0.1)
            big = await manager.create(team, limits=Limits(memory_mb=1536))  # a cold start: the pool gives way
            while manager.pool._starting is not None:  # a start under way is dropped when it ends, if over budget
                assert time.monotonic() < deadline + 30
                await asyncio.sleep(0.1)
            for _ in range(20):
                assert manager.memory_mb() + manager.pool.memory_mb() <= 2048, "the pool holds memory past the server's budget"
                await asyncio.sleep(0.1)
            with pytest.raises(ApiError) as refused:
                await manager.create(team)
            assert refused.value.status == 503 and "--max-server-memory-mb" in refused.value.message
            await manager.kill(big)
        finally:
            await manager.close()

    asyncio.run(scenario())


# -- 13: no sandbox opens with an empty access token ---------------------------------------


@pytest.mark.slow
def test_a_registry_from_before_tokens_gets_fresh_ones(tmp_path: Path) -> None:
    db = tmp_path / "server.db"
    key = Store(db).create_key("legacy")[1]
    server = start_server(db, tmp_path / "server.log", extra=["--orphan-grace", "60"])
    options = {"api_key": key, "api_url": server.url, "sandbox_url": server.url}
    sandbox = E2BSandbox.create(timeout=120, **options)
    sandbox.run_code("kept = 'yes'")
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    with sqlite3.connect(db) as old:  # the registry as it was before it kept tokens
        old.execute("ALTER TABLE sandboxes DROP COLUMN access_token")

    server = start_server(db, tmp_path / "server.log", port=int(server.url.rsplit(":", 1)[1]))
    try:
        token = Store(db).sandbox(sandbox.sandbox_id).access_token
        assert len(token) >= 24
        headers = {"E2b-Sandbox-Id": sandbox.sandbox_id, "E2b-Sandbox-Port": "49983", "X-Access-Token": ""}
        # Refused as any wrong token is: like an id that does not exist (see test_tenant_isolation).
        assert_error(httpx.get(server.url + "/files", params={"path": "/etc/hostname"}, headers=headers), 502, "access token does not match")
        again = E2BSandbox.connect(sandbox.sandbox_id, **options)  # the owner gets the new token
        assert again.run_code("kept").text == "yes"
        again.kill()
    finally:
        server.stop()


# -- 16: every error is JSON, a sandbox that cannot start included ------------------------


@pytest.mark.slow
def test_a_server_without_its_image_answers_json(tmp_path: Path) -> None:
    db = tmp_path / "server.db"
    key = Store(db).create_key("imageless")[1]
    server = start_server(db, tmp_path / "server.log", env={"SANDCELL_HOME": str(tmp_path / "no-image")})
    try:
        answer = httpx.post(server.url + "/v2/sandboxes", headers={"X-API-Key": key}, json={"templateID": "base"}, timeout=30)
        assert_error(answer, 502, "not set up")
        assert_error(httpx.post(server.url + "/v1/sandboxes", headers={"X-API-Key": key}, json={}, timeout=30), 502, "not set up")
        with pytest.raises(Exception, match="not set up"):  # the SDK's own exception, not a JSONDecodeError
            E2BSandbox.create(api_key=key, api_url=server.url, sandbox_url=server.url)
        assert server.alive()
    finally:
        server.stop()


def test_an_unexpected_exception_is_a_json_500_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("a bug with a secret path /srv/x")

    control = FastAPI(exception_handlers=ERROR_HANDLERS)
    control.add_api_route("/broken", broken)
    plain = Starlette(routes=[Route("/broken", broken)], exception_handlers=ERROR_HANDLERS)  # as the data-plane apps

    async def bare(scope: Scope, receive: Receive, send: Send) -> None:  # no framework at all
        raise RuntimeError("a bug with a secret path /srv/x")

    async def call(app: object) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=CatchAll(app)), base_url="http://server") as client:  # type: ignore[arg-type]
            return await client.get("/broken")

    for app in (control, plain, bare):
        caplog.clear()
        answer = asyncio.run(call(app))
        assert_error(answer, 500, "internal server error", "incident")
        assert "/srv/x" not in answer.text, "internal details stay in the log"
        logged = [record for record in caplog.records if record.exc_info]
        assert len(logged) == 1 and "a bug with a secret path" in str(logged[0].exc_info[1])


# -- 18: bad input is refused at the edge --------------------------------------------------


@pytest.mark.parametrize("name", BAD_ENV_NAMES)
def test_bad_env_names_are_refused_at_create(api: httpx.Client, name: str) -> None:
    started = time.monotonic()
    assert_error(api.post("/v2/sandboxes", json={"templateID": "base", "envVars": {name: "x"}}), 400, "envs")
    assert_error(api.post("/v1/sandboxes", json={"envs": {name: "x"}}), 400, "envs")
    assert time.monotonic() - started < 5


def test_bad_values_are_refused_in_sandbox_routes(api: httpx.Client, sandbox_id: str) -> None:
    path = f"/v1/sandboxes/{sandbox_id}"
    for name in BAD_ENV_NAMES:
        assert_error(api.post(path + "/code", json={"code": "1", "envs": {name: "1"}}), 400, "envs")
        assert_error(api.post(path + "/contexts", json={"envs": {name: "1"}}), 400, "envs")
        assert_error(api.post(path + "/commands", json={"cmd": "true", "envs": {name: "1"}}), 400, "envs")
    assert_error(api.post(path + "/code", json={"code": "1", "envs": {"A": "nul\0inside"}}), 400, "NUL")
    assert_error(api.post(path + "/contexts", json={"cwd": ""}), 400, "cwd")
    assert_error(api.post(path + "/commands", json={"cmd": "pwd", "cwd": ""}), 400, "cwd")
    assert_error(api.get(path + "/files", params={"path": ""}), 400, "path")
    assert_error(api.get(path + "/files", params={"path": "x" * 300}), 400, "too long")  # was a 502 (ENAMETOOLONG)
    assert_error(api.post(path + "/fork", json={"timeout": 4e-69}), 400, "timeout")
    assert_error(api.post(path + "/timeout", json={"timeout": 1e300}), 400, "timeout")
    assert_error(api.post(path + "/code", json={"code": "1", "timeout": -1}), 400, "timeout")
    nan = {"content-type": "application/json"}
    assert_error(api.post(path + "/code", content=b'{"code": "1", "timeout": NaN}', headers=nan), 400, "timeout")
    assert_error(api.post("/v1/sandboxes", content=b'{"limits": {"cpus": NaN}}', headers=nan), 400, "cpus")
    assert_error(api.post("/v1/sandboxes", content=b'{"limits": {"cpus": Infinity}}', headers=nan), 400, "cpus")
    ran = api.post(path + "/code", json={"code": "import os; os.environ['GOOD_NAME']", "envs": {"GOOD_NAME": "fine"}})
    assert ran.status_code == 200 and "fine" in ran.text


def test_the_e2b_data_plane_refuses_bad_envs(api: httpx.Client) -> None:
    sandbox = E2BSandbox.create(timeout=120)
    try:
        headers = {"E2b-Sandbox-Id": sandbox.sandbox_id, "E2b-Sandbox-Port": "49999", "X-Access-Token": sandbox._envd_access_token}
        for name in BAD_ENV_NAMES:
            assert_error(api.post("/execute", json={"code": "1", "env_vars": {name: "x"}}, headers=headers), 400)
        assert sandbox.run_code("1 + 1").text == "2"
    finally:
        sandbox.kill()


def test_the_in_process_api_checks_the_same_way() -> None:
    for name in BAD_ENV_NAMES:
        with pytest.raises(InvalidArgumentException, match="envs"):
            Sandbox.create(envs={name: "x"}, pool=False)
    with pytest.raises(InvalidArgumentException, match="timeout"):
        Sandbox.create(timeout=float("nan"), pool=False)
    with Sandbox.create(timeout=60, pool=False) as sbx:
        with pytest.raises(InvalidArgumentException, match="envs"):
            sbx.run_code("1", envs={"A=B": "1"})
        with pytest.raises(InvalidArgumentException, match="cwd"):
            sbx.create_code_context(cwd="")
        with pytest.raises(InvalidArgumentException, match="cwd"):
            sbx.commands.run("pwd", cwd="")
        with pytest.raises(InvalidArgumentException, match="timeout"):
            sbx.run_code("1", timeout=float("inf"))
        with pytest.raises(ValueError, match="timeout"):  # what check_create raised before: callers catching it still do
            sbx.set_timeout(-1)
        assert sbx.run_code("1 + 1").text == "2"
