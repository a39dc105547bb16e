"""``sandcell chat`` as a person uses it: typed at a real pseudo-terminal, or piped, against the scripted model server."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pexpect
import pytest

from .scripted_server import Delayed, Failure, ScriptedServer, exec_code, text

ESC_ENTER = "\x1b\r"
CTRL_C = "\x03"
CTRL_D = "\x04"
UP = "\x1b[A"
PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"  # how a terminal wraps a paste (bracketed paste mode)
PROMPT = "you>"  # prompt_toolkit draws the space after it as a cursor move


@pytest.fixture
def server():
    scripted = ScriptedServer()
    yield scripted
    scripted.close()


def chat_env(server: ScriptedServer, home: Path) -> dict[str, str]:
    # PROMPT_TOOLKIT_NO_CPR: pexpect does not answer cursor position requests, a real terminal does.
    return {
        "OPENAI_API_KEY": "test",
        "OPENAI_BASE_URL": server.base_url,
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "TERM": "xterm-256color",
        "PROMPT_TOOLKIT_NO_CPR": "1",
    }


def spawn_chat(server: ScriptedServer, home: Path, *args: str) -> pexpect.spawn:
    command = [sys.executable, "-m", "sandcell.cli", "chat", "--model", "scripted", *args]
    terminal = pexpect.spawn(command[0], command[1:], env=chat_env(server, home), encoding="utf-8", dimensions=(40, 200), timeout=60)
    terminal.expect_exact(PROMPT)
    return terminal


def asked(server: ScriptedServer, request: int) -> str:
    """The last question the model saw in a request."""
    return [message["content"] for message in server.requests[request]["messages"] if message["role"] == "user"][-1]


def tool_results(server: ScriptedServer, request: int) -> dict[str, Any]:
    return {message["tool_call_id"]: message["content"] for message in server.requests[request]["messages"] if message["role"] == "tool"}


def test_a_terminal_session_keeps_multi_line_questions_and_their_history(server, tmp_path):
    server.replies = [text("first answer"), text("second answer"), text("third answer"), text("fourth answer")]
    terminal = spawn_chat(server, tmp_path)
    terminal.send("first line" + ESC_ENTER + "second line\r")
    terminal.expect_exact("first answer")
    terminal.expect_exact(PROMPT)
    terminal.send("dropped" + CTRL_C)  # Ctrl-C at the prompt drops the line, not the session
    terminal.expect_exact(PROMPT)
    terminal.send("alpha \\\rbeta\r")
    terminal.expect_exact("second answer")
    terminal.expect_exact(PROMPT)
    terminal.send(UP + "\r")  # the last question again, from the history
    terminal.expect_exact("third answer")
    terminal.expect_exact(PROMPT)
    terminal.send(PASTE_START + "pasted one\npasted two" + PASTE_END + "\r")
    terminal.expect_exact("fourth answer")
    terminal.expect_exact(PROMPT)
    terminal.send(CTRL_D)
    terminal.expect(pexpect.EOF)
    terminal.close()
    assert terminal.exitstatus == 0
    assert [asked(server, n) for n in range(4)] == ["first line\nsecond line", "alpha \nbeta", "alpha \nbeta", "pasted one\npasted two"]
    history = (tmp_path / ".cache" / "sandcell" / "chat_history").read_text()
    assert "+first line\n+second line\n" in history and "+alpha \n+beta\n" in history
    assert "dropped" not in history


def test_ctrl_c_stops_the_running_code_or_the_model_and_the_session_goes_on(server, tmp_path):
    slow = "x = 5\nimport time\ntime.sleep(60)"
    server.replies = [
        text("Sleeping. ") + exec_code(slow, call_id="call_slow"),
        exec_code("print('x is', x)", call_id="call_after"),
        text("x is still 5"),
        Delayed(20, text("too late")),
        text("back again"),
    ]
    terminal = spawn_chat(server, tmp_path)
    terminal.send("sleep a minute\r")
    terminal.expect_exact("time.sleep(")  # the cell, drawn just before it runs (highlighting splits the rest)
    time.sleep(1.5)  # the cell is running in the sandbox now
    interrupted_at = time.monotonic()
    terminal.send(CTRL_C)
    terminal.expect_exact("interrupted")
    assert time.monotonic() - interrupted_at < 10, "the cell stopped, it did not run its minute"
    terminal.expect_exact(PROMPT)
    terminal.send("what is x?\r")
    terminal.expect_exact("x is still 5")
    terminal.expect_exact(PROMPT)

    terminal.send("think long\r")
    terminal.expect_exact("thinking")  # the spinner, while the model has sent nothing
    terminal.send(CTRL_C)
    terminal.expect_exact("interrupted")
    terminal.expect_exact(PROMPT)
    terminal.send("still there?\r")
    terminal.expect_exact("back again")
    terminal.expect_exact(PROMPT)
    terminal.send("exit\r")
    terminal.expect(pexpect.EOF)
    terminal.close()
    assert terminal.exitstatus == 0
    assert tool_results(server, 1)["call_slow"] == "error: the user interrupted this run"
    assert "x is 5" in tool_results(server, 2)["call_after"], "the context kept its state"
    assert asked(server, 4) == "still there?"
    assert "too late" not in terminal.before


def test_piped_questions_are_asked_in_order_until_exit(server, tmp_path):
    server.replies = [Failure(400, "model refused"), text("Running. ") + exec_code("print(6 * 7)"), text("It is 42.")]
    completed = subprocess.run(
        [sys.executable, "-m", "sandcell.cli", "chat", "--model", "scripted", "--timings"],
        input="break it\nsix times \\\nseven\nexit\nnever asked\n",
        capture_output=True,
        text=True,
        env=chat_env(server, tmp_path),
        timeout=120,
        check=False,
    )
    assert completed.returncode == 1, "a question the model failed makes the exit status"
    assert "HTTP 400" in completed.stdout and "model refused" in completed.stdout and "It is 42." in completed.stdout
    assert [asked(server, n) for n in range(3)] == ["break it", "six times \nseven", "six times \nseven"]
    assert len(server.requests) == 3, "nothing after exit"
    assert "you> six times" in completed.stdout, "piped questions are echoed"
    assert "thinking" not in completed.stdout, "no spinner outside a terminal"
    table = completed.stdout[completed.stdout.index("timings") :]
    assert "first token" in table and "overhead" in table and "all" in table
    assert not (tmp_path / ".cache" / "sandcell" / "chat_history").exists(), "piped input is no history"
