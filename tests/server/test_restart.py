"""A restarted server takes its sandboxes back, or says why it could not: none is silently forgotten."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest
from e2b_code_interpreter import Sandbox
from serving import Server, start_server

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


def gone(sandbox_id: str, within: float = 15) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and processes_in_cgroup_of(sandbox_id):
        time.sleep(0.1)
    return not processes_in_cgroup_of(sandbox_id)


def stop(server: Server, how: str) -> None:
    if how == "graceful":
        server.stop()
    else:
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()


def connect(server: Server, key: str, sandbox_id: str) -> Sandbox:
    return Sandbox.connect(sandbox_id, api_key=key, api_url=server.url, sandbox_url=server.url)


@pytest.mark.parametrize("how", ["graceful", "sigkill"])
def test_sandboxes_are_taken_back_with_their_state_after_a_restart(tmp_path: Path, how: str) -> None:
    db, log = tmp_path / "server.db", tmp_path / "server.log"
    key = Store(db).create_key("restart")[1]
    server = start_server(db, log)
    options = {"api_key": key, "api_url": server.url, "sandbox_url": server.url}
    sandboxes = [Sandbox.create(timeout=120, metadata={"n": str(n)}, **options) for n in range(3)]
    for n, sandbox in enumerate(sandboxes):
        sandbox.run_code(f"state = {n}")
        sandbox.files.write("/home/user/note.txt", f"note {n}")
    sandboxes[0].kill()
    sandboxes[2].pause()
    ids = [sandbox.sandbox_id for sandbox in sandboxes]
    busy = sandboxes[1].commands.run("for i in $(seq 1000); do echo $i; sleep 0.01; done", background=True)
    stop(server, how)
    assert all(processes_in_cgroup_of(sandbox_id) for sandbox_id in ids[1:]), "sandboxes must outlive their server"

    server = start_server(db, log, port=int(server.url.rsplit(":", 1)[1]))
    try:
        records = {record.id: record for record in Store(db).sandboxes()}
        assert records[ids[0]].state == "killed"
        assert records[ids[1]].state == "running" and records[ids[2]].state == "paused"
        # The same SDK objects (same data-plane token) work on.
        assert sandboxes[1].run_code("state").text == "1"
        assert sandboxes[1].files.read("/home/user/note.txt") == "note 1"
        # What the dead server had asked for was cancelled when the new one took over.
        assert busy.pid not in [process.pid for process in sandboxes[1].commands.list()]
        resumed = connect(server, key, ids[2])
        assert resumed.get_info().state.value == "running"
        assert resumed.run_code("state + 40").text == "42"
        listed = sorted(info.sandbox_id for info in Sandbox.list(api_key=key, api_url=server.url).next_items())
        assert listed == sorted(ids[1:])
        for sandbox in (sandboxes[1], resumed):
            sandbox.kill()
    finally:
        server.stop()


def test_kill_on_exit_and_an_expired_grace_are_reported(tmp_path: Path) -> None:
    db, log = tmp_path / "server.db", tmp_path / "server.log"
    key = Store(db).create_key("restart")[1]
    server = start_server(db, log, extra=["--kill-on-exit"])
    killed = Sandbox.create(timeout=120, api_key=key, api_url=server.url, sandbox_url=server.url).sandbox_id
    server.stop()
    assert gone(killed)

    server = start_server(db, log, extra=["--orphan-grace", "1"])
    orphan = Sandbox.create(timeout=120, api_key=key, api_url=server.url, sandbox_url=server.url).sandbox_id
    stop(server, "sigkill")
    assert gone(orphan), "an orphan past its grace must end"

    server = start_server(db, log)
    try:
        records = {record.id: record for record in Store(db).sandboxes()}
        assert records[killed].state == "stopped" and records[killed].reason == "the server shut down"
        assert records[orphan].state == "lost" and "lost when the server restarted" in records[orphan].reason
        answer = httpx.get(f"{server.url}/sandboxes/{orphan}", headers={"X-API-Key": key})
        assert answer.status_code == 404 and "lost" in answer.json()["message"]
        assert Sandbox.list(api_key=key, api_url=server.url).next_items() == []
    finally:
        server.stop()


def test_a_second_server_on_the_same_registry_is_refused(server: Server) -> None:
    with pytest.raises(RuntimeError, match="exited"):
        start_server(server.db, server.log)
    assert "another sandcell serve is using the registry" in server.log.read_text()
    assert server.alive()
