"""Functional tests of ``Sandbox.run_code`` and code contexts, on real sandboxes.

One sandbox per module serves every test that leaves it as it found it;
tests that kill interpreters or rely on a clean default context start a
sandbox of their own (``fresh``).
"""

from __future__ import annotations

import base64
import json
import threading
import time

import pytest

from sandcell import Execution, InvalidArgumentException, NotFoundException, OutputMessage, Result, Sandbox, SandboxException

SBX_ENV = {"SANDCELL_TEST_SBX_VAR": "sandbox-level-value"}
LANGUAGES = ["python", "javascript", "bash"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def sbx(make_sandbox):
    return make_sandbox(scope="module", timeout=600, envs=SBX_ENV)


@pytest.fixture
def fresh(make_sandbox):
    return make_sandbox(timeout=300, envs=SBX_ENV)


def stdout(execution: Execution) -> str:
    return "".join(execution.logs.stdout)


def stderr(execution: Execution) -> str:
    return "".join(execution.logs.stderr)


def merged(events: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Consecutive chunks of one stream joined (chunking itself is not part of the contract)."""
    out: list[tuple[str, str]] = []
    for kind, text in events:
        if out and kind in ("out", "err") and out[-1][0] == kind:
            out[-1] = (kind, out[-1][1] + text)
        else:
            out.append((kind, text))
    return out


def ok(execution: Execution) -> Execution:
    assert execution.error is None, f"unexpected error: {execution.error}"
    return execution


# -- statefulness and main results -------------------------------------------------
class TestPythonBasics:
    def test_state_persists_across_runs(self, sbx):
        ok(sbx.run_code("state_a = 40"))
        ok(sbx.run_code("def add(x):\n    return x + state_a"))
        execution = ok(sbx.run_code("add(2)"))
        assert execution.text == "42"

    def test_last_expression_is_main_result(self, sbx):
        execution = ok(sbx.run_code("a = 3\nb = 4\na * b"))
        assert execution.text == "12"
        mains = [r for r in execution.results if r.is_main_result]
        assert len(mains) == 1 and mains[0].text == "12"
        assert "text" in mains[0].formats()

    def test_no_main_result_for_statement_or_semicolon(self, sbx):
        assert ok(sbx.run_code("zz = 1")).results == []
        assert ok(sbx.run_code("zz;")).text is None
        assert ok(sbx.run_code("None")).results == []

    def test_string_result_is_repr(self, sbx):
        assert ok(sbx.run_code("'hello'")).text == "hello"

    def test_execution_count_increases(self, sbx):
        first = ok(sbx.run_code("1")).execution_count
        second = ok(sbx.run_code("2")).execution_count
        assert isinstance(first, int) and isinstance(second, int)
        assert second == first + 1

    def test_stdout_and_stderr_logs(self, sbx):
        execution = ok(sbx.run_code("import sys\nprint('to out')\nprint('to err', file=sys.stderr)"))
        assert stdout(execution) == "to out\n"
        assert stderr(execution) == "to err\n"

    def test_output_of_child_process_and_c_level_write_is_captured(self, sbx):
        execution = ok(sbx.run_code("import os, subprocess\nos.write(1, b'raw fd write\\n')\nsubprocess.run(['echo', 'from child'])"))
        assert "raw fd write\n" in stdout(execution)
        assert "from child\n" in stdout(execution)

    def test_runtime_error(self, sbx):
        execution = sbx.run_code("x = 1\n1 / 0")
        assert execution.error is not None
        assert execution.error.name == "ZeroDivisionError"
        assert execution.error.value == "division by zero"
        assert "1 / 0" in execution.error.traceback

    def test_output_before_error_is_kept(self, sbx):
        execution = sbx.run_code("print('before')\ndisplay('shown')\nraise KeyError('k')")
        assert stdout(execution) == "before\n"
        assert [r.text for r in execution.results] == ["shown"]
        assert execution.error is not None and execution.error.name == "KeyError"

    def test_syntax_error(self, sbx):
        execution = sbx.run_code("def broken(:\n    pass")
        assert execution.error is not None
        assert execution.error.name == "SyntaxError"
        assert execution.results == []

    def test_traceback_shows_user_code_not_internals(self, sbx):
        code = "def user_function():\n    raise ValueError('user failure here')\n\nuser_function()"
        execution = sbx.run_code(code)
        error = execution.error
        assert error is not None and error.name == "ValueError" and error.value == "user failure here"
        assert "user_function" in error.traceback
        assert "raise ValueError('user failure here')" in error.traceback
        for internal in ("sandcell", "python_kernel", "node_kernel"):
            assert internal not in error.traceback, f"{internal!r} leaked into the traceback:\n{error.traceback}"

    def test_callbacks(self, sbx):
        seen: list[tuple[str, object]] = []
        execution = sbx.run_code(
            "import sys\nprint('o')\nprint('e', file=sys.stderr)\ndisplay(5)\n7\n",
            on_stdout=lambda m: seen.append(("stdout", m)),
            on_stderr=lambda m: seen.append(("stderr", m)),
            on_result=lambda r: seen.append(("result", r)),
            on_error=lambda e: seen.append(("error", e)),
        )
        ok(execution)
        kinds = [kind for kind, _ in seen]
        assert kinds.count("stdout") >= 1 and kinds.count("stderr") >= 1 and kinds.count("result") == 2
        out = [value for kind, value in seen if kind == "stdout"]
        assert all(isinstance(m, OutputMessage) for m in out)
        assert "".join(m.line for m in out) == "o\n"
        assert all(m.error is False for m in out)
        err = [value for kind, value in seen if kind == "stderr"]
        assert all(m.error is True for m in err)
        assert all(isinstance(m.timestamp, int) and m.timestamp > 0 for m in out + err)
        results = [value for kind, value in seen if kind == "result"]
        assert all(isinstance(r, Result) for r in results)
        assert [r.text for r in results] == ["5", "7"]
        assert [r.is_main_result for r in results] == [False, True]

        errors: list = []
        failed = sbx.run_code("raise RuntimeError('cb')", on_error=errors.append)
        assert len(errors) == 1 and errors[0].name == "RuntimeError" and errors[0] == failed.error


class TestPythonRichOutput:
    def test_matplotlib_figure_with_show(self, sbx):
        execution = ok(sbx.run_code("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [3, 1, 2])\nplt.title('t')\nplt.show()"))
        pngs = [r for r in execution.results if r.png]
        assert len(pngs) == 1, f"expected one PNG result, got {execution.results}"
        raw = base64.b64decode(pngs[0].png, validate=True)
        assert raw.startswith(PNG_SIGNATURE)
        assert len(raw) > 1000
        assert "png" in pngs[0].formats()

    def test_matplotlib_open_figure_at_end_of_cell(self, sbx):
        execution = ok(sbx.run_code("import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.bar(['a', 'b'], [1, 2]);"))
        pngs = [r for r in execution.results if r.png]
        assert len(pngs) == 1, f"an open figure should be shown at the end of the cell, got {execution.results}"
        assert base64.b64decode(pngs[0].png).startswith(PNG_SIGNATURE)
        # Shown once: the next cell does not repeat it.
        assert [r for r in ok(sbx.run_code("1 + 1")).results if r.png] == []

    def test_pandas_dataframe(self, sbx):
        execution = ok(sbx.run_code("import pandas as pd\ndf = pd.DataFrame({'col_a': [1, 2], 'col_b': ['x', 'y']})\ndf"))
        main = [r for r in execution.results if r.is_main_result]
        assert len(main) == 1
        result = main[0]
        assert result.html is not None and "<table" in result.html and "col_a" in result.html
        assert result.text is not None and "col_a" in result.text and "col_b" in result.text
        assert {"text", "html"} <= set(result.formats())

    def test_display_several_objects_in_order(self, sbx):
        execution = ok(sbx.run_code("display(1, 'two', [3])\ndisplay({'four': 4})\n'five'"))
        assert [r.text for r in execution.results] == ["1", "two", "[3]", "{'four': 4}", "five"]
        assert [r.is_main_result for r in execution.results] == [False, False, False, False, True]

    def test_ipython_display_json_html_markdown(self, sbx):
        code = "from IPython.display import JSON, HTML, Markdown, display\ndisplay(JSON({'k': [1, 2]}))\ndisplay(HTML('<b>bold</b>'))\nMarkdown('# Title')"
        execution = ok(sbx.run_code(code))
        assert len(execution.results) == 3
        as_json, as_html, as_md = execution.results
        assert as_json.json == {"k": [1, 2]}
        assert as_html.html == "<b>bold</b>"
        assert as_md.markdown == "# Title" and as_md.is_main_result

    def test_object_with_custom_reprs(self, sbx):
        code = (
            "class Rich:\n"
            "    def _repr_html_(self): return '<i>rich</i>'\n"
            "    def _repr_svg_(self): return '<svg></svg>'\n"
            "    def __repr__(self): return 'Rich()'\n"
            "Rich()"
        )
        result = ok(sbx.run_code(code)).results[0]
        assert result.text == "Rich()" and result.html == "<i>rich</i>" and result.svg == "<svg></svg>"

    def test_execution_serializes_to_json(self, sbx):
        execution = ok(sbx.run_code("import pandas as pd\nprint('p')\npd.DataFrame({'a': [1]})"))
        decoded = json.loads(execution.to_json())
        assert "".join(decoded["logs"]["stdout"]) == "p\n"
        assert decoded["results"][0]["is_main_result"] is True


class TestJavaScript:
    def test_let_const_function_class_persist(self, sbx):
        ok(sbx.run_code("let jsLet = 1; const jsConst = 2; var jsVar = 3;", language="javascript"))
        ok(sbx.run_code("function jsFn(a) { return a + jsLet + jsConst + jsVar; }", language="javascript"))
        ok(sbx.run_code("class JsCounter { constructor() { this.n = 10; } inc() { return ++this.n; } }", language="javascript"))
        assert ok(sbx.run_code("jsFn(4)", language="javascript")).text == "10"
        assert ok(sbx.run_code("new JsCounter().inc()", language="javascript")).text == "11"

    def test_redeclaring_let_in_a_later_cell(self, sbx):
        ok(sbx.run_code("let redeclared = 'first';", language="javascript"))
        execution = ok(sbx.run_code("let redeclared = 'second';\nredeclared", language="javascript"))
        assert execution.text == "second"
        assert ok(sbx.run_code("const redeclared = 3; redeclared", language="javascript")).text == "3"

    def test_destructuring_declarations_persist(self, sbx):
        ok(sbx.run_code("const { dA, dB: [dC] } = { dA: 1, dB: [2] };", language="javascript"))
        assert ok(sbx.run_code("dA + dC", language="javascript")).text == "3"

    def test_last_expression_main_result(self, sbx):
        execution = ok(sbx.run_code("const obj = { a: 1, b: [1, 2] };\nobj", language="javascript"))
        main = [r for r in execution.results if r.is_main_result]
        assert len(main) == 1
        assert "a: 1" in main[0].text
        assert main[0].json == {"a": 1, "b": [1, 2]}
        assert ok(sbx.run_code("let undef;", language="javascript")).results == []

    def test_top_level_await(self, sbx):
        execution = ok(sbx.run_code("const v = await new Promise(r => setTimeout(() => r(42), 100));\nv + 1", language="javascript"))
        assert execution.text == "43"
        assert ok(sbx.run_code("await Promise.resolve('done')", language="javascript")).text == "done"

    def test_require_fs(self, sbx):
        code = "const fs = require('fs');\nfs.writeFileSync('/tmp/js_req.txt', 'from js');\nfs.readFileSync('/tmp/js_req.txt', 'utf8')"
        assert ok(sbx.run_code(code, language="javascript")).text == "from js"

    def test_import_statement(self, sbx):
        execution = ok(sbx.run_code("import os from 'os';\nimport { join } from 'path';\n[os.platform(), join('a', 'b')].join(':')", language="javascript"))
        assert execution.text == "linux:a/b"
        assert ok(sbx.run_code("typeof join", language="javascript")).text == "function"

    def test_console_log_is_stdout_and_console_error_is_stderr(self, sbx):
        execution = ok(sbx.run_code("console.log('hello', 1, {a: 2});\nconsole.error('oops');", language="javascript"))
        assert stdout(execution) == "hello 1 { a: 2 }\n"
        assert stderr(execution) == "oops\n"

    def test_thrown_error(self, sbx):
        code = "function jsThrower() {\n  throw new TypeError('js bad value');\n}\njsThrower();"
        execution = sbx.run_code(code, language="javascript")
        error = execution.error
        assert error is not None
        assert error.name == "TypeError"
        assert error.value == "js bad value"
        assert "jsThrower" in error.traceback
        for internal in ("sandcell", "python_kernel", "node_kernel"):
            assert internal not in error.traceback, f"{internal!r} leaked into the traceback:\n{error.traceback}"

    def test_reference_error_and_async_rejection(self, sbx):
        error = sbx.run_code("notDefinedAnywhere + 1", language="javascript").error
        assert error is not None and error.name == "ReferenceError" and "notDefinedAnywhere" in error.value
        error = sbx.run_code("await Promise.reject(new RangeError('rejected'))", language="javascript").error
        assert error is not None and error.name == "RangeError" and error.value == "rejected"

    def test_throw_non_error_value(self, sbx):
        error = sbx.run_code("throw 'plain string'", language="javascript").error
        assert error is not None and "plain string" in error.value

    def test_syntax_error(self, sbx):
        execution = sbx.run_code("let = = ;", language="javascript")
        assert execution.error is not None and execution.error.name == "SyntaxError"
        # The context is still fine.
        assert ok(sbx.run_code("1 + 1", language="javascript")).text == "2"

    def test_aliases(self, sbx):
        assert ok(sbx.run_code("typeof process", language="js")).text == "object"
        assert ok(sbx.run_code("'py'", language="py")).text == "py"


class TestBash:
    def test_cd_and_exports_persist(self, sbx):
        ok(sbx.run_code("mkdir -p /tmp/bash_state && cd /tmp/bash_state\nexport BASH_PERSIST=kept\nplain_var=also", language="bash"))
        execution = ok(sbx.run_code("pwd; echo $BASH_PERSIST; echo $plain_var; bash -c 'echo child:$BASH_PERSIST'", language="bash"))
        assert stdout(execution) == "/tmp/bash_state\nkept\nalso\nchild:kept\n"

    def test_functions_persist(self, sbx):
        ok(sbx.run_code('greet() { echo "hi $1"; }', language="bash"))
        assert stdout(ok(sbx.run_code("greet there", language="bash"))) == "hi there\n"

    def test_nonzero_exit_status_is_an_error(self, sbx):
        execution = sbx.run_code("echo partial\nfalse", language="bash")
        assert stdout(execution) == "partial\n"
        assert execution.error is not None
        assert execution.error.name == "ExitStatusError"
        assert "1" in execution.error.value
        execution = sbx.run_code("(exit 7)", language="bash")
        assert execution.error is not None and execution.error.name == "ExitStatusError" and "7" in execution.error.value
        assert ok(sbx.run_code("true", language="bash")).error is None

    def test_stderr(self, sbx):
        execution = ok(sbx.run_code("echo to-err >&2", language="bash"))
        assert stderr(execution) == "to-err\n"
        assert stdout(execution) == ""

    def test_no_results(self, sbx):
        assert ok(sbx.run_code("echo hi", language="bash")).results == []

    def test_syntax_error(self, sbx):
        execution = sbx.run_code("if then fi (", language="bash")
        assert execution.error is not None
        assert "syntax error" in stderr(execution)
        assert ok(sbx.run_code("echo fine", language="bash")).logs.stdout == ["fine\n"]

    def test_set_e_stops_the_cell_not_the_shell(self, fresh):
        run = lambda code, **kw: fresh.run_code(code, language="bash", **kw)  # noqa: E731
        execution = run("set -e\ncd /tmp\nexport KEPT=1\nfalse\necho not-reached")
        assert execution.error is not None and execution.error.name == "ExitStatusError"
        assert execution.error.value == "exit status 1"
        assert execution.logs.stdout == []
        state = ok(run('echo "$PWD $KEPT $-"')).logs.stdout
        assert state[0].split()[:2] == ["/tmp", "1"] and "e" in state[0].split()[2]  # state and errexit kept
        assert run("ls /nope\necho not-reached").logs.stdout == []
        assert run("sleep 30", timeout=1).error.name == "TimeoutError"
        assert ok(run("set +e; false; echo continues")).logs.stdout == ["continues\n"]


# -- streaming -----------------------------------------------------------------------
STREAMING_CODE = {
    "python": "import time\nprint('first line', flush=True)\ntime.sleep(1.5)\nprint('second line')",
    "javascript": "console.log('first line');\nawait new Promise(r => setTimeout(r, 1500));\nconsole.log('second line');",
    "bash": "echo 'first line'\nsleep 1.5\necho 'second line'",
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_stdout_streams_before_the_code_finishes(sbx, language):
    first: list[float] = []
    lines: list[str] = []

    def on_stdout(message: OutputMessage) -> None:
        if not first:
            first.append(time.monotonic())
        lines.append(message.line)

    execution = ok(sbx.run_code(STREAMING_CODE[language], language=language, on_stdout=on_stdout))
    returned = time.monotonic()
    assert first, "on_stdout never fired"
    assert returned - first[0] > 1.0, f"the first chunk arrived only {returned - first[0]:.2f} s before the run ended: output is not streamed"
    assert "".join(lines) == "first line\nsecond line\n"
    assert stdout(execution) == "first line\nsecond line\n"


def test_callbacks_run_on_the_calling_thread(sbx):
    threads: set[int] = set()
    sbx.run_code("print('x')\n1", on_stdout=lambda m: threads.add(threading.get_ident()), on_result=lambda r: threads.add(threading.get_ident()))
    assert threads == {threading.get_ident()}


def test_stdout_stderr_display_interleaving(sbx):
    events: list[tuple[str, str]] = []
    code = (
        "import sys, time\n"
        "print('out-1')\n"
        "display('res-1')\n"
        "print('err-1', file=sys.stderr)\n"
        "display('res-2')\n"
        "print('out-2')\n"
        "time.sleep(0.1)\n"
        "print('err-2', file=sys.stderr)\n"
        "time.sleep(0.1)\n"
        "print('out-3')\n"
        "'main'"
    )
    ok(
        sbx.run_code(
            code,
            on_stdout=lambda m: events.append(("out", m.line)),
            on_stderr=lambda m: events.append(("err", m.line)),
            on_result=lambda r: events.append(("res", r.text)),
        )
    )
    assert merged(events) == [
        ("out", "out-1\n"),
        ("res", "res-1"),
        ("err", "err-1\n"),
        ("res", "res-2"),
        ("out", "out-2\n"),
        ("err", "err-2\n"),
        ("out", "out-3\n"),
        ("res", "main"),
    ]


def test_javascript_console_output_order_with_result(sbx):
    events: list[tuple[str, str]] = []
    ok(
        sbx.run_code(
            "console.log('a');\n"
            "await new Promise(r => setTimeout(r, 50));\n"
            "console.error('b');\n"
            "await new Promise(r => setTimeout(r, 50));\n"
            "console.log('c');\n"
            "'end'",
            language="javascript",
            on_stdout=lambda m: events.append(("out", m.line)),
            on_stderr=lambda m: events.append(("err", m.line)),
            on_result=lambda r: events.append(("res", r.text)),
        )
    )
    assert merged(events) == [("out", "a\n"), ("err", "b\n"), ("out", "c\n"), ("res", "end")]


# -- timeouts ------------------------------------------------------------------------
class TestTimeouts:
    def test_python_sleep_times_out_and_keeps_state(self, sbx):
        ok(sbx.run_code("kept_before_timeout = 'still here'"))
        started = time.monotonic()
        execution = sbx.run_code("import time\ntime.sleep(100)", timeout=2)
        elapsed = time.monotonic() - started
        assert execution.error is not None and execution.error.name == "TimeoutError", execution.error
        assert 1.5 < elapsed < 5, f"run_code returned after {elapsed:.1f} s"
        assert ok(sbx.run_code("kept_before_timeout")).text == "still here"

    def test_javascript_busy_loop_times_out_and_keeps_state(self, sbx):
        ok(sbx.run_code("const jsKeptBeforeTimeout = 'js state';", language="javascript"))
        started = time.monotonic()
        execution = sbx.run_code("while (true) {}", language="javascript", timeout=2)
        elapsed = time.monotonic() - started
        assert execution.error is not None and execution.error.name == "TimeoutError", execution.error
        assert elapsed < 5, f"run_code returned after {elapsed:.1f} s"
        assert ok(sbx.run_code("jsKeptBeforeTimeout", language="javascript")).text == "js state"

    def test_javascript_pending_promise_times_out_and_keeps_state(self, sbx):
        ok(sbx.run_code("const jsKeptBeforePromise = 5;", language="javascript"))
        started = time.monotonic()
        execution = sbx.run_code("await new Promise(() => {})", language="javascript", timeout=2)
        elapsed = time.monotonic() - started
        assert execution.error is not None and execution.error.name == "TimeoutError", execution.error
        assert elapsed < 5, f"run_code returned after {elapsed:.1f} s"
        assert ok(sbx.run_code("jsKeptBeforePromise * 2", language="javascript")).text == "10"

    def test_bash_sleep_times_out_and_keeps_state(self, sbx):
        ok(sbx.run_code("export BASH_KEPT_BEFORE_TIMEOUT=yes", language="bash"))
        started = time.monotonic()
        execution = sbx.run_code("sleep 100", language="bash", timeout=2)
        elapsed = time.monotonic() - started
        assert execution.error is not None and execution.error.name == "TimeoutError", execution.error
        assert elapsed < 5, f"run_code returned after {elapsed:.1f} s"
        assert stdout(ok(sbx.run_code("echo $BASH_KEPT_BEFORE_TIMEOUT", language="bash"))) == "yes\n"

    def test_python_timeout_stops_child_processes(self, sbx):
        ok(sbx.run_code("kept_across_child_timeout = 3"))
        execution = sbx.run_code("import subprocess\nsubprocess.run(['sleep', '101'])", timeout=2)
        assert execution.error is not None and execution.error.name == "TimeoutError", execution.error
        assert "sleep 101" not in sbx.commands.run("ps -eo args").stdout
        assert ok(sbx.run_code("kept_across_child_timeout")).text == "3"

    def test_output_before_timeout_is_kept(self, sbx):
        execution = sbx.run_code("import time\nprint('before sleeping')\ntime.sleep(100)", timeout=1)
        assert execution.error is not None and execution.error.name == "TimeoutError"
        assert stdout(execution) == "before sleeping\n"

    @pytest.mark.slow
    def test_python_loop_ignoring_interrupt_is_killed(self, fresh):
        ok(fresh.run_code("lost_after_kill = 1"))
        code = "import time\nwhile True:\n    try:\n        time.sleep(0.05)\n    except KeyboardInterrupt:\n        pass"
        started = time.monotonic()
        execution = fresh.run_code(code, timeout=1)
        elapsed = time.monotonic() - started
        assert execution.error is not None and execution.error.name == "TimeoutError", execution.error
        assert "state is lost" in execution.error.value
        assert elapsed < 1 + 3 + 3, f"run_code returned after {elapsed:.1f} s"
        assert ok(fresh.run_code("2 + 2")).text == "4"
        lost = fresh.run_code("lost_after_kill")
        assert lost.error is not None and lost.error.name == "NameError"

    def test_keyboard_interrupt_on_the_host_stops_the_code_and_keeps_state(self, sbx):
        ok(sbx.run_code("kept_after_ctrl_c = 'kept'"))

        def on_stdout(message: OutputMessage) -> None:
            raise KeyboardInterrupt  # what Ctrl-C while waiting looks like

        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            sbx.run_code("import time\nprint('go', flush=True)\ntime.sleep(100)", on_stdout=on_stdout)
        assert time.monotonic() - started < 5
        # The next run is not confused with the end of the interrupted one.
        execution = ok(sbx.run_code("kept_after_ctrl_c"))
        assert execution.text == "kept"

    def test_no_timeout(self, sbx):
        assert ok(sbx.run_code("import time; time.sleep(0.2); 'slept'", timeout=None)).text == "slept"


# -- contexts ------------------------------------------------------------------------
class TestContexts:
    @pytest.mark.parametrize("language", LANGUAGES)
    def test_context_with_missing_cwd_is_created(self, sbx, language):
        cwd = f"/home/user/ctx_dirs/{language}/nested"
        context = sbx.create_code_context(cwd=cwd, language=language)
        try:
            assert context.language == language and context.cwd == cwd and context.id
            code = {"python": "import os\nprint(os.getcwd())", "javascript": "console.log(process.cwd())", "bash": "pwd"}[language]
            assert stdout(ok(sbx.run_code(code, context=context))) == cwd + "\n"
            assert sbx.files.exists(cwd)
        finally:
            sbx.remove_code_context(context)

    def test_relative_cwd_resolves_under_home(self, sbx):
        context = sbx.create_code_context(cwd="relative_ctx", language="bash")
        try:
            assert context.cwd == "/home/user/relative_ctx"
            assert stdout(ok(sbx.run_code("pwd", context=context))) == "/home/user/relative_ctx\n"
        finally:
            sbx.remove_code_context(context)

    def test_default_language_is_python(self, sbx):
        context = sbx.create_code_context()
        try:
            assert context.language == "python"
            assert context.cwd == "/home/user"
        finally:
            sbx.remove_code_context(context)

    @pytest.mark.parametrize(
        ("language", "setter", "getter", "missing"),
        [
            ("python", "ctx_value = 'A'", "ctx_value", "NameError"),
            ("javascript", "const ctxValue = 'A';", "ctxValue", "ReferenceError"),
        ],
    )
    def test_states_are_independent(self, sbx, language, setter, getter, missing):
        first = sbx.create_code_context(language=language)
        second = sbx.create_code_context(language=language)
        try:
            ok(sbx.run_code(setter, context=first))
            assert ok(sbx.run_code(getter, context=first)).text == "A"
            other = sbx.run_code(getter, context=second)
            assert other.error is not None and other.error.name == missing
            default = sbx.run_code(getter, language=language)
            assert default.error is not None and default.error.name == missing
        finally:
            sbx.remove_code_context(first)
            sbx.remove_code_context(second)

    def test_bash_states_are_independent(self, sbx):
        first = sbx.create_code_context(language="bash")
        second = sbx.create_code_context(language="bash")
        try:
            ok(sbx.run_code("export CTX_ONLY=first; cd /tmp", context=first))
            assert stdout(ok(sbx.run_code("echo ${CTX_ONLY:-unset}; pwd", context=first))) == "first\n/tmp\n"
            assert stdout(ok(sbx.run_code("echo ${CTX_ONLY:-unset}; pwd", context=second))) == "unset\n/home/user\n"
            assert stdout(ok(sbx.run_code("echo ${CTX_ONLY:-unset}", language="bash"))) == "unset\n"
        finally:
            sbx.remove_code_context(first)
            sbx.remove_code_context(second)

    def test_default_context_state_is_invisible_to_new_contexts(self, sbx):
        ok(sbx.run_code("only_in_default = 1"))
        context = sbx.create_code_context(language="python")
        try:
            execution = sbx.run_code("only_in_default", context=context)
            assert execution.error is not None and execution.error.name == "NameError"
        finally:
            sbx.remove_code_context(context)

    def test_list_restart_remove(self, sbx):
        context = sbx.create_code_context(language="python")
        js = sbx.create_code_context(language="javascript")
        try:
            listed = {c.id: c for c in sbx.list_code_contexts()}
            assert context.id in listed and js.id in listed
            assert listed[context.id].language == "python" and listed[js.id].language == "javascript"
            assert listed[context.id].cwd == context.cwd

            ok(sbx.run_code("restart_me = 1", context=context))
            ok(sbx.run_code("let restartMe = 1;", context=js))
            sbx.restart_code_context(context)
            sbx.restart_code_context(js.id)  # an id works as well
            after = sbx.run_code("restart_me", context=context)
            assert after.error is not None and after.error.name == "NameError", "restart should clear the state"
            after = sbx.run_code("restartMe", context=js)
            assert after.error is not None and after.error.name == "ReferenceError", "restart should clear the state"
            assert ok(sbx.run_code("1 + 1", context=context)).text == "2"
        finally:
            sbx.remove_code_context(context)
            sbx.remove_code_context(js)
        ids = {c.id for c in sbx.list_code_contexts()}
        assert context.id not in ids and js.id not in ids
        with pytest.raises(NotFoundException):
            sbx.run_code("1", context=context)
        with pytest.raises(NotFoundException):
            sbx.remove_code_context(context)
        with pytest.raises(NotFoundException):
            sbx.restart_code_context(context)

    def test_context_and_language_mismatch(self, sbx):
        context = sbx.create_code_context(language="bash")
        try:
            with pytest.raises(InvalidArgumentException):
                sbx.run_code("1", language="python", context=context)
            # The context's own language works with or without naming it.
            assert ok(sbx.run_code("echo x", language="bash", context=context)).logs.stdout == ["x\n"]
        finally:
            sbx.remove_code_context(context)

    def test_context_envs(self, sbx):
        context = sbx.create_code_context(language="python", envs={"CTX_LEVEL_VAR": "ctx-value"})
        try:
            assert ok(sbx.run_code("import os\nos.environ.get('CTX_LEVEL_VAR')", context=context)).text == "ctx-value"
            assert ok(sbx.run_code("import os\nos.environ.get('CTX_LEVEL_VAR')")).text is None
        finally:
            sbx.remove_code_context(context)

    def test_restart_interrupts_a_running_cell(self, sbx):
        context = sbx.create_code_context(language="python")
        holder: dict[str, Execution] = {}
        worker = threading.Thread(target=lambda: holder.setdefault("x", sbx.run_code("import time\ntime.sleep(60)", context=context, timeout=30)))
        try:
            worker.start()
            time.sleep(0.7)
            started = time.monotonic()
            sbx.restart_code_context(context)
            worker.join(10)
            assert not worker.is_alive(), "the running cell did not end when its context restarted"
            assert time.monotonic() - started < 8
            assert holder["x"].error is not None
            assert ok(sbx.run_code("'alive'", context=context)).text == "alive"
        finally:
            worker.join(40)
            sbx.remove_code_context(context)


# -- environment variables -------------------------------------------------------------
class TestEnvs:
    def test_sandbox_envs_visible_everywhere(self, sbx):
        assert ok(sbx.run_code("import os\nos.environ['SANDCELL_TEST_SBX_VAR']")).text == "sandbox-level-value"
        assert ok(sbx.run_code("process.env.SANDCELL_TEST_SBX_VAR", language="javascript")).text == "sandbox-level-value"
        assert stdout(ok(sbx.run_code("echo $SANDCELL_TEST_SBX_VAR", language="bash"))) == "sandbox-level-value\n"
        assert sbx.commands.run("echo $SANDCELL_TEST_SBX_VAR").stdout == "sandbox-level-value\n"

    def test_run_envs_only_during_that_run_python(self, sbx):
        code = (
            "import os, subprocess\nprint(subprocess.run(['printenv', 'RUN_ONLY'], capture_output=True, text=True).stdout, end='')\nos.environ.get('RUN_ONLY')"
        )
        execution = ok(sbx.run_code(code, envs={"RUN_ONLY": "py-run"}))
        assert execution.text == "py-run"
        assert stdout(execution) == "py-run\n"
        assert ok(sbx.run_code("import os\nos.environ.get('RUN_ONLY')")).text is None

    def test_run_envs_override_sandbox_envs_for_one_run(self, sbx):
        assert ok(sbx.run_code("import os\nos.environ['SANDCELL_TEST_SBX_VAR']", envs={"SANDCELL_TEST_SBX_VAR": "override"})).text == "override"
        assert ok(sbx.run_code("import os\nos.environ['SANDCELL_TEST_SBX_VAR']")).text == "sandbox-level-value"

    def test_run_envs_only_during_that_run_javascript(self, sbx):
        assert ok(sbx.run_code("process.env.RUN_ONLY", language="javascript", envs={"RUN_ONLY": "js-run"})).text == "js-run"
        assert ok(sbx.run_code("process.env.RUN_ONLY === undefined", language="javascript")).text == "true"

    def test_run_envs_only_during_that_run_bash(self, sbx):
        execution = ok(sbx.run_code("echo $RUN_ONLY; printenv RUN_ONLY", language="bash", envs={"RUN_ONLY": "sh run"}))
        assert stdout(execution) == "sh run\nsh run\n"
        assert stdout(ok(sbx.run_code("echo ${RUN_ONLY:-unset}", language="bash"))) == "unset\n"

    def test_invalid_env_name(self, sbx):
        with pytest.raises(InvalidArgumentException):
            sbx.run_code("1", envs={"BAD-NAME": "x"})


# -- bad requests ------------------------------------------------------------------------
def test_unknown_language(sbx):
    with pytest.raises(InvalidArgumentException) as info:
        sbx.run_code("print(1)", language="cobol")
    message = str(info.value)
    assert "cobol" in message and "python" in message, message
    with pytest.raises(InvalidArgumentException):
        sbx.create_code_context(language="cobol")


def test_input_does_not_hang(sbx):
    started = time.monotonic()
    execution = sbx.run_code("input('name? ')", timeout=10)
    assert execution.error is not None and execution.error.name == "EOFError"
    assert time.monotonic() - started < 3


def test_code_must_be_a_string(sbx):
    with pytest.raises(InvalidArgumentException):
        sbx.run_code(b"1")  # type: ignore[arg-type]


def test_empty_code(sbx):
    execution = ok(sbx.run_code(""))
    assert execution.results == [] and execution.logs.stdout == []


# -- interpreter death --------------------------------------------------------------------
DEATHS = [
    ("python", "import os\nos._exit(1)", "status 1"),
    ("python", "import ctypes\nctypes.string_at(0)", "SIGSEGV"),
    ("javascript", "process.exit(3)", "status 3"),
    ("bash", "exit 4", "status 4"),
]


@pytest.mark.parametrize(("language", "code", "detail"), DEATHS, ids=["python-exit", "python-segfault", "js-exit", "bash-exit"])
def test_interpreter_death(fresh, language, code, detail):
    setter = {"python": "before_death = 1", "javascript": "var beforeDeath = 1;", "bash": "before_death=1"}[language]
    ok(fresh.run_code(setter, language=language))
    execution = fresh.run_code(f"{code}", language=language, timeout=30)
    assert execution.error is not None, "the death of the interpreter was not reported"
    assert execution.error.name == "InterpreterDied", execution.error
    assert detail in execution.error.value, execution.error.value
    assert "restart" in execution.error.value
    assert fresh.is_running()
    # The next run in that language starts a new interpreter.
    check = {"python": "21 * 2", "javascript": "21 * 2", "bash": "echo $((21 * 2))"}[language]
    execution = ok(fresh.run_code(check, language=language))
    assert (execution.text or stdout(execution).strip()) == "42"
    # ...whose state is empty.
    lost = {"python": "before_death", "javascript": "beforeDeath", "bash": "echo ${before_death:-lost}"}[language]
    execution = fresh.run_code(lost, language=language)
    if language == "bash":
        assert stdout(execution) == "lost\n"
    else:
        assert execution.error is not None
    # Other languages and the rest of the sandbox are unaffected.
    assert ok(fresh.run_code("'other'", language="python" if language != "python" else "javascript")).text == "other"
    assert fresh.commands.run("echo alive").stdout == "alive\n"


def test_output_before_death_is_kept(fresh):
    execution = fresh.run_code("import os\nprint('last words', flush=True)\nos._exit(2)")
    assert stdout(execution) == "last words\n"
    assert execution.error is not None and execution.error.name == "InterpreterDied"


def test_death_in_custom_context(fresh):
    context = fresh.create_code_context(language="javascript")
    execution = fresh.run_code("process.exit(0)", context=context)
    assert execution.error is not None and execution.error.name == "InterpreterDied"
    assert ok(fresh.run_code("1 + 2", context=context)).text == "3"


# -- unicode and volume ---------------------------------------------------------------------
UNICODE = "héllo wörld — 日本語 🎉 Ωμέγα"


@pytest.mark.parametrize(
    ("language", "code"),
    [
        ("python", f"print({UNICODE!r})"),
        ("javascript", f"console.log({json.dumps(UNICODE)})"),
        ("bash", f"echo '{UNICODE}'"),
    ],
)
def test_unicode_output(sbx, language, code):
    assert stdout(ok(sbx.run_code(code, language=language))) == UNICODE + "\n"


def test_unicode_result(sbx):
    assert ok(sbx.run_code(f"{UNICODE!r}")).text == UNICODE
    assert ok(sbx.run_code(f"{json.dumps(UNICODE)}", language="javascript")).text == f"{UNICODE}"


@pytest.mark.parametrize(
    ("language", "code"),
    [
        (
            "python",
            "import os, time\ndata = '日本🎉'.encode()\nfor i in range(len(data)):\n    os.write(1, data[i:i + 1])\n    time.sleep(0.03)\nos.write(1, b'\\n')",
        ),
        (
            "javascript",
            (
                "const data = Buffer.from('日本🎉');\n"
                "for (let i = 0; i < data.length; i++) {\n"
                "  process.stdout.write(data.subarray(i, i + 1));\n"
                "  await new Promise(r => setTimeout(r, 30));\n"
                "}\n"
                "process.stdout.write('\\n');"
            ),
        ),
        ("bash", "for b in '\\xe6' '\\x97' '\\xa5' '\\xe6\\x9c' '\\xac' '\\xf0\\x9f' '\\x8e' '\\x89' '\\n'; do printf \"$b\"; sleep 0.03; done"),
    ],
)
def test_multibyte_characters_split_across_chunks(sbx, language, code):
    chunks: list[str] = []
    execution = ok(sbx.run_code(code, language=language, on_stdout=lambda m: chunks.append(m.line)))
    assert stdout(execution) == "日本🎉\n"
    assert "".join(chunks) == "日本🎉\n"
    assert all("\ufffd" not in chunk for chunk in chunks), chunks


def test_invalid_utf8_output_is_replaced_not_fatal(sbx):
    execution = ok(sbx.run_code("import os\nos.write(1, b'ok \\xff\\xfe end\\n')"))
    assert stdout(execution) == "ok \ufffd\ufffd end\n"


@pytest.mark.parametrize(
    ("language", "code"),
    [
        ("python", "import sys\nsys.stdout.write(''.join(f'{i:07d}\\n' for i in range(131072)))"),
        ("javascript", "let out = '';\nfor (let i = 0; i < 131072; i++) out += String(i).padStart(7, '0') + '\\n';\nprocess.stdout.write(out);"),
        ("bash", "seq -f '%07g' 0 131071"),
    ],
)
def test_large_output_is_intact(sbx, language, code):
    expected = "".join(f"{i:07d}\n" for i in range(131072))
    assert len(expected) == 1024 * 1024
    execution = ok(sbx.run_code(code, language=language))
    assert stdout(execution) == expected


def test_large_stderr_and_result(sbx):
    execution = ok(sbx.run_code("import sys\nsys.stderr.write('e' * 1_000_000)\n'r' * 1_000_000"))
    assert stderr(execution) == "e" * 1_000_000
    assert execution.text == "r" * 1_000_000


def test_output_limit_truncates_with_marker():
    from sandcell import Limits

    with Sandbox.create(timeout=120, limits=Limits(output_mb=1)) as sandbox:
        execution = sandbox.run_code("import sys\nsys.stdout.write('z' * 3_000_000)\nprint('after')\n'still returns'")
        assert execution.error is None
        assert stdout(execution) == "z" * (1024 * 1024)
        assert "truncated" in stderr(execution)
        assert execution.text == "still returns"
        # The cap is per run.
        assert stdout(ok(sandbox.run_code("print('next run')"))) == "next run\n"


# -- concurrency ------------------------------------------------------------------------------
def test_runs_in_different_languages_run_concurrently(sbx):
    results: dict[str, float] = {}

    def run(language: str, code: str) -> None:
        started = time.monotonic()
        ok(sbx.run_code(code, language=language))
        results[language] = time.monotonic() - started

    threads = [
        threading.Thread(target=run, args=("python", "import time; time.sleep(1)")),
        threading.Thread(target=run, args=("javascript", "await new Promise(r => setTimeout(r, 1000))")),
        threading.Thread(target=run, args=("bash", "sleep 1")),
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert set(results) == {"python", "javascript", "bash"}
    assert time.monotonic() - started < 2.5, "runs in different contexts should not wait for each other"


def test_runs_in_one_context_are_serialized(sbx):
    order: list[str] = []

    def run(tag: str, delay: float) -> None:
        time.sleep(delay)
        ok(
            sbx.run_code(
                f"import time\nserial_log = globals().get('serial_log', []) + ['{tag}-start']\ntime.sleep(0.4)\nserial_log = serial_log + ['{tag}-end']"
            )
        )
        order.append(tag)

    first = threading.Thread(target=run, args=("a", 0))
    second = threading.Thread(target=run, args=("b", 0.15))
    first.start()
    second.start()
    first.join(30)
    second.join(30)
    log = ok(sbx.run_code("serial_log")).text
    assert log == "['a-start', 'a-end', 'b-start', 'b-end']"


def test_sandbox_killed_cannot_run(fresh):
    fresh.kill()
    assert not fresh.is_running()
    with pytest.raises(SandboxException):
        fresh.run_code("1")


CLOSE_EVENT_CHANNEL = {
    "python": "import os\nos.close(4)\nprint('closed')",
    "javascript": "require('fs').closeSync(4); 'closed'",
    "bash": "exec 4>&-; echo closed",
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_code_that_closes_the_event_channel_ends_the_run_promptly(fresh, language):
    started = time.monotonic()
    execution = fresh.run_code(CLOSE_EVENT_CHANNEL[language], language=language, timeout=60)
    assert time.monotonic() - started < 10, "the run must end well before its timeout"
    assert execution.error is not None and execution.error.name == "InterpreterDied"
    assert ok(fresh.run_code({"python": "1+1", "javascript": "1+1", "bash": "echo 2"}[language], language=language)).text in ("2", None)
