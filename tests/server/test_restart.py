"""A restarted server accounts for every sandbox it handed out: none is silently forgotten."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest
from e2b_code_interpreter import Sandbox
from serving import start_server

from sandcell.server.store import Store

pytestmark = pytest.mark.slow


def processes_in_cgroup_of(sandbox_id: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if sandbox_id in (entry / "cgroup").read_text():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.parametrize("stop", ["graceful", "sigkill"])
def test_every_sandbox_is_accounted_for_after_a_restart(tmp_path: Path, stop: str) -> None:
    db = tmp_path / "server.db"
    key = Store(db).create_key("restart")[1]
    server = start_server(db, tmp_path / "server.log")
    options = {"api_key": key, "api_url": server.url, "sandbox_url": server.url}
    try:
        sandboxes = [Sandbox.create(timeout=120, metadata={"n": str(n)}, **options) for n in range(3)]
        sandboxes[0].kill()
        ids = [sandbox.sandbox_id for sandbox in sandboxes]
        assert all(processes_in_cgroup_of(sandbox_id) for sandbox_id in ids[1:])
    finally:
        if stop == "graceful":
            server.stop()
        else:
            server.process.send_signal(signal.SIGKILL)
            server.process.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(processes_in_cgroup_of(sandbox_id) for sandbox_id in ids):
        time.sleep(0.1)
    assert not any(processes_in_cgroup_of(sandbox_id) for sandbox_id in ids), "sandbox processes outlived their server"

    server = start_server(db, tmp_path / "server.log")
    try:
        headers = {"X-API-Key": key}
        assert httpx.get(server.url + "/v2/sandboxes", headers=headers).json() == []
        records = {record.id: record for record in Store(db).sandboxes()}
        assert records[ids[0]].state == "killed"
        for sandbox_id in ids[1:]:
            record = records[sandbox_id]
            expected = "stopped" if stop == "graceful" else "lost"
            assert record.state == expected and record.reason and record.ended_at, record
            answer = httpx.get(f"{server.url}/sandboxes/{sandbox_id}", headers=headers)
            assert answer.status_code == 404 and record.reason in answer.json()["message"]
        new = Sandbox.create(timeout=60, api_key=key, api_url=server.url, sandbox_url=server.url)
        assert new.run_code("1 + 1").text == "2"
        new.kill()
    finally:
        server.stop()
