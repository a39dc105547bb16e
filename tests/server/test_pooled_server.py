"""``sandcell serve --pool N``: create hands over a started sandbox, which is then like any other."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest
from e2b_code_interpreter import Sandbox
from prometheus_client.parser import text_string_to_metric_families
from serving import Server, start_server

from sandcell.server.store import Store

pytestmark = pytest.mark.slow


def pool_ready(server: Server) -> float:
    for family in text_string_to_metric_families(httpx.get(server.url + "/metrics").text):
        if family.name == "sandcell_pool_ready":
            return family.samples[0].value
    return 0


def wait_for_pool(server: Server) -> None:
    deadline = time.monotonic() + 120
    while pool_ready(server) < 1:
        assert time.monotonic() < deadline, "the server's pool did not fill"
        time.sleep(0.2)


def test_pooled_create_has_its_envs_timeout_metadata_and_survives_a_restart(tmp_path: Path) -> None:
    db, log = tmp_path / "server.db", tmp_path / "server.log"
    key = Store(db).create_key("pooled")[1]
    server = start_server(db, log, extra=["--pool", "1", "--orphan-grace", "30"])
    options = {"api_key": key, "api_url": server.url, "sandbox_url": server.url}
    try:
        wait_for_pool(server)
        sandbox = Sandbox.create(timeout=90, envs={"FROM_CREATE": "yes"}, metadata={"pooled": "1"}, **options)
        assert sandbox.run_code("import sys; 'pandas' in sys.modules").text == "True", "not a preloaded sandbox from the pool"
        assert sandbox.run_code("import os; os.environ['FROM_CREATE']").text == "yes"
        assert sandbox.commands.run("echo $FROM_CREATE").stdout == "yes\n"
        info = sandbox.get_info()
        assert info.metadata == {"pooled": "1"} and 80 < (info.end_at - info.started_at).total_seconds() <= 91
        sandbox.run_code("kept = 'over the restart'")
        assert sandbox.run_code("import sklearn; sklearn.__name__").text == "sklearn"  # the pool's kind is the default template
        base = Sandbox.create(template="base", timeout=90, **options)  # never a pooled code-interpreter-v1 one
        assert base.run_code("import sys; 'pandas' in sys.modules").text == "False" and base.get_info().template_id == "base"
    finally:
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
    server = start_server(db, log, port=int(server.url.rsplit(":", 1)[1]), extra=["--pool", "1"])
    try:
        assert sandbox.run_code("kept").text == "over the restart"
        assert [base.get_info().template_id, sandbox.get_info().template_id] == ["base", "code-interpreter-v1"]
        assert base.run_code("import sklearn").error.name == "ModuleNotFoundError"
        sandbox.kill()
        base.kill()
    finally:
        server.stop()
