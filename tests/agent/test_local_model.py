"""The agent with the real embedded model (Qwen2.5-Coder-1.5B, llama.cpp in-process)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sandcell import Sandbox
from sandcell.agent import Agent, CellOutput, CodeCell
from sandcell.agent.providers.local import LocalProvider

# The final answer repeats 100 numbers: about 90 s of generation alone on 2 cores.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def provider():
    local = LocalProvider(threads=2)
    local.load()
    return local


def numbers_printed(question: str, language: str, provider: LocalProvider, tmp_path) -> list[str]:
    events: list = []
    with Sandbox.create() as sandbox:
        agent = Agent(provider, sandbox, on_event=events.append, output_dir=tmp_path, run_timeout=20, max_steps=4)
        agent.ask(question)
    assert agent.timings and all(0 < step.first_token <= step.model for step in agent.timings), "each turn's first token is timed"
    cells = [event for event in events if isinstance(event, CodeCell)]
    assert cells and all(cell.language == language for cell in cells)
    outputs = ["".join(event.execution.logs.stdout) for event in events if isinstance(event, CellOutput)]
    tokens = [token.strip("[],") for token in outputs[-1].split()]
    return [token for token in tokens if token]


def test_fibonacci_in_javascript_with_the_real_local_model(provider, tmp_path):
    numbers = numbers_printed("Generate the first 100 Fibonacci numbers using JavaScript", "javascript", provider, tmp_path)
    assert len(numbers) == 100
    assert numbers[:7] == ["0", "1", "1", "2", "3", "5", "8"]


def test_fibonacci_in_python_with_the_real_local_model(provider, tmp_path):
    numbers = numbers_printed("Generate the first 100 Fibonacci numbers using Python", "python", provider, tmp_path)
    assert len(numbers) == 100
    assert numbers[:7] == ["0", "1", "1", "2", "3", "5", "8"]
    assert numbers[-1] == "218922995834555169026"  # Python's exact integers


def test_the_readme_main_command_runs_on_the_embedded_default():
    completed = subprocess.run(
        [sys.executable, "-m", "sandcell.cli", "chat", "Generate the first 100 Fibonacci numbers using JavaScript", "--max-steps", "4"],
        capture_output=True,
        text=True,
        timeout=600,
        env={"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")},
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "provider local, model Qwen2.5-Coder-1.5B-Instruct Q4_K_M" in completed.stdout
    assert "0," in completed.stdout and "1," in completed.stdout
