"""The official synchronous ``e2b_code_interpreter`` SDK, unchanged, against ``sandcell serve``."""

from __future__ import annotations

import base64
import itertools
import time

import pytest
from e2b import CommandExitException, NotFoundException, SandboxQuery, TimeoutException
from e2b.exceptions import FileNotFoundException, SandboxException
from e2b_code_interpreter import Sandbox
from sandboxes import SandboxFactory


@pytest.fixture
def sbx(make_e2b_sandbox: SandboxFactory[Sandbox]) -> Sandbox:
    return make_e2b_sandbox()


# -- lifecycle -------------------------------------------------------------------


def test_create_with_metadata_envs_and_template_then_info_list_and_kill() -> None:
    sandbox = Sandbox.create(template="base", timeout=60, metadata={"owner": "tests", "run": "lifecycle"}, envs={"GREETING": "hej"})
    try:
        info = sandbox.get_info()
        assert info.sandbox_id == sandbox.sandbox_id
        assert info.metadata == {"owner": "tests", "run": "lifecycle"}
        assert info.template_id == "base"
        assert 50 < (info.end_at - info.started_at).total_seconds() <= 61
        assert sandbox.commands.run("echo $GREETING").stdout == "hej\n"
        assert sandbox.run_code("import os; os.environ['GREETING']").text == "hej"

        listed = Sandbox.list(query=SandboxQuery(metadata={"run": "lifecycle"})).next_items()
        assert [item.sandbox_id for item in listed] == [sandbox.sandbox_id]
        assert Sandbox.list(query=SandboxQuery(metadata={"run": "no such run"})).next_items() == []
        assert sandbox.is_running()
    finally:
        sandbox.kill()
    assert not sandbox.is_running()
    assert sandbox.sandbox_id not in [item.sandbox_id for item in Sandbox.list().next_items()]
    with pytest.raises(NotFoundException):
        Sandbox.connect(sandbox.sandbox_id)


def test_set_timeout_moves_the_end_and_the_sandbox_ends_at_it(sbx: Sandbox) -> None:
    sbx.set_timeout(300)
    assert 290 < (sbx.get_info().end_at - sbx.get_info().started_at).total_seconds() < 310
    sbx.set_timeout(2)
    time.sleep(3.5)
    assert not sbx.is_running()
    with pytest.raises(SandboxException):
        sbx.run_code("1")


def test_connect_from_a_second_client_sees_the_same_state(sbx: Sandbox) -> None:
    sbx.run_code("shared = 'from the first client'")
    other = Sandbox.connect(sbx.sandbox_id)
    assert other.run_code("shared").text == "from the first client"
    sbx.files.write("note.txt", "hello")
    assert other.files.read("note.txt") == "hello"


def test_unknown_template_is_refused() -> None:
    with pytest.raises(SandboxException, match="not found"):
        Sandbox.create(template="no-such-template")


def test_the_default_template_has_e2bs_packages_and_base_has_not(sbx: Sandbox) -> None:
    fitted = sbx.run_code("from sklearn.linear_model import LinearRegression\nround(float(LinearRegression().fit([[0], [1]], [1, 3]).coef_[0]), 6)")
    assert fitted.error is None and fitted.text == "2.0"
    assert sbx.commands.run("python -c 'import scipy; print(scipy.__name__)'").stdout == "scipy\n"
    assert sbx.get_info().template_id == "code-interpreter-v1"
    assert {item.sandbox_id: item.template_id for item in Sandbox.list().next_items()}[sbx.sandbox_id] == "code-interpreter-v1"
    base = Sandbox.create(template="base", timeout=60)
    try:
        assert base.run_code("import sklearn").error.name == "ModuleNotFoundError"
    finally:
        base.kill()


# -- code ------------------------------------------------------------------------


