"""The command line, run as a user would: a real process, real sandboxes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SANDCELL = [sys.executable, "-m", "sandcell.cli"]


def sandcell(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SANDCELL, *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize(
    ("name", "source", "expected"),
    [
        ("fib.py", "a, b = 0, 1\nfor _ in range(10):\n    print(a)\n    a, b = b, a + b\n", "34"),
        ("fib.js", "let [a, b] = [0, 1];\nfor (let i = 0; i < 10; i++) { console.log(a); [a, b] = [b, a + b]; }\n", "34"),
        ("fib.ts", "let [a, b]: [number, number] = [0, 1];\nfor (let i: number = 0; i < 10; i++) { console.log(a); [a, b] = [b, a + b]; }\n", "34"),
        ("fib.sh", "a=0; b=1; for i in $(seq 10); do echo $a; t=$((a+b)); a=$b; b=$t; done\n", "34"),
    ],
)
def test_run_streams_a_script_of_each_language(tmp_path: Path, name: str, source: str, expected: str) -> None:
    script = tmp_path / name
    script.write_text(source)
    completed = sandcell("run", str(script))
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split()[:3] == ["0", "1", "1"]
    assert expected in completed.stdout.split()


def test_run_reports_the_error_and_fails(tmp_path: Path) -> None:
    script = tmp_path / "broken.py"
    script.write_text("print('before')\nraise ValueError('boom')\n")
    completed = sandcell("run", str(script))
    assert completed.returncode == 1
    assert "before" in completed.stdout
    assert "ValueError: boom" in completed.stdout


def test_run_refuses_an_unknown_suffix(tmp_path: Path) -> None:
    script = tmp_path / "notes.txt"
    script.write_text("hello")
    completed = sandcell("run", str(script))
    assert completed.returncode != 0
    assert "--language" in completed.stdout + completed.stderr


def test_demo_runs_all_three_languages() -> None:
    completed = sandcell("demo")
    assert completed.returncode == 0, completed.stderr
    assert "218922995834555169026" in completed.stdout  # the 100th Fibonacci number, from JavaScript BigInts
    assert "I am user in /tmp on sandbox" in completed.stdout


def test_chat_help_says_how_to_use_a_session() -> None:
    completed = sandcell("chat", "--help")
    assert completed.returncode == 0, completed.stderr
    text = " ".join(completed.stdout.replace("│", " ").split())
    for promise in ("Esc+Enter", "a line ending in \\ starts a new line", "~/.cache/sandcell/chat_history", "Ctrl-C stops", "Ctrl-D", "--timings"):
        assert promise in text, promise
