"""The agent against a real HTTP server that replays scripted model turns, with a real sandbox."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from sandcell import Sandbox
from sandcell.agent import Agent, Answer, CellOutput, CodeCell, Notice, Output, ProviderError, Saved, TextDelta, Thinking
from sandcell.agent.providers.openai_compatible import OpenAICompatibleProvider

from .scripted_server import Delayed, Failure, ScriptedServer, Stall, exec_code, text, tool_call


@pytest.fixture
def sandbox(make_sandbox):
    return make_sandbox(scope="module")


@pytest.fixture
def server():
    scripted = ScriptedServer()
    yield scripted
    scripted.close()


def make_agent(server: ScriptedServer, sandbox: Sandbox, tmp_path: Path, **kwargs) -> tuple[Agent, list]:
    events: list = []
    provider = OpenAICompatibleProvider(model="scripted", api_key="test", base_url=server.base_url, timeout=kwargs.pop("timeout", 30), max_retries=0)
    return Agent(provider, sandbox, on_event=events.append, output_dir=tmp_path, **kwargs), events


def tool_messages(server: ScriptedServer, request: int) -> list[dict]:
    return [m for m in server.requests[request]["messages"] if m["role"] == "tool"]


def test_a_tool_call_runs_and_its_output_goes_back_to_the_model(server, sandbox, tmp_path):
    fibonacci = "const f = [0n, 1n];\nwhile (f.length < 100) f.push(f.at(-1) + f.at(-2));\nconsole.log(f.join(' '))"
    server.replies = [text("Let me compute that. ") + exec_code(fibonacci, "javascript"), text("The 100th is 218922995834555169026.")]
    agent, events = make_agent(server, sandbox, tmp_path)
    answer = agent.ask("Generate the first 100 Fibonacci numbers using JavaScript")
    assert answer == "The 100th is 218922995834555169026."
    cells = [e for e in events if isinstance(e, CodeCell)]
    assert cells == [CodeCell("javascript", fibonacci)]
    output = next(e for e in events if isinstance(e, CellOutput))
    numbers = "".join(output.execution.logs.stdout).split()
    assert len(numbers) == 100 and numbers[:7] == ["0", "1", "1", "2", "3", "5", "8"]
    sent = tool_messages(server, 1)
    assert sent[0]["tool_call_id"] == "call_1" and "218922995834555169026" in sent[0]["content"]
    assistant = server.requests[1]["messages"][-2]
    assert assistant["role"] == "assistant" and assistant["content"] == "Let me compute that. "
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"])["language"] == "javascript"
    assert "".join(e.text for e in events if isinstance(e, TextDelta)).startswith("Let me compute that.")
    assert isinstance(events[-1], Answer)
    assert server.requests[0]["tools"][0]["function"]["name"] == "exec_code" and server.requests[0]["stream"] is True


def test_state_carries_over_between_steps_and_questions(server, sandbox, tmp_path):
    server.replies = [exec_code("carried = 41"), text("stored"), exec_code("carried + 1"), text("42")]
    agent, _ = make_agent(server, sandbox, tmp_path)
    agent.ask("store a number")
    assert agent.ask("add one") == "42"
    assert "result:\n42" in tool_messages(server, 3)[-1]["content"]
    assert [m["role"] for m in server.requests[3]["messages"]].count("user") == 2, "the whole conversation is sent"


def test_malformed_arguments_are_explained_to_the_model(server, sandbox, tmp_path):
    server.replies = [tool_call(0, "call_bad", "exec_code", '{"code": "print(1)", "language": '), exec_code("print('fixed')", call_id="call_2"), text("done")]
    agent, events = make_agent(server, sandbox, tmp_path)
    assert agent.ask("go") == "done"
    first = tool_messages(server, 1)[0]
    assert first["tool_call_id"] == "call_bad" and "not valid JSON" in first["content"]
    assert any(isinstance(e, Notice) for e in events)
    assert "fixed" in tool_messages(server, 2)[-1]["content"]


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [('{"language": "python"}', "'code' is missing"), ('{"code": "1", "language": "cobol"}', "unknown language"), ("[1, 2]", "JSON object")],
)
def test_unusable_arguments_get_a_clear_error(server, sandbox, tmp_path, arguments, expected):
    server.replies = [tool_call(0, "call_x", "exec_code", arguments), text("ok")]
    agent, _ = make_agent(server, sandbox, tmp_path)
    agent.ask("go")
    assert expected in tool_messages(server, 1)[0]["content"]


def test_a_missing_language_means_python(server, sandbox, tmp_path):
    server.replies = [tool_call(0, "call_py", "exec_code", '{"code": "6 * 7"}'), text("ok")]
    agent, _ = make_agent(server, sandbox, tmp_path)
    agent.ask("go")
    assert "result:\n42" in tool_messages(server, 1)[0]["content"]


def test_an_unknown_tool_is_answered_with_an_error(server, sandbox, tmp_path):
    server.replies = [tool_call(0, "call_web", "browse_web", '{"url": "http://example.com"}'), text("sorry")]
    agent, events = make_agent(server, sandbox, tmp_path)
    assert agent.ask("go") == "sorry"
    message = tool_messages(server, 1)[0]
    assert message["tool_call_id"] == "call_web" and "no tool named 'browse_web'" in message["content"]
    assert any(isinstance(e, Notice) and "browse_web" in e.text for e in events)


def test_several_calls_in_one_turn_each_get_their_answer(server, sandbox, tmp_path):
    turn = (
        exec_code("print('a')", index=0, call_id="call_a")
        + exec_code("echo b", "bash", index=1, call_id="call_b")
        + exec_code("console.log('c')", "javascript", index=2, call_id="call_c")
    )
    server.replies = [turn, text("all three ran")]
    agent, events = make_agent(server, sandbox, tmp_path)
    assert agent.ask("go") == "all three ran"
    answers = {m["tool_call_id"]: m["content"] for m in tool_messages(server, 1)}
    assert set(answers) == {"call_a", "call_b", "call_c"}
    assert "a" in answers["call_a"] and "b" in answers["call_b"] and "c" in answers["call_c"]
    assert [e.language for e in events if isinstance(e, CodeCell)] == ["python", "bash", "javascript"]


def test_code_errors_go_back_with_name_value_and_traceback(server, sandbox, tmp_path):
    server.replies = [exec_code("def broken(:\n    pass"), exec_code("1 / 0", call_id="call_2"), text("fixed it")]
    agent, _ = make_agent(server, sandbox, tmp_path)
    agent.ask("go")
    assert "error: SyntaxError" in tool_messages(server, 1)[0]["content"]
    assert "error: ZeroDivisionError: division by zero" in tool_messages(server, 2)[-1]["content"]


def test_long_output_is_cut_in_the_middle(server, sandbox, tmp_path):
    server.replies = [exec_code("for i in range(20000): print(i)"), text("ok")]
    agent, _ = make_agent(server, sandbox, tmp_path)
    agent.ask("go")
    content = tool_messages(server, 1)[0]["content"]
    assert "characters cut" in content and content.rstrip().endswith("19999") and "\n0\n" in content
    assert len(content) < 8000


def test_images_are_saved_for_the_person_and_described_to_the_model(server, sandbox, tmp_path):
    server.replies = [exec_code("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()"), text("here is the chart")]
    agent, events = make_agent(server, sandbox, tmp_path)
    agent.ask("plot")
    content = tool_messages(server, 1)[0]["content"]
    assert re.search(r"\[image/png \d+x\d+ saved as chart-1.png", content), content
    assert (tmp_path / "chart-1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    output = next(i for i, e in enumerate(events) if isinstance(e, CellOutput))
    assert events[output + 1] == Saved([tmp_path / "chart-1.png"]), "named right after its cell"


def test_output_files_are_saved_after_the_cell_that_wrote_them_once_per_version(server, make_sandbox, tmp_path):
    write = "import os\nos.makedirs('/home/user/outputs/sub', exist_ok=True)\nopen('/home/user/outputs/sub/a.txt', 'w').write({!r})"
    server.replies = [
        exec_code(write.format("one")),
        exec_code("print('untouched')", call_id="call_2"),
        exec_code(write.format("two, longer"), call_id="call_3"),
        text("ok"),
    ]
    agent, events = make_agent(server, make_sandbox(), tmp_path)
    agent.ask("write")
    kinds = [type(e).__name__ for e in events if not isinstance(e, (Thinking, TextDelta))]
    assert kinds == ["CodeCell", "CellOutput", "Saved", "CodeCell", "Output", "CellOutput", "CodeCell", "CellOutput", "Saved", "Answer"]
    assert [e.paths for e in events if isinstance(e, Saved)] == [[tmp_path / "sub" / "a.txt"]] * 2
    assert (tmp_path / "sub" / "a.txt").read_text() == "two, longer"


def test_each_step_records_where_its_time_went(server, sandbox, tmp_path):
    server.replies = [Delayed(0.3, text("Sleeping. ") + exec_code("import time; time.sleep(0.4)")), Delayed(0.2, text("done"))]
    agent, _ = make_agent(server, sandbox, tmp_path)
    started = time.perf_counter()
    agent.ask("go")
    wall = time.perf_counter() - started
    first, second = agent.timings
    for step in agent.timings:
        assert min(step.model, step.sandbox, step.overhead) >= 0
        assert step.model + step.sandbox + step.overhead == pytest.approx(step.total)
        assert 0 < step.first_token <= step.model
        assert step.overhead < 0.2
    assert 0.3 <= first.first_token < 1 and 0.4 <= first.sandbox < 1.5
    assert 0.2 <= second.first_token < 1 and second.sandbox == 0
    assert sum(step.total for step in agent.timings) == pytest.approx(wall, abs=0.02), "the steps account for the whole question"


def test_time_spent_waiting_for_approval_is_left_out(server, sandbox, tmp_path):
    def slow_yes(cell: CodeCell) -> bool:
        time.sleep(0.5)
        return True

    server.replies = [exec_code("1 + 1"), text("ok")]
    agent, _ = make_agent(server, sandbox, tmp_path, approve=slow_yes)
    started = time.perf_counter()
    agent.ask("go")
    wall = time.perf_counter() - started
    assert wall - sum(step.total for step in agent.timings) >= 0.5
    assert agent.timings[0].sandbox > 0 and agent.timings[0].overhead < 0.2


def test_a_model_that_never_stops_calling_tools_is_stopped(server, sandbox, tmp_path):
    server.replies = [exec_code("1", call_id=f"call_{i}") for i in range(10)]
    agent, events = make_agent(server, sandbox, tmp_path, max_steps=4)
    answer = agent.ask("loop forever")
    assert "Stopped after 4 steps" in answer
    assert len(server.requests) == 4
    assert isinstance(events[-1], Notice)


def test_declined_code_is_not_run(server, sandbox, tmp_path):
    server.replies = [exec_code("open('/home/user/should-not-exist', 'w')"), text("ok")]
    agent, _ = make_agent(server, sandbox, tmp_path, approve=lambda cell: False)
    agent.ask("go")
    assert "declined" in tool_messages(server, 1)[0]["content"]
    assert not sandbox.files.exists("/home/user/should-not-exist")


def test_a_server_error_is_a_clear_provider_error(server, sandbox, tmp_path):
    server.replies = [Failure(500, "model exploded")]
    agent, _ = make_agent(server, sandbox, tmp_path)
    with pytest.raises(ProviderError, match=r"HTTP 500.*model exploded"):
        agent.ask("go")


def test_a_server_that_stalls_is_a_timeout(server, sandbox, tmp_path):
    server.replies = [Stall(5)]
    agent, _ = make_agent(server, sandbox, tmp_path, timeout=1)
    with pytest.raises(ProviderError, match="did not answer in time"):
        agent.ask("go")


def test_an_unreachable_server_is_a_clear_error(sandbox, tmp_path):
    provider = OpenAICompatibleProvider(model="x", api_key="test", base_url="http://127.0.0.1:9/v1", max_retries=0)
    with pytest.raises(ProviderError, match="cannot reach"):
        Agent(provider, sandbox, output_dir=tmp_path).ask("go")


def test_the_chat_command_answers_one_question(server):
    import subprocess
    import sys

    server.replies = [text("Computing. ") + exec_code("print(sum(range(101)))"), text("The sum is 5050.")]
    env = {"OPENAI_API_KEY": "test", "OPENAI_BASE_URL": server.base_url, "PATH": "/usr/bin:/bin"}
    completed = subprocess.run(
        [sys.executable, "-m", "sandcell.cli", "chat", "add 0..100", "--model", "scripted"], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert "provider openai, model scripted" in completed.stdout
    assert "5050" in completed.stdout and "The sum is 5050." in completed.stdout


def test_the_chat_command_without_a_key_says_what_to_set():
    import subprocess
    import sys

    completed = subprocess.run(
        [sys.executable, "-m", "sandcell.cli", "chat", "hi", "--provider", "openai"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2
    assert "OPENAI_API_KEY" in completed.stdout


def test_the_conversation_exports_as_a_valid_notebook(server, sandbox, tmp_path):
    import nbformat

    from sandcell.agent.notebook import save

    plot = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 4])\nplt.show()\nprint('plotted')"
    server.replies = [
        text("Plotting. ") + exec_code(plot),
        exec_code("echo from bash", "bash", call_id="call_2"),
        exec_code("1/0", call_id="call_3"),
        text("Done."),
    ]
    agent, _ = make_agent(server, sandbox, tmp_path)
    agent.ask("plot doubling")
    path = save(agent.transcript, tmp_path / "session.ipynb")
    notebook = nbformat.read(str(path), as_version=4)
    nbformat.validate(notebook)
    kinds = [cell.cell_type for cell in notebook.cells]
    assert kinds == ["markdown", "markdown", "code", "code", "code", "markdown"]
    assert notebook.cells[0].source == "**You:** plot doubling"
    plot_cell = notebook.cells[2]
    assert plot_cell.source == plot and plot_cell.execution_count == 1
    assert any(output.output_type == "display_data" and "image/png" in output.data for output in plot_cell.outputs)
    assert any(output.output_type == "stream" and output.text == "plotted\n" for output in plot_cell.outputs)
    assert notebook.cells[3].source.startswith("%%bash\n")
    error = notebook.cells[4].outputs[-1]
    assert error.output_type == "error" and error.ename == "ZeroDivisionError"


def test_uploads_and_downloads_through_the_chat_command(server, tmp_path):
    import subprocess
    import sys

    data = tmp_path / "data.csv"
    data.write_text("x\n1\n2\n3\n")
    code = (
        "import pandas as pd, os\n"
        "df = pd.read_csv('/home/user/data.csv')\n"
        "os.makedirs('/home/user/outputs', exist_ok=True)\n"
        "df.assign(y=df.x * 2).to_csv('/home/user/outputs/doubled.csv', index=False)\n"
        "print(df.x.sum())"
    )
    server.replies = [exec_code(code), text("The sum is 6; doubled.csv is ready.")]
    out = tmp_path / "out"
    env = {"OPENAI_API_KEY": "test", "OPENAI_BASE_URL": server.base_url, "PATH": "/usr/bin:/bin"}
    command = [
        sys.executable,
        "-m",
        "sandcell.cli",
        "chat",
        "sum x",
        "--model",
        "scripted",
        "--file",
        str(data),
        "--output-dir",
        str(out),
        "--save",
        str(tmp_path / "s.ipynb"),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr
    assert (out / "doubled.csv").read_text() == "x,y\n1,2\n2,4\n3,6\n"
    assert "uploaded" in completed.stdout
    assert completed.stdout.index(f"saved {out / 'doubled.csv'}") < completed.stdout.index("The sum is 6"), "shown right after its cell"
    assert "I uploaded data.csv" in json.dumps(server.requests[0]["messages"])
    assert (tmp_path / "s.ipynb").exists()


def test_an_interrupted_run_leaves_a_conversation_the_model_accepts(server, sandbox, tmp_path):
    server.replies = [exec_code("import time; time.sleep(30)", call_id="call_slow") + exec_code("1", index=1, call_id="call_next"), text("ok")]
    agent, _ = make_agent(server, sandbox, tmp_path)

    def interrupt_when_running(event):
        if isinstance(event, CodeCell):
            raise KeyboardInterrupt

    agent.on_event = interrupt_when_running
    with pytest.raises(KeyboardInterrupt):
        agent.ask("sleep")
    assert len(agent.timings) == 1, "an interrupted step is timed too"
    answered = {m["tool_call_id"] for m in agent.messages if m["role"] == "tool"}
    assert answered == {"call_slow", "call_next"}
    agent.on_event = lambda event: None
    assert agent.ask("and now?") == "ok"


def test_a_cells_output_is_shown_as_it_comes_and_once(server, sandbox, tmp_path):
    import io
    import time

    from rich.console import Console

    from sandcell.agent.view import ChatView

    server.replies = [exec_code("import time\nprint('first', flush=True)\ntime.sleep(1)\nprint('second')\n6 * 7"), text("done")]
    seen: list = []
    screen = io.StringIO()
    view = ChatView(Console(file=screen, width=120))

    def both(event):
        seen.append((time.monotonic(), event))
        view(event)

    provider = OpenAICompatibleProvider(model="scripted", api_key="test", base_url=server.base_url, timeout=30, max_retries=0)
    Agent(provider, sandbox, on_event=both, output_dir=tmp_path).ask("go")
    chunks = [(when, event) for when, event in seen if isinstance(event, Output)]
    finished = next(when for when, event in seen if isinstance(event, CellOutput))
    assert [event.text for _, event in chunks] == ["first\n", "second\n"]
    assert finished - chunks[0][0] > 0.8, "the first line must be shown while the cell still runs"
    cell = next(event for _, event in seen if isinstance(event, CellOutput))
    assert "stdout:" in cell.rendered and "stdout" not in cell.results and "42" in cell.results
    shown = screen.getvalue()
    assert len(re.findall(r"^first$", shown, re.MULTILINE)) == 1 and len(re.findall(r"^second$", shown, re.MULTILINE)) == 1, shown
    assert "42" in shown