def test_run_code_in_three_languages_keeps_state_and_counts_executions(sbx: Sandbox) -> None:
    first = sbx.run_code("x = 20")
    second = sbx.run_code("x * 2 + 2")
    assert second.text == "42"
    assert second.execution_count == (first.execution_count or 0) + 1
    assert sbx.run_code("let n = 5; n * 2", language="javascript").text == "10"
    assert sbx.run_code("n + 1", language="js").text == "6"
    bash = sbx.run_code("export COLOR=blue; echo $COLOR", language="bash")
    assert bash.logs.stdout == ["blue\n"]


def test_streaming_callbacks_fire_while_code_runs(sbx: Sandbox) -> None:
    seen: list[tuple[float, str]] = []
    started = time.monotonic()
    execution = sbx.run_code(
        "import sys, time\nprint('early', flush=True)\ntime.sleep(1.5)\nprint('late', file=sys.stderr)",
        on_stdout=lambda message: seen.append((time.monotonic() - started, message.line)),
        on_stderr=lambda message: seen.append((time.monotonic() - started, message.line)),
    )
    assert [line for _, line in seen] == ["early\n", "late\n"]
    assert seen[1][0] - seen[0][0] > 1.0, "the first line must arrive before the code ends"
    assert execution.logs.stdout == ["early\n"] and execution.logs.stderr == ["late\n"]


def test_rich_results_png_html_json(sbx: Sandbox) -> None:
    chart = sbx.run_code("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()")
    png = [result.png for result in chart.results if result.png]
    assert png and base64.b64decode(png[0]).startswith(b"\x89PNG")
    table = sbx.run_code("import pandas as pd\npd.DataFrame({'a': [1, 2]})")
    assert "<table" in table.results[0].html and table.results[0].is_main_result
    data = sbx.run_code("from IPython.display import JSON, display\ndisplay(JSON({'k': [1, 2]}))")
    assert data.results[0].json == {"k": [1, 2]}


def test_errors_are_structured(sbx: Sandbox) -> None:
    errors = []
    execution = sbx.run_code("1 / 0", on_error=errors.append)
    assert execution.error.name == "ZeroDivisionError"
    assert "division by zero" in execution.error.value
    assert "ZeroDivisionError" in execution.error.traceback
    assert errors and errors[0].name == "ZeroDivisionError"
    assert sbx.run_code("throw new TypeError('bad')", language="javascript").error.name == "TypeError"


def test_code_contexts_create_list_restart_remove(sbx: Sandbox) -> None:
    context = sbx.create_code_context(cwd="/tmp", language="python")
    assert context.cwd == "/tmp" and context.language == "python"
    sbx.run_code("value = 7", context=context)
    assert sbx.run_code("import os; os.getcwd()", context=context).text == "/tmp"
    assert sbx.run_code("'value' in globals()").text == "False", "the default context is separate"
    assert context.id in [item.id for item in sbx.list_code_contexts()]
    sbx.restart_code_context(context)
    assert sbx.run_code("'value' in globals()", context=context).text == "False"
    sbx.remove_code_context(context)
    assert context.id not in [item.id for item in sbx.list_code_contexts()]
    js = sbx.create_code_context(language="javascript")
    assert sbx.run_code("typeof process", context=js).text == "object"


def test_env_vars_per_run(sbx: Sandbox) -> None:
    assert sbx.run_code("import os; os.environ.get('ONLY_NOW')", envs={"ONLY_NOW": "yes"}).text == "yes"
    assert sbx.run_code("import os; repr(os.environ.get('ONLY_NOW'))").text == "None"


def test_run_timeout_interrupts_and_keeps_state(sbx: Sandbox) -> None:
    sbx.run_code("kept = 1")
    with pytest.raises(TimeoutException):
        sbx.run_code("import time\nwhile True: time.sleep(0.05)", timeout=1.5)
    assert sbx.run_code("kept + 1", timeout=30).text == "2"


# -- files -----------------------------------------------------------------------


