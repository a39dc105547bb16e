"""Python contexts are forks of a warm zygote inside the sandbox."""

from __future__ import annotations

import pytest

from sandcell import Sandbox


@pytest.fixture
def sbx(make_sandbox):
    return make_sandbox()


def parent_pid(sandbox: Sandbox, context=None) -> int:
    return int(sandbox.run_code("import os; os.getppid()", context=context).text)


def test_contexts_are_forks_of_one_zygote_with_no_threads(sbx):
    zygote = parent_pid(sbx)
    contexts = [sbx.create_code_context(language="python") for _ in range(3)]
    assert {parent_pid(sbx, context) for context in contexts} == {zygote}
    pids = {int(sbx.run_code("import os; os.getpid()", context=context).text) for context in contexts}
    assert len(pids) == 3 and zygote not in pids
    status = sbx.files.read(f"/proc/{zygote}/status")
    assert "Threads:\t1\n" in status, "a zygote must hold no thread when it forks"


def test_forked_contexts_are_independent_and_reseeded(sbx):
    first, second = (sbx.create_code_context(language="python") for _ in range(2))
    sbx.run_code("value = 'first'", context=first)
    assert sbx.run_code("value", context=second).error.name == "NameError"
    draws = {sbx.run_code("import random; random.random()", context=context).text for context in (first, second)}
    assert len(draws) == 2, "each fork must get its own random state"


def test_contexts_still_start_after_the_zygote_is_killed(sbx):
    context = sbx.create_code_context(language="python")
    sbx.run_code("kept = 7", context=context)
    zygote = parent_pid(sbx, context)
    assert sbx.run_code(f"import os, signal; os.kill({zygote}, signal.SIGKILL)").error is None
    assert sbx.run_code("kept", context=context).text == "7", "running contexts outlive their zygote"
    fresh = sbx.create_code_context(language="python")
    assert sbx.run_code("6 * 7", context=fresh).text == "42"
    died = sbx.run_code("import os; os._exit(5)", context=context)
    assert died.error is not None and died.error.name == "InterpreterDied"
    assert sbx.run_code("1 + 1", context=context).text == "2"
