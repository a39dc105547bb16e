"""TypeScript contexts through sandcell's own API: types stripped (amaro), never checked, run as JavaScript."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from sandcell import AsyncSandbox, Execution, Sandbox

TYPED_CELL = """
interface Point { x: number; y: number }
type Pair<T> = [T, T];
enum Color { Red, Green = "green", Blue = 4 }
function add<T extends number>(a: T, b: T): number { return a + b }
class Box<T> {
  constructor(private readonly value: T) {}
  get(): T { return this.value }
}
const origin: Point = { x: 1, y: 2 };
let pair: Pair<string> = ["a", "b"];
const widened = (origin as unknown) as { x: number };
add(origin.x, widened.x + 40)
"""


def ok(execution: Execution) -> Execution:
    assert execution.error is None, execution.error
    return execution


def test_typed_code_runs_and_its_declarations_persist(sandbox: Sandbox) -> None:
    ctx = sandbox.create_code_context(language="typescript")
    assert ctx.language == "typescript"
    assert ok(sandbox.run_code(TYPED_CELL, context=ctx)).text == "42"
    assert ok(sandbox.run_code("new Box<string>(pair.join('')).get()", context=ctx)).text == "ab"
    assert ok(sandbox.run_code("`${Color.Green} ${Color[4]} ${Color.Red}`", context=ctx)).text == "green Blue 0"
    assert ok(sandbox.run_code("let total: number = add(1, 2) as number\nconst again: Point = { ...origin }", context=ctx)).text is None
    assert ok(sandbox.run_code("total + again.y", context=ctx)).text == "5"
    # a cell that declares `let total` again works, as in a notebook
    assert ok(sandbox.run_code("let total: string = 'reset'; total", context=ctx)).text == "reset"


def test_top_level_await_and_esm_import_of_a_node_builtin(sandbox: Sandbox) -> None:
    ctx = sandbox.create_code_context(language="ts")
    cell = "import { readFileSync } from 'fs'\nimport type { Stats } from 'fs'\nconst n: number = await Promise.resolve(41)\nn + 1"
    assert ok(sandbox.run_code(cell, context=ctx)).text == "42"
    assert ok(sandbox.run_code("readFileSync('/etc/hostname', 'utf8').trim()", context=ctx)).text == "sandbox"


def test_a_type_error_is_not_an_error(sandbox: Sandbox) -> None:
    execution = ok(sandbox.run_code("const n: number = 'not a number' as any as string; console.log(typeof n)", language="ts"))
    assert execution.logs.stdout == ["string\n"]


def test_a_syntax_error_is_an_execution_error_at_the_users_line(sandbox: Sandbox) -> None:
    execution = sandbox.run_code("const a: number = 1\nlet b: number = ;", language="ts")
    assert execution.error is not None
    assert execution.error.name == "SyntaxError"
    assert execution.error.value == "Expression expected (2:16)"
    assert "let b: number = ;\n                ^" in execution.error.traceback
    # the context lives on, and the failed cell left nothing behind
    assert ok(sandbox.run_code("typeof b", language="ts")).text == "undefined"


def test_a_runtime_error_points_at_the_users_line(sandbox: Sandbox) -> None:
    execution = sandbox.run_code("interface A { n: number }\nconst a: A = { n: 1 }\nthrow new TypeError(`bad ${a.n}`)", language="typescript")
    assert (execution.error.name, execution.error.value) == ("TypeError", "bad 1")
    assert "cell[1]:3:" in execution.error.traceback


def test_namespaces_and_const_enums_are_transformed(sandbox: Sandbox) -> None:
    cell = (
        "namespace Geometry { export const unit: number = 2; export function area(s: number): number { return s * s * unit } }\nconst enum Dir { Up = 1, Down }"
    )
    ctx = sandbox.create_code_context(language="ts")
    ok(sandbox.run_code(cell, context=ctx))
    assert ok(sandbox.run_code("Geometry.area(3) + Dir.Down", context=ctx)).text == "20"
    # a syntax error in a cell that needs transforming still points at the user's line
    execution = sandbox.run_code("enum E { A }\nlet x: number = ;", context=ctx)
    assert (execution.error.name, execution.error.value) == ("SyntaxError", "Expression expected (2:16)")


def test_run_code_language_ts_uses_one_default_typescript_context(sandbox: Sandbox) -> None:
    ok(sandbox.run_code("const shared: string = 'kept'", language="ts"))
    assert ok(sandbox.run_code("shared", language="typescript")).text == "kept"
    assert ok(sandbox.run_code("typeof shared", language="javascript")).text == "undefined"  # JavaScript is another context
    typescript = [ctx for ctx in sandbox.list_code_contexts() if ctx.language == "typescript"]
    assert len(typescript) == 1 and typescript[0].cwd == "/home/user"
    assert ok(sandbox.run_code("shared + '!'", context=typescript[0])).text == "kept!"


def test_typescript_context_with_cwd_env_restart_and_remove(sandbox: Sandbox) -> None:
    ctx = sandbox.create_code_context(language="ts", cwd="/tmp/ts-work", envs={"MODE": "typed"})
    assert ok(sandbox.run_code("const cwd: string = process.cwd(); `${cwd} ${process.env.MODE}`", context=ctx)).text == "/tmp/ts-work typed"
    sandbox.restart_code_context(ctx)
    assert ok(sandbox.run_code("typeof cwd", context=ctx)).text == "undefined"
    sandbox.remove_code_context(ctx)
    assert ctx.id not in [listed.id for listed in sandbox.list_code_contexts()]


def test_async_sandbox_runs_typescript() -> None:
    async def scenario() -> None:
        sbx = await AsyncSandbox.create(timeout=60, pool=False)
        try:
            ctx = await sbx.create_code_context(language="ts")
            assert ok(await sbx.run_code("enum Size { S = 1, M = 2 }\nconst m: Size = Size.M", context=ctx)).text is None
            assert ok(await sbx.run_code("(m as number) * 21", context=ctx)).text == "42"
        finally:
            await sbx.kill()

    asyncio.run(scenario())


def test_a_pooled_sandbox_makes_a_typescript_context_from_its_javascript_spare(make_pooled_sandbox: Callable[..., Sandbox]) -> None:
    sbx = make_pooled_sandbox(envs={"PROJECT": "pooled"})
    time.sleep(1)  # the spares start after the hand-out
    ctx = sbx.create_code_context(language="ts", cwd="/tmp/pooled-ts", envs={"CTX": "1"})
    assert ctx.language == "typescript"
    cell = "const up: number = process.uptime(); [up > 0.5, process.cwd(), process.env.CTX, process.env.PROJECT]"
    assert ok(sbx.run_code(cell, context=ctx)).text == "[ true, '/tmp/pooled-ts', '1', 'pooled' ]", "the context was not the spare"
    assert ok(sbx.run_code("enum E { A = 2 }\nE.A as number", context=ctx)).text == "2"
    time.sleep(1)  # the next spare is plain JavaScript again
    javascript = sbx.create_code_context(language="javascript")
    assert float(ok(sbx.run_code("process.uptime()", context=javascript)).text) > 0.5
    assert sbx.run_code("const typed: number = 1", context=javascript).error.name == "SyntaxError"


# -- abuse: what a cell does to the type stripper stays in its own context ----------------------


@pytest.mark.parametrize(
    "cell",
    ["(" * 100_000 + "1" + ")" * 100_000, "let deep: " + "Array<" * 20_000 + "number" + ">" * 20_000 + " = []"],
    ids=["deeply nested expression", "deeply nested type"],
)
def test_a_cell_that_breaks_the_type_stripper_leaves_the_context_working(any_sandbox: Callable[..., Sandbox], cell: str) -> None:
    sbx = any_sandbox()
    ctx = sbx.create_code_context(language="ts")
    ok(sbx.run_code("const before: number = 1", context=ctx))
    execution = sbx.run_code(cell, context=ctx)
    assert execution.error is not None and execution.error.name in ("RangeError", "RuntimeError", "SyntaxError"), execution.error
    assert ok(sbx.run_code("const after: number = before + 1; after", context=ctx)).text == "2"


def test_a_cell_cannot_change_how_other_contexts_strip_types(any_sandbox: Callable[..., Sandbox]) -> None:
    sbx = any_sandbox()
    tampered = sbx.create_code_context(language="ts")
    # the cell reaches the stripper's module through require and replaces it in its own process only
    ok(sbx.run_code("const amaro = require(process.env.SANDCELL_AMARO); amaro.transformSync = () => ({ code: 'globalThis.hijacked = 1' })", context=tampered))
    other = sbx.create_code_context(language="ts")
    assert ok(sbx.run_code("const x: number = 2; typeof globalThis.hijacked + x", context=other)).text == "undefined2"


def test_a_timeout_interrupts_a_typescript_cell_and_keeps_the_state(sandbox: Sandbox) -> None:
    ok(sandbox.run_code("const kept: string = 'yes'", language="ts"))
    execution = sandbox.run_code("while (true) {}", language="ts", timeout=1)
    assert execution.error is not None and execution.error.name == "TimeoutError"
    assert ok(sandbox.run_code("kept", language="ts")).text == "yes"
