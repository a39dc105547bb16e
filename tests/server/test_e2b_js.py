"""E2B's official JavaScript SDK (``@e2b/code-interpreter`` from npm, pinned by package-lock.json), unchanged."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from serving import Keys, Server

CLIENT = Path(__file__).parent / "js"


@pytest.fixture(scope="module")
def installed() -> Path:
    if not (CLIENT / "node_modules" / "@e2b" / "code-interpreter").is_dir():
        npm = shutil.which("npm")
        assert npm, "npm is installed by `sandcell setup`"
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=CLIENT, check=True, capture_output=True, timeout=600)
    return CLIENT


def sdk_env(server: Server, keys: Keys) -> dict[str, str]:
    """The environment that points the JS SDK at ``server``."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "E2B_API_URL": server.url,
        "E2B_SANDBOX_URL": server.url,
        "E2B_API_KEY": keys.alpha,
    }


def run_check(script: str, server: Server, keys: Keys) -> None:
    """Run ``script`` (in ``js/``) with the SDK pointed at ``server``; it prints ``ok`` when its asserts held."""
    done = subprocess.run(["node", script], cwd=CLIENT, env=sdk_env(server, keys), capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("ok")


def test_js_sdk_quick_calls(installed: Path, server: Server, keys: Keys) -> None:
    run_check("sdk_check.mjs", server, keys)


def test_js_sdk_default_contexts_typescript_and_cwd(installed: Path, server: Server, keys: Keys) -> None:
    run_check("contexts_check.mjs", server, keys)