def test_files_roundtrip_text_and_bytes(sbx: Sandbox) -> None:
    info = sbx.files.write("/home/user/data/hello.txt", "hello\nworld")
    assert info.path == "/home/user/data/hello.txt"
    assert sbx.files.read("/home/user/data/hello.txt") == "hello\nworld"
    payload = bytes(range(256)) * 4096  # 1 MiB, every byte value
    sbx.files.write("blob.bin", payload)
    assert bytes(sbx.files.read("blob.bin", format="bytes")) == payload
    assert (
        sbx.run_code("import hashlib; hashlib.sha256(open('/home/user/blob.bin','rb').read()).hexdigest()").text.strip("'")
        == __import__("hashlib").sha256(payload).hexdigest()
    )


def test_files_list_exists_info_rename_remove_make_dir(sbx: Sandbox) -> None:
    assert sbx.files.make_dir("/home/user/project") is True
    assert sbx.files.make_dir("/home/user/project") is False
    sbx.files.write("/home/user/project/a.py", "print(1)")
    entries = sbx.files.list("/home/user/project")
    assert [(entry.name, entry.type.value, entry.size) for entry in entries] == [("a.py", "file", 8)]
    assert sbx.files.exists("/home/user/project/a.py")
    assert not sbx.files.exists("/home/user/project/missing.py")
    info = sbx.files.get_info("/home/user/project")
    assert info.type.value == "dir" and info.name == "project"
    moved = sbx.files.rename("/home/user/project/a.py", "/home/user/project/b.py")
    assert moved.path == "/home/user/project/b.py"
    sbx.files.remove("/home/user/project/b.py")
    assert sbx.files.list("/home/user/project") == []
    with pytest.raises(FileNotFoundException):
        sbx.files.read("/home/user/project/b.py")


def test_write_files_multipart_several_at_once(sbx: Sandbox) -> None:
    from e2b.sandbox.filesystem.filesystem import WriteEntry

    written = sbx.files.write_files([WriteEntry(path="/home/user/m/one.txt", data="1"), WriteEntry(path="/home/user/m/two.txt", data=b"2")])
    assert sorted(info.path for info in written) == ["/home/user/m/one.txt", "/home/user/m/two.txt"]
    assert sbx.files.read("/home/user/m/two.txt") == "2"


# -- commands --------------------------------------------------------------------


def test_command_foreground_with_envs_cwd_and_exit_code(sbx: Sandbox) -> None:
    result = sbx.commands.run("pwd; echo $WHO", envs={"WHO": "sandcell"}, cwd="/tmp")
    assert result.stdout == "/tmp\nsandcell\n" and result.exit_code == 0
    with pytest.raises(CommandExitException) as failed:
        sbx.commands.run("echo oops >&2; exit 3")
    assert failed.value.exit_code == 3 and failed.value.stderr == "oops\n"


def test_command_streams_output_as_it_comes(sbx: Sandbox) -> None:
    seen: list[float] = []
    started = time.monotonic()
    sbx.commands.run("echo one; sleep 1.2; echo two", on_stdout=lambda line: seen.append(time.monotonic() - started))
    assert len(seen) == 2 and seen[1] - seen[0] > 0.9


def test_background_command_stdin_list_and_kill(sbx: Sandbox) -> None:
    handle = sbx.commands.run("cat", background=True, stdin=True)
    sbx.commands.send_stdin(handle.pid, "piped text\n")
    sleeper = sbx.commands.run("sleep 60", background=True)
    assert {handle.pid, sleeper.pid} <= {process.pid for process in sbx.commands.list()}
    sbx.commands.close_stdin(handle.pid)
    assert sbx.commands.kill(sleeper.pid)
    with pytest.raises(CommandExitException):
        sleeper.wait()
    assert handle.wait().stdout == "piped text\n"
    assert sleeper.pid not in {process.pid for process in sbx.commands.list()}


