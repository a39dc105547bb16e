"""Contexts through ``sandcell serve``: the defaults a new sandbox lists, TypeScript, and working directories,
with E2B's official Python SDK (sync and async) and the native REST API."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from e2b import InvalidArgumentException, SandboxException
from e2b_code_interpreter import AsyncSandbox, Sandbox
from sandboxes import SandboxFactory
from serving import Keys, Server

TYPED_CELL = """
interface Point { x: number; y: number }
enum Color { Red, Green = "green" }
function add<T extends number>(a: T, b: T): number { return a + b }
const origin: Point = { x: 1, y: 2 };
const total = add(origin.x, origin.y) as number
"""


@pytest.fixture
def sbx(make_e2b_sandbox: SandboxFactory[Sandbox]) -> Sandbox:
    return make_e2b_sandbox()


# -- E2B's sync SDK ---------------------------------------------------------------------------


def test_a_new_sandbox_lists_the_python_and_javascript_defaults(sbx: Sandbox) -> None:
    listed = sbx.list_code_contexts()
    assert [(ctx.language, ctx.cwd) for ctx in listed] == [("python", "/home/user"), ("javascript", "/home/user")]
    python, javascript = listed
    assert sbx.run_code("by_id = 'python default'", context=python).error is None
    assert sbx.run_code("by_id").text == "python default"
    assert sbx.run_code("const byId = 'javascript default'", context=javascript).error is None
    assert sbx.run_code("byId", language="js").text == "javascript default"
    assert [ctx.id for ctx in sbx.list_code_contexts()] == [python.id, javascript.id]


def test_typescript_with_the_sync_sdk(sbx: Sandbox) -> None:
    assert sbx.run_code("const message: string = 'Hello, World!'; console.log(message)", language="ts").logs.stdout == ["Hello, World!\n"]
    ctx = sbx.create_code_context(language="typescript")
    assert ctx.language == "typescript" and ctx.cwd == "/home/user"
    assert sbx.run_code(TYPED_CELL, context=ctx).error is None
    assert sbx.run_code("`${total} ${Color.Green}`", context=ctx).text == "3 green"
    assert sbx.run_code("import { join } from 'path'\nawait Promise.resolve(join('a', 'b'))", context=ctx).text == "a/b"
    assert sbx.run_code("const wrong: number = 'text' as any; typeof wrong", context=ctx).text == "string"
    error = sbx.run_code("let broken: number = ;", context=ctx).error
    assert (error.name, error.value) == ("SyntaxError", "Expression expected (1:21)")
    assert ctx.id in [listed.id for listed in sbx.list_code_contexts()]
    typescript = [listed for listed in sbx.list_code_contexts() if listed.language == "typescript"]
    assert len(typescript) == 2  # the one run_code(language="ts") made, and ctx
    with pytest.raises(InvalidArgumentException):
        sbx.run_code("1", language="ts", context=ctx)  # E2B's SDK refuses both


def test_working_directories_with_the_sync_sdk(sbx: Sandbox) -> None:
    ctx = sbx.create_code_context(language="python", cwd="/tmp/e2b/work")
    assert ctx.cwd == "/tmp/e2b/work"
    assert sbx.run_code("import os; os.getcwd()", context=ctx).text == "/tmp/e2b/work"
    last = sbx.list_code_contexts()[-1]
    assert (last.id, last.language, last.cwd) == (ctx.id, ctx.language, ctx.cwd)
    # E2B's SDK turns any 4xx but 404 into a SandboxException; the message is ours
    with pytest.raises(SandboxException, match=r"400 Bad Request.*cannot work in /root: it does not exist and cannot be created"):
        sbx.create_code_context(language="python", cwd="/root")


# -- E2B's async SDK --------------------------------------------------------------------------


def test_defaults_typescript_and_cwd_with_the_async_sdk() -> None:
    async def scenario() -> None:
        async with await AsyncSandbox.create(timeout=60) as sandbox:
            listed = await sandbox.list_code_contexts()
            assert [(ctx.language, ctx.cwd) for ctx in listed] == [("python", "/home/user"), ("javascript", "/home/user")]
            assert (await sandbox.run_code("process.cwd()", context=listed[1])).text == "/home/user"
            ctx = await sandbox.create_code_context(language="ts", cwd="/tmp/async-ts")
            assert (ctx.language, ctx.cwd) == ("typescript", "/tmp/async-ts")
            assert (await sandbox.run_code(TYPED_CELL + "total", context=ctx)).text == "3"
            assert (await sandbox.run_code("process.cwd()", language="typescript")).text == "/home/user"
            with pytest.raises(SandboxException, match="cannot work in /etc/hostname: it is not a directory"):
                await sandbox.create_code_context(cwd="/etc/hostname")

    asyncio.run(scenario())


# -- the native REST API ----------------------------------------------------------------------


def test_defaults_typescript_and_cwd_through_the_native_api(server: Server, keys: Keys) -> None:
    with httpx.Client(base_url=server.url, headers={"X-API-Key": keys.alpha}, timeout=60) as api:
        sandbox = api.post("/v1/sandboxes", json={"timeout": 60}).json()["sandbox_id"]
        try:
            path = f"/v1/sandboxes/{sandbox}"
            listed = api.get(path + "/contexts").json()
            assert [(ctx["language"], ctx["cwd"]) for ctx in listed] == [("python", "/home/user"), ("javascript", "/home/user")]
            ctx = api.post(path + "/contexts", json={"language": "ts", "cwd": "/tmp/native"}).json()
            assert (ctx["language"], ctx["cwd"]) == ("typescript", "/tmp/native")
            lines = api.post(path + "/code", json={"code": "const n: number = 41; n + 1", "context_id": ctx["id"]}).text
            assert '"text/plain": "42"' in lines or '"text": "42"' in lines, lines
            refused = api.post(path + "/contexts", json={"cwd": "/root"})
            assert refused.status_code == 400 and "cannot work in /root" in refused.text
        finally:
            api.delete(f"/v1/sandboxes/{sandbox}")
