"""ruff (lint and format) and mypy are clean, checked with every test run (their settings are in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PATHS = ["src", "tests", "scripts", "benchmarks"]
CHECKS = {
    "ruff check": ["ruff", "check", "--no-fix", *PATHS],
    "ruff format": ["ruff", "format", "--check", *PATHS],
    "mypy": ["mypy"],  # what it checks, and how strictly, is [tool.mypy]
}


@pytest.mark.parametrize("check", [pytest.param(name, marks=[pytest.mark.slow] if name == "mypy" else []) for name in CHECKS])
def test_static_check_passes(check: str) -> None:
    done = subprocess.run([sys.executable, "-m", *CHECKS[check]], cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    if done.returncode != 0:
        pytest.fail(f"{check} found problems:\n{done.stdout}{done.stderr}", pytrace=False)