def test_connect_to_a_background_command_from_another_client(sbx: Sandbox) -> None:
    handle = sbx.commands.run("for i in 1 2 3 4 5 6; do echo tick $i; sleep 0.3; done", background=True)
    follower = Sandbox.connect(sbx.sandbox_id).commands.connect(handle.pid)
    result = follower.wait()
    assert result.exit_code == 0 and "tick 6\n" in result.stdout
    assert handle.wait().stdout.count("tick") == 6


def test_watch_dir_reports_changes(sbx: Sandbox) -> None:
    sbx.files.make_dir("/home/user/watched")
    watcher = sbx.files.watch_dir("/home/user/watched")
    sbx.files.write("/home/user/watched/new.txt", "x")
    sbx.files.remove("/home/user/watched/new.txt")
    deadline = time.monotonic() + 5
    events: list = []
    while time.monotonic() < deadline and not any(event.type.value == "remove" for event in events):
        events += watcher.get_new_events()
        time.sleep(0.1)
    watcher.stop()
    kinds = {(event.name, event.type.value) for event in events}
    assert {("new.txt", "create"), ("new.txt", "remove")} <= kinds


def test_pause_and_resume_keep_state(sbx: Sandbox) -> None:
    sbx.run_code("import time; counter = 0")
    sbx.commands.run("while true; do date +%s%N >> /tmp/ticks; sleep 0.05; done", background=True)
    time.sleep(0.5)
    sbx.pause()
    assert sbx.get_info().state.value == "paused"
    time.sleep(1)
    resumed = Sandbox.connect(sbx.sandbox_id)
    assert resumed.get_info().state.value == "running"
    time.sleep(0.5)
    ticks = [int(line) for line in resumed.files.read("/tmp/ticks").split()]
    gaps = [later - earlier for earlier, later in itertools.pairwise(ticks)]
    assert max(gaps) > 0.9e9, "nothing ran while the sandbox was paused"
    assert resumed.run_code("counter + 1").text == "1"


def test_metrics(sbx: Sandbox) -> None:
    sbx.files.write("/home/user/five.bin", b"\0" * 5_000_000)
    metrics = sbx.get_metrics()
    assert metrics and metrics[-1].mem_used > 0 and metrics[-1].disk_used >= 5_000_000
    assert metrics[-1].mem_total >= metrics[-1].mem_used and metrics[-1].cpu_count >= 1


def test_e2b_quick_start_as_in_the_readme() -> None:
    sandbox = Sandbox.create()
    execution = sandbox.run_code("print('hello world')")
    assert execution.logs.stdout == ["hello world\n"]
    files = sandbox.files.list("/")
    assert {"home", "tmp", "usr"} <= {entry.name for entry in files}
    sandbox.kill()


def test_command_timeout_kills_the_command_as_envd_does(sbx: Sandbox) -> None:
    with pytest.raises(TimeoutException):
        sbx.commands.run("sleep 100", timeout=1.5)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and sbx.commands.list():
        time.sleep(0.1)
    assert sbx.commands.list() == []


def test_fork_carries_state_and_files_into_an_independent_sandbox(sbx: Sandbox) -> None:
    sbx.run_code("import pandas as pd\ntable = pd.DataFrame({'v': [1, 2, 3]})\ntotal = 6")
    sbx.files.write("/home/user/kept.txt", "before the fork")
    child, sibling = sbx.fork(count=2)
    sibling.kill()
    try:
        assert child.sandbox_id != sbx.sandbox_id
        assert child.run_code("int(table.v.sum()) == total").text == "True"
        assert child.files.read("/home/user/kept.txt") == "before the fork"
        child.run_code("total = 0")
        child.files.write("/home/user/kept.txt", "changed in the fork")
        assert sbx.run_code("total").text == "6"
        assert sbx.files.read("/home/user/kept.txt") == "before the fork"
    finally:
        child.kill()
