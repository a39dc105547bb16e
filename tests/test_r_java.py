"""R and Java code contexts, on real sandboxes, through sandcell's own API.

R is Debian's ``r-base-core``, Java the JDK's JShell evaluating in one JVM;
both behave as E2B's IRkernel and IJava do where the SDK can see it: R's
visible values are text results (``[1] 42``) and its plots PNG results,
Java's last expression is the main result. One sandbox per module holds one
R and one Java context that the tests share (each uses names of its own);
tests that need limits or a broken PATH make their own sandbox.
"""

from __future__ import annotations

import base64
import functools
import shutil
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sandcell import Context, Execution, InvalidArgumentException, Limits, Sandbox

pytestmark = [
    pytest.mark.skipif(shutil.which("R") is None, reason="R is not installed (sandcell setup installs r-base-core)"),
    pytest.mark.skipif(shutil.which("jshell") is None, reason="no JDK (sandcell setup installs default-jdk-headless)"),
]

SBX_ENV = {"SANDCELL_TEST_SBX_VAR": "sandbox-level-value"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def sbx(make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    return make_sandbox(scope="module", timeout=900, envs=SBX_ENV)


@functools.cache
def shared_context(sandbox: Sandbox, language: str) -> Context:
    """The one context of ``language`` in the module's sandbox, made by the first test that asks."""
    return sandbox.create_code_context(language=language)


@pytest.fixture
def r(sbx: Sandbox) -> Context:
    return shared_context(sbx, "r")


@pytest.fixture
def java(sbx: Sandbox) -> Context:
    return shared_context(sbx, "java")


def ok(execution: Execution) -> Execution:
    assert execution.error is None, f"unexpected error: {execution.error}"
    return execution


def stdout(execution: Execution) -> str:
    return "".join(execution.logs.stdout)


def stderr(execution: Execution) -> str:
    return "".join(execution.logs.stderr)


def png_size(data: str) -> tuple[int, int]:
    raw = base64.b64decode(data)
    assert raw.startswith(PNG_SIGNATURE)
    return struct.unpack(">II", raw[16:24])


# -- R ---------------------------------------------------------------------------
class TestR:
    def test_print_output_is_stdout_as_r_prints_it(self, sbx: Sandbox, r: Context) -> None:
        execution = ok(sbx.run_code('print(c(1.5, 2))\ncat("plain\\n")\ninvisible(7)', context=r))
        assert stdout(execution) == "[1] 1.5 2.0\nplain\n"
        assert execution.results == []

    def test_visible_values_are_text_results_as_in_irkernel(self, sbx: Sandbox, r: Context) -> None:
        execution = ok(sbx.run_code('r_answer <- 41\nr_answer + 1\n"text"', context=r))
        assert [result.text for result in execution.results] == ["[1] 42", '[1] "text"']
        assert not any(result.is_main_result for result in execution.results)  # IRkernel sends display_data
        assert execution.text is None

    def test_state_and_functions_persist_across_cells(self, sbx: Sandbox, r: Context) -> None:
        ok(sbx.run_code("r_square <- function(n) n * n\nr_kept <- data.frame(a = 1:3)", context=r))
        assert ok(sbx.run_code("r_square(nrow(r_kept))", context=r)).results[0].text == "[1] 9"

    def test_a_plot_is_a_png_result(self, sbx: Sandbox, r: Context) -> None:
        execution = ok(sbx.run_code("plot(1:10, main = 'ten')", context=r))
        [plot] = execution.results
        assert plot.png is not None and png_size(plot.png) == (840, 840)  # IRkernel's 7 in at 120 dpi
        two = ok(sbx.run_code("plot(1:3)\nplot(4:6)", context=r))
        assert [result.png is not None for result in two.results] == [True, True]
        # A plot changed by a later cell is shown again, changed; a cell that draws nothing shows none.
        assert ok(sbx.run_code("lines(c(6, 4, 5))", context=r)).results[0].png not in (None, two.results[1].png)
        assert ok(sbx.run_code("r_no_plot <- 1", context=r)).results == []

    def test_a_value_whose_print_draws_is_its_plot_only(self, sbx: Sandbox, r: Context) -> None:
        # As lattice's and ggplot2's objects do (neither is in r-base-core): print() draws, and prints nothing.
        ok(sbx.run_code("print.r_drawn <- function(x, ...) plot(1:3)", context=r))
        execution = ok(sbx.run_code("structure(list(), class = 'r_drawn')", context=r))
        assert [(result.text, result.png is not None) for result in execution.results] == [("<R plot>", True)]

    def test_a_plot_saved_to_a_file_is_not_a_result(self, sbx: Sandbox, r: Context) -> None:
        execution = ok(sbx.run_code("png('/home/user/saved.png')\nplot(1:5)\ninvisible(dev.off())\nfile.size('/home/user/saved.png') > 0", context=r))
        assert [result.text for result in execution.results] == ["[1] TRUE"]

    def test_the_plot_size_follows_repr_options(self, sbx: Sandbox, r: Context) -> None:
        execution = ok(sbx.run_code("options(repr.plot.width = 4, repr.plot.height = 3, repr.plot.res = 100)\nhist(rnorm(50))", context=r))
        ok(sbx.run_code("options(repr.plot.width = 7, repr.plot.height = 7, repr.plot.res = 120)", context=r))
        assert png_size(execution.results[0].png or "") == (400, 300)

    def test_an_error_is_an_execution_error_with_the_users_calls(self, sbx: Sandbox, r: Context) -> None:
        execution = sbx.run_code('cat("before\\n")\nr_inner <- function() stop("boom")\nr_outer <- function() r_inner()\nr_outer()\nr_after <- 1', context=r)
        assert stdout(execution) == "before\n"
        assert execution.error is not None
        assert (execution.error.name, execution.error.value) == ("ERROR", "Error in r_inner(): boom")
        assert execution.error.traceback.splitlines()[1:] == ["Traceback:", "1. r_outer()", "2. r_inner()", '3. stop("boom")']
        assert sbx.run_code("exists('r_after')", context=r).results[0].text == "[1] FALSE"  # the cell stopped at the error

    def test_top_level_and_parse_errors(self, sbx: Sandbox, r: Context) -> None:
        missing = sbx.run_code("r_no_such_variable", context=r).error
        assert missing is not None and missing.value == "Error: object 'r_no_such_variable' not found"
        parse = sbx.run_code("1 +", context=r).error
        assert parse is not None and parse.name == "ERROR" and "unexpected end of input" in parse.value

    def test_warnings_and_messages_go_to_stderr(self, sbx: Sandbox, r: Context) -> None:
        execution = ok(sbx.run_code('message("note")\nlog(-1)', context=r))
        assert stderr(execution) == "note\nWarning message:\nIn log(-1): NaNs produced\n"
        assert execution.results[0].text == "[1] NaN"

    def test_run_envs_last_for_the_run_as_in_e2b(self, sbx: Sandbox, r: Context) -> None:
        assert ok(sbx.run_code('Sys.getenv("FOO")', context=r, envs={"FOO": "bar"})).results[0].text == '[1] "bar"'
        assert ok(sbx.run_code('Sys.getenv("FOO", unset = "default")', context=r)).results[0].text == '[1] "default"'
        assert ok(sbx.run_code('Sys.getenv("SANDCELL_TEST_SBX_VAR")', context=r)).results[0].text == '[1] "sandbox-level-value"'

    def test_output_streams_while_the_cell_runs(self, sbx: Sandbox, r: Context) -> None:
        arrived: list[float] = []
        ok(sbx.run_code('for (i in 1:3) { cat(i, "\\n"); Sys.sleep(0.4) }', context=r, on_stdout=lambda message: arrived.append(time.monotonic())))
        assert len(arrived) == 3 and arrived[-1] - arrived[0] > 0.5

    def test_a_timeout_interrupts_and_keeps_state(self, sbx: Sandbox, r: Context) -> None:
        ok(sbx.run_code("r_kept_through_timeouts <- 'still here'", context=r))
        for code in ("while (TRUE) {}", "Sys.sleep(100)", "system('sleep 100')"):
            started = time.monotonic()
            execution = sbx.run_code(code, context=r, timeout=1)
            assert execution.error is not None and execution.error.name == "TimeoutError", (code, execution.error)
            assert time.monotonic() - started < 5, code
        assert "sleep 100" not in sbx.commands.run("ps -eo args").stdout
        assert ok(sbx.run_code("r_kept_through_timeouts", context=r)).results[0].text == '[1] "still here"'

    def test_the_context_has_its_cwd(self, sbx: Sandbox) -> None:
        context = sbx.create_code_context(cwd="/home/user/r-work", language="r")
        assert ok(sbx.run_code("getwd()", context=context)).results[0].text == '[1] "/home/user/r-work"'


# -- Java ------------------------------------------------------------------------
class TestJava:
    def test_statements_and_expressions_keep_state(self, sbx: Sandbox, java: Context) -> None:
        assert ok(sbx.run_code("int javaCount = 41;", context=java)).results == []
        execution = ok(sbx.run_code("javaCount + 1", context=java))
        assert execution.text == "42" and execution.results[0].is_main_result
        ok(sbx.run_code("int twice(int n) { return 2 * n; }\nrecord Point(int x, int y) {}", context=java))
        assert ok(sbx.run_code("new Point(twice(javaCount), 0).x()", context=java)).text == "82"

    def test_only_the_last_snippet_gives_the_result(self, sbx: Sandbox, java: Context) -> None:
        assert ok(sbx.run_code('1 + 1;\nString javaWord = "word";\njavaWord.toUpperCase()', context=java)).text == "WORD"  # a String as it is, as IJava
        assert ok(sbx.run_code("javaWord.length();\nint javaUnused = 0;", context=java)).results == []
        assert ok(sbx.run_code("new int[] {1, 2}", context=java)).text == "int[2] { 1, 2 }"
        assert ok(sbx.run_code("String javaNull = null;\njavaNull", context=java)).results == []  # IJava shows no null

    def test_system_out_is_stdout_and_system_err_stderr(self, sbx: Sandbox, java: Context) -> None:
        execution = ok(sbx.run_code('System.out.println("out line");\nSystem.out.print("no newline");\nSystem.err.println("err line");', context=java))
        assert stdout(execution) == "out line\nno newline"
        assert stderr(execution) == "err line\n"

    def test_an_exception_is_an_execution_error(self, sbx: Sandbox, java: Context) -> None:
        execution = sbx.run_code('System.out.println("before");\nint javaBroken = 1 / 0;\nSystem.out.println("after");', context=java)
        assert stdout(execution) == "before\n"
        assert execution.error is not None
        assert (execution.error.name, execution.error.value) == ("ArithmeticException", "/ by zero")
        assert execution.error.traceback.startswith("java.lang.ArithmeticException: / by zero\n\tat ")
        thrown = sbx.run_code(
            'void javaFail() { throw new IllegalStateException("bad state", new RuntimeException("root")); }\njavaFail();', context=java
        ).error
        assert thrown is not None and (thrown.name, thrown.value) == ("IllegalStateException", "bad state")
        assert "\nCaused by: java.lang.RuntimeException: root\n" in thrown.traceback

    def test_a_compile_error(self, sbx: Sandbox, java: Context) -> None:
        syntax = sbx.run_code("int javaBad = ;", context=java).error
        assert syntax is not None and (syntax.name, syntax.value) == ("CompilationException", "illegal start of expression")
        assert syntax.traceback.splitlines()[:2] == ["int javaBad = ;", "              ^"]
        unknown = sbx.run_code("javaNoSuchName + 1", context=java).error
        assert unknown is not None and unknown.name == "CompilationException" and "cannot find symbol" in unknown.value
        incomplete = sbx.run_code("for (int i = 0; i < 3; i++) {", context=java).error
        assert incomplete is not None and incomplete.name == "CompilationException"

    def test_a_method_may_use_what_a_later_cell_declares(self, sbx: Sandbox, java: Context) -> None:
        ok(sbx.run_code("void javaShowLater() { System.out.println(javaLater); }", context=java))
        early = sbx.run_code("javaShowLater();", context=java).error
        assert early is not None and early.name == "UnresolvedReferenceException" and "javaLater" in early.value
        ok(sbx.run_code("int javaLater = 3;", context=java))
        assert stdout(ok(sbx.run_code("javaShowLater();", context=java))) == "3\n"
        unresolved = sbx.run_code("class JavaHolder { JavaMissing field; }", context=java).error
        assert unresolved is not None and unresolved.name == "CompilationException" and "JavaMissing" in unresolved.value

    def test_run_envs_are_system_properties_as_in_e2b(self, sbx: Sandbox, java: Context) -> None:
        assert ok(sbx.run_code('System.getProperty("FOO")', context=java, envs={"FOO": "bar"})).text == "bar"
        assert ok(sbx.run_code('System.getProperty("FOO", "default")', context=java)).text == "default"
        assert ok(sbx.run_code('System.getProperty("SANDCELL_TEST_SBX_VAR")', context=java)).text == "sandbox-level-value"
        assert ok(sbx.run_code('System.getenv("SANDCELL_TEST_SBX_VAR")', context=java)).text == "sandbox-level-value"

    def test_an_image_value_is_a_png_result(self, sbx: Sandbox, java: Context) -> None:
        execution = ok(sbx.run_code("new java.awt.image.BufferedImage(30, 20, java.awt.image.BufferedImage.TYPE_INT_RGB)", context=java))
        assert png_size(execution.results[0].png or "") == (30, 20)

    def test_a_timeout_interrupts_and_keeps_state(self, sbx: Sandbox, java: Context) -> None:
        ok(sbx.run_code('String javaKept = "still here";', context=java))
        for code in ("while (true) {}", "Thread.sleep(100_000);"):
            started = time.monotonic()
            execution = sbx.run_code(code, context=java, timeout=1)
            assert execution.error is not None and execution.error.name == "TimeoutError", (code, execution.error)
            assert time.monotonic() - started < 5, code
        assert ok(sbx.run_code("javaKept", context=java)).text == "still here"

    def test_the_context_has_its_cwd(self, sbx: Sandbox) -> None:
        context = sbx.create_code_context(cwd="/home/user/java-work", language="java")
        assert ok(sbx.run_code('new java.io.File("x").getAbsolutePath()', context=context)).text == "/home/user/java-work/x"


# -- both ------------------------------------------------------------------------
# A cell that writes event lines of its own, without the run's token, to the kernel's event pipe.
FORGERIES = {
    "r": 'for (line in c("done\\t\\tok", "result\\tforged\\t1\\ttext/plain\\t41", "garbage")) cat(line, "\\n", sep = "", file = "/proc/self/fd/4")\n'
    'Sys.sleep(0.3)\ncat("after\\n")\n"real"',
    "java": (
        'try (var events = new java.io.FileOutputStream("/proc/self/fd/4")) { '
        'events.write("done\\t\\tok\\nresult\\tforged\\t1\\ttext/plain\\t41\\ngarbage\\n".getBytes()); }\n'
        'Thread.sleep(300);\nSystem.out.println("after");\n"real"'
    ),
}


@pytest.mark.parametrize("language", ["r", "java"])
def test_forged_events_neither_end_the_cell_nor_add_results(sbx: Sandbox, language: str) -> None:
    context = sbx.create_code_context(language=language)
    execution = ok(sbx.run_code(FORGERIES[language], context=context))
    assert stdout(execution) == "after\n"
    assert [result.text for result in execution.results] == ['[1] "real"' if language == "r" else "real"]
    # Event lines printed to stdout are output like any other.
    printed = ok(sbx.run_code('cat("done\\t\\tok\\n")' if language == "r" else 'System.out.println("done\\t\\tok");', context=context))
    assert stdout(printed) == "done\t\tok\n"


@pytest.mark.parametrize(("language", "package"), [("r", "r-base-core"), ("java", "default-jdk-headless")])
def test_a_missing_interpreter_is_a_clear_error_naming_its_package(make_sandbox: Callable[..., Sandbox], language: str, package: str) -> None:
    sandbox = make_sandbox(envs={"PATH": "/nowhere"})  # as where the package is not installed
    with pytest.raises(InvalidArgumentException, match=package):
        sandbox.create_code_context(language=language)
    with pytest.raises(InvalidArgumentException, match=package):
        sandbox.run_code("1", language=language)
    assert sandbox.run_code("1 + 1").text == "2"  # the sandbox is fine


def test_the_jvm_keeps_to_the_sandboxs_memory_and_pids(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(limits=Limits(memory_mb=192, pids=64))
    java = sandbox.create_code_context(language="java")
    ok(sandbox.run_code('String javaKept = "kept";', context=java))
    # The heap is sized from the sandbox (half of it), so a large array is an OutOfMemoryError, not the sandbox's death.
    assert sandbox.run_code("long heap = Runtime.getRuntime().maxMemory() / (1024 * 1024); heap", context=java).text in {str(n) for n in range(80, 97)}
    heap = sandbox.run_code("byte[] javaTooBig = new byte[150_000_000];", context=java).error
    assert heap is not None and (heap.name, heap.value) == ("OutOfMemoryError", "Java heap space")
    # Threads are the sandbox's pids: past its limit a thread cannot start, and the context goes on.
    threads = sandbox.run_code(
        "for (int i = 0; i < 200; i++) { "
        "Thread t = new Thread(() -> { try { Thread.sleep(1500); } catch (InterruptedException e) {} }); t.setDaemon(true); t.start(); }",
        context=java,
    ).error
    assert threads is not None and threads.name == "OutOfMemoryError" and "unable to create native thread" in threads.value
    time.sleep(2)  # the threads that did start end
    assert ok(sandbox.run_code("javaKept", context=java)).text == "kept"


def test_r_past_the_memory_limit_is_killed_and_restarts(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(limits=Limits(memory_mb=256))
    r = sandbox.create_code_context(language="r")
    ok(sandbox.run_code("r_state <- 1", context=r))
    killed = sandbox.run_code("r_big <- numeric(1e9)", context=r).error
    assert killed is not None and killed.name == "OutOfMemoryError" and "memory limit of 256 MiB" in killed.value
    assert sandbox.run_code("exists('r_state')", context=r).results[0].text == "[1] FALSE"  # a new R
    assert sandbox.run_code("1 + 1").text == "2"


# -- isolation, in every kind of sandbox ------------------------------------------------
ISOLATION_PROBES = {
    # uid; a socket to the outside; host files; the host's processes
    "r": 'cat(system("id -u", intern = TRUE), "\\n")\n'
    "con <- tryCatch(socketConnection('1.1.1.1', 53, timeout = 2), error = function(e) NULL)\ncat(is.null(con), '\\n')\n"
    "cat(file.exists('{host_file}'), file.exists('/etc/shadow'), length(list.files('/proc', pattern = '^[0-9]+$')) < 20, '\\n')",
    "java": 'System.out.println(new String(new ProcessBuilder("id", "-u").start().getInputStream().readAllBytes()).strip());\n'
    'boolean reached; try (var socket = new java.net.Socket()) { socket.connect(new java.net.InetSocketAddress("1.1.1.1", 53), 2000); reached = true; } '
    "catch (java.io.IOException e) { reached = false; }\nSystem.out.println(!reached);\n"
    'System.out.println(new java.io.File("{host_file}").exists() + " " + new java.io.File("/etc/shadow").exists()'
    ' + " " + (ProcessHandle.allProcesses().count() < 20));',
}


@pytest.mark.parametrize("language", ["r", "java"])
def test_r_and_java_are_isolated_like_the_other_languages(any_sandbox: Callable[..., Sandbox], tmp_path: Path, language: str) -> None:
    host_file = tmp_path / "host-secret.txt"
    host_file.write_text("secret")
    sandbox = any_sandbox()
    execution = ok(sandbox.run_code(ISOLATION_PROBES[language].replace("{host_file}", str(host_file)), language=language, timeout=60))
    uid, no_network, files_and_processes = stdout(execution).split("\n")[:3]
    assert uid.strip() == "1000"
    assert no_network.strip() == "TRUE" if language == "r" else no_network == "true"
    assert files_and_processes.split() == (["FALSE", "FALSE", "TRUE"] if language == "r" else ["false", "false", "true"])
