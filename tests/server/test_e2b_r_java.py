"""R and Java through the official ``e2b_code_interpreter`` SDK, unchanged, against ``sandcell serve``.

What E2B's own SDK tests check for these languages (``tests/*/env_vars/test_r.py``,
``test_java.py`` in e2b-dev/code-interpreter) holds here too, and so do the
observable shapes of IRkernel and IJava: R values as non-main text results,
R plots as PNG results, Java's last expression as the main result.
"""

from __future__ import annotations

import base64
import shutil
import time

import pytest
from e2b import TimeoutException
from e2b_code_interpreter import Sandbox
from sandboxes import SandboxFactory

pytestmark = [
    pytest.mark.skipif(shutil.which("R") is None, reason="R is not installed (sandcell setup installs r-base-core)"),
    pytest.mark.skipif(shutil.which("jshell") is None, reason="no JDK (sandcell setup installs default-jdk-headless)"),
]


@pytest.fixture
def sbx(make_e2b_sandbox: SandboxFactory[Sandbox]) -> Sandbox:
    return make_e2b_sandbox(scope="module", timeout=600, envs={"TEST_ENV_VAR": "supertest"})


def test_r_values_prints_plots_and_errors(sbx: Sandbox) -> None:
    values = sbx.run_code('r_n <- 20\nprint("printed")\nr_n * 2 + 2', language="r")
    assert values.logs.stdout == ['[1] "printed"\n']
    assert [(result.text, result.is_main_result) for result in values.results] == [("[1] 42", False)]
    plot = sbx.run_code("barplot(c(3, 1, 2))", language="r")
    assert plot.error is None and base64.b64decode(plot.results[0].png).startswith(b"\x89PNG")
    failed = sbx.run_code("stop('boom')", language="r")
    assert (failed.error.name, failed.error.value) == ("ERROR", "Error: boom")
    assert sbx.run_code("r_n", language="r").results[0].text == "[1] 20"


def test_r_env_vars_as_in_e2bs_own_tests(sbx: Sandbox) -> None:
    assert sbx.run_code('Sys.getenv("TEST_ENV_VAR")', language="r").results[0].text.strip() == '[1] "supertest"'
    assert sbx.run_code('Sys.getenv("FOO")', envs={"FOO": "bar"}, language="r").results[0].text.strip() == '[1] "bar"'
    assert sbx.run_code('Sys.getenv("FOO", unset = "default")', language="r").results[0].text.strip() == '[1] "default"'
    overwritten = sbx.run_code('Sys.getenv("TEST_ENV_VAR")', language="r", envs={"TEST_ENV_VAR": "overwrite"})
    assert overwritten.results[0].text.strip() == '[1] "overwrite"'
    assert sbx.run_code('Sys.getenv("TEST_ENV_VAR")', language="r").results[0].text.strip() == '[1] "supertest"'


def test_java_statements_expressions_output_and_errors(sbx: Sandbox) -> None:
    assert sbx.run_code("int javaN = 20;", language="java").results == []
    assert sbx.run_code("javaN * 2 + 2", language="java").text == "42"
    printed = sbx.run_code('System.out.println("hello " + javaN);', language="java")
    assert printed.logs.stdout == ["hello 20\n"] and printed.results == []
    thrown = sbx.run_code('throw new IllegalArgumentException("bad");', language="java")
    assert (thrown.error.name, thrown.error.value) == ("IllegalArgumentException", "bad")
    assert thrown.error.traceback.startswith("java.lang.IllegalArgumentException: bad")
    rejected = sbx.run_code("int javaBad = ;", language="java")
    assert rejected.error.name == "CompilationException"


def test_java_env_vars_as_in_e2bs_own_tests(sbx: Sandbox) -> None:
    assert sbx.run_code('System.getProperty("TEST_ENV_VAR")', language="java").text.strip() == "supertest"
    assert sbx.run_code('System.getProperty("FOO")', envs={"FOO": "bar"}, language="java").text.strip() == "bar"
    assert sbx.run_code('System.getProperty("FOO", "default")', language="java").text.strip() == "default"
    overwritten = sbx.run_code('System.getProperty("TEST_ENV_VAR")', language="java", envs={"TEST_ENV_VAR": "overwrite"})
    assert overwritten.results[0].text.strip() == "overwrite"
    assert sbx.run_code('System.getProperty("TEST_ENV_VAR")', language="java").results[0].text.strip() == "supertest"


@pytest.mark.parametrize(
    ("language", "setup", "read", "expected"),
    [("r", "ctx_value <- 'kept'", "ctx_value", '[1] "kept"'), ("java", 'String ctxValue = "kept";', "ctxValue", "kept")],
)
def test_contexts_keep_their_state_and_cwd(sbx: Sandbox, language: str, setup: str, read: str, expected: str) -> None:
    context = sbx.create_code_context(cwd="/tmp", language=language)
    assert context.language == language and context.cwd == "/tmp"
    assert sbx.run_code(setup, context=context).error is None
    assert sbx.run_code(read, context=context).results[0].text == expected
    assert sbx.run_code(read, language=language).error is not None  # the default context is another one
    cwd = sbx.run_code("getwd()" if language == "r" else 'System.getProperty("user.dir")', context=context)
    assert cwd.results[0].text == ('[1] "/tmp"' if language == "r" else "/tmp")


@pytest.mark.parametrize(
    ("language", "code"),
    [("r", "for (i in 1:2) { cat(i, '\\n'); Sys.sleep(0.5) }"), ("java", "for (int i = 1; i <= 2; i++) { System.out.println(i); Thread.sleep(500); }")],
)
def test_output_streams_to_callbacks(sbx: Sandbox, language: str, code: str) -> None:
    arrived: list[float] = []
    sbx.run_code(code, language=language, on_stdout=lambda message: arrived.append(time.monotonic()))
    assert len(arrived) == 2 and arrived[1] - arrived[0] > 0.3


@pytest.mark.parametrize(("language", "code"), [("r", "Sys.sleep(100)"), ("java", "Thread.sleep(100_000);")])
def test_a_client_timeout_interrupts_the_run_and_the_context_goes_on(sbx: Sandbox, language: str, code: str) -> None:
    with pytest.raises(TimeoutException):
        sbx.run_code(code, language=language, timeout=2)
    assert sbx.run_code("1 + 1", language=language).error is None
