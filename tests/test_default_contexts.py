"""The contexts a new sandbox lists, as E2B's (Python and JavaScript, in /home/user), and where a context may work."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from sandcell import Execution, InvalidArgumentException, Sandbox

# Counts this sandbox's Node kernels from its default Python context.
NODE_KERNELS = "import pathlib; sum(b'node_kernel.js' in p.read_bytes() for p in pathlib.Path('/proc').glob('[0-9]*/cmdline'))"


def ok(execution: Execution) -> Execution:
    assert execution.error is None, execution.error
    return execution


def test_a_new_sandbox_lists_python_and_javascript_and_starts_no_node(make_sandbox: Callable[..., Sandbox]) -> None:
    sbx = make_sandbox()
    listed = sbx.list_code_contexts()
    assert [(ctx.language, ctx.cwd) for ctx in listed] == [("python", "/home/user"), ("javascript", "/home/user")]
    assert len({ctx.id for ctx in listed}) == 2
    assert ok(sbx.run_code(NODE_KERNELS)).text == "0"


def test_the_listed_javascript_context_is_the_default_one(any_sandbox: Callable[..., Sandbox]) -> None:
    sbx = any_sandbox()
    javascript = next(ctx for ctx in sbx.list_code_contexts() if ctx.language == "javascript")
    assert ok(sbx.run_code("const listed = 'by id'; process.cwd()", context=javascript)).text == "/home/user"
    assert ok(sbx.run_code("listed", language="js")).text == "by id"
    assert ok(sbx.run_code(NODE_KERNELS)).text in ("1", "2")  # its own, and a pooled sandbox's next spare
    # started, it keeps its place and id in the listing
    assert sbx.list_code_contexts()[1] == javascript


def test_the_default_javascript_context_takes_the_sandboxs_envs(make_sandbox: Callable[..., Sandbox]) -> None:
    sbx = make_sandbox(envs={"GREETING": "hej"})
    assert ok(sbx.run_code("process.env.GREETING", language="javascript")).text == "hej"


def test_restarting_or_removing_the_listed_javascript_context_before_it_ran(make_sandbox: Callable[..., Sandbox]) -> None:
    sbx = make_sandbox()
    javascript = sbx.list_code_contexts()[1]
    sbx.restart_code_context(javascript)
    assert ok(sbx.run_code(NODE_KERNELS)).text == "0"  # nothing to forget: it still starts on its first run
    sbx.remove_code_context(javascript)
    assert [ctx.language for ctx in sbx.list_code_contexts()] == ["python"]
    assert ok(sbx.run_code("40 + 2", language="javascript")).text == "42"  # a new default
    assert [ctx.language for ctx in sbx.list_code_contexts()] == ["python", "javascript"]
    assert sbx.list_code_contexts()[1].id != javascript.id


@pytest.mark.parametrize("language", ["python", "javascript", "typescript", "bash"])
def test_a_missing_working_directory_is_made(sandbox: Sandbox, language: str) -> None:
    ctx = sandbox.create_code_context(cwd="/tmp/made/for/" + language, language=language)
    assert ctx.cwd == "/tmp/made/for/" + language
    code = {"python": "import os; print(os.getcwd())", "bash": "pwd"}.get(language, "console.log(process.cwd())")
    assert ok(sandbox.run_code(code, context=ctx)).logs.stdout == [f"/tmp/made/for/{language}\n"]


def test_an_existing_read_only_directory_works_and_a_relative_one_is_under_home(sandbox: Sandbox) -> None:
    assert ok(sandbox.run_code("process.cwd()", context=sandbox.create_code_context(cwd="/usr", language="js"))).text == "/usr"
    assert sandbox.create_code_context(cwd="project").cwd == "/home/user/project"


@pytest.mark.parametrize(
    ("cwd", "reason"),
    [
        ("/root", "cannot work in /root: it does not exist and cannot be created (Read-only file system)"),
        ("/etc/hostname", "cannot work in /etc/hostname: it is not a directory"),
        ("/etc/hostname/below", "cannot work in /etc/hostname/below: it does not exist and cannot be created (Not a directory)"),
        ("/tmp/locked", "cannot work in /tmp/locked: permission denied"),
    ],
)
def test_a_directory_that_cannot_be_a_working_directory_is_a_clear_error(any_sandbox: Callable[..., Sandbox], cwd: str, reason: str) -> None:
    sbx = any_sandbox()
    sbx.commands.run("mkdir -m 000 /tmp/locked")
    before = sbx.list_code_contexts()
    for language in ("python", "javascript"):
        with pytest.raises(InvalidArgumentException, match=re.escape(reason)):
            sbx.create_code_context(cwd=cwd, language=language)
    assert sbx.list_code_contexts() == before
    # the pooled sandbox's JavaScript spare was not spent on it
    assert ok(sbx.run_code("1 + 1", language="javascript")).text == "2"
