"""The host does not trust the sandbox: sandcell's own processes are shielded from
the code beside them, and the host survives a supervisor that misbehaves."""

from __future__ import annotations

import os
import threading

import pytest

from sandcell import Sandbox, protocol
from sandcell.sandbox.connection import Connection, SyncStream


@pytest.fixture
def sbx(make_sandbox):
    return make_sandbox(scope="module")


@pytest.mark.parametrize("language", ["python", "bash"])
def test_code_cannot_open_the_memory_of_the_supervisor_or_the_zygote(sbx, language):
    supervisor = 2  # the sandbox's main process under bwrap's pid 1
    zygote = int(sbx.run_code("import os; os.getppid()").text)
    for pid in (supervisor, zygote):
        if language == "python":
            probe = sbx.run_code(f"open('/proc/{pid}/mem', 'r+b')")
            assert probe.error is not None and probe.error.name == "PermissionError", probe
        else:
            probe = sbx.run_code(f"exec 9<>/proc/{pid}/mem", language="bash")
            assert probe.error is not None, probe
    assert sbx.run_code("open('/proc/self/mem', 'rb').close(); 'own memory is fine'").error is None


def _connection_fed(data: bytes) -> tuple[Connection, list[str | None], SyncStream]:
    events_read, events_write = os.pipe()
    requests_read, requests_write = os.pipe()
    seen: list[str | None] = []
    dead = threading.Event()

    def death_reason(protocol_error: str | None) -> str:
        seen.append(protocol_error)
        dead.set()
        return "closed"

    connection = Connection(os.fdopen(requests_write, "wb"), os.fdopen(events_read, "rb"), death_reason, lambda: None, 1 << 20)
    stream = SyncStream()
    connection.open({"op": "ping"}, b"", stream)
    os.write(events_write, data)
    os.close(events_write)
    assert dead.wait(5)
    os.close(requests_read)
    return connection, seen, stream


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff\xff\xff\xff\x00\x00\x00\x00",  # a header length far past the maximum
        protocol.HEADER.pack(5, 0) + b"nope!",  # not JSON
        protocol.HEADER.pack(2, 0) + b"[]",  # JSON, not an object
        protocol.encode({"id": 1}),  # no type
        protocol.HEADER.pack(100, 0) + b"{}",  # cut off mid-frame
    ],
)
def test_a_garbled_stream_is_a_protocol_error_and_fails_open_requests(garbage):
    connection, seen, stream = _connection_fed(garbage)
    assert seen and seen[0] is not None, "the sandbox must be reported as broken"
    header, _ = stream.get(5)
    assert header["type"] == protocol.FAIL and header["error"]["name"] == "SandboxDied"
    assert connection.closed_reason == "closed"


def test_a_clean_end_is_not_a_protocol_error():
    _, seen, _ = _connection_fed(b"")
    assert seen == [None]


def test_pkill_python_stops_interpreters_not_the_sandbox():
    with Sandbox.create() as sandbox:
        sandbox.run_code("x = 1")
        names = sandbox.commands.run("ps -eo comm=").stdout.split()
        # The zygote is a process of its own, or (forked from a fork server) the sandbox's init.
        assert "sandcell-super" in names and ("sandcell-zygote" in names or "sandcell-init" in names)
        sandbox.commands.run("pkill python || true; pkill -x python3 || true")
        assert sandbox.is_running()
        after = sandbox.run_code("'still here'")
        assert after.text == "still here" or (after.error is not None and after.error.name == "InterpreterDied")
        assert sandbox.run_code("2 + 2").text == "4"


HIGH_FDS_OWNER = """
import os, resource, sys
from sandcell.isolation import Policy
from sandcell.sandbox.core import SandboxCore
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(4096, hard)), hard))
held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
core = SandboxCore(Policy(), detachable=True, orphan_grace=30)
core.wait_started()
if sys.argv[1] == "hand-out":
    core.hand_out(60, {})
print(core.sandbox_id, flush=True)
os._exit(0)  # as if killed: a handed-out sandbox waits to be taken over, any other dies
"""


def test_sandboxes_work_when_the_host_holds_fds_past_1024():
    """select() cannot wait on fd 1024 and above; a host with many sandboxes has such fds."""
    import datetime
    import resource
    import subprocess
    import sys

    from sandcell.isolation import Limits as IsolationLimits
    from sandcell.sandbox.core import SandboxCore

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(4096, hard)), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        sandbox = Sandbox.create(pool=False, timeout=60)
        assert sandbox.run_code("1 + 1").text == "2"
        sandbox.kill()
        assert not sandbox.is_running()
        owner = subprocess.run([sys.executable, "-c", HIGH_FDS_OWNER, "hand-out"], capture_output=True, text=True, timeout=60, check=False)
        sandbox_id = owner.stdout.strip()
        assert sandbox_id, owner.stderr
        taken = SandboxCore.attach(sandbox_id, IsolationLimits(), {}, datetime.datetime.now(datetime.UTC), False)
        assert Sandbox(taken).run_code("2 + 2").text == "4"
        taken.kill()
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_detachable_sandbox_not_yet_handed_out_dies_with_its_host():
    """One still starting, or idle in a server's pool, must not linger as an orphan nobody will take back."""
    import subprocess
    import sys
    import time

    from sandcell.isolation import attach_dir

    owner = subprocess.run([sys.executable, "-c", HIGH_FDS_OWNER, "idle"], capture_output=True, text=True, timeout=60, check=False)
    sandbox_id = owner.stdout.strip()
    assert sandbox_id, owner.stderr
    deadline = time.monotonic() + 10
    while (attach_dir() / f"{sandbox_id}.sock").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (attach_dir() / f"{sandbox_id}.sock").exists(), "the launcher kept an idle sandbox alive"
