"""Through the server, a run's results are capped like its output, and a client
that does not read cannot grow the server's memory (issue 10, finding 5).

The server of these tests is their own: its peak memory is theirs to measure,
and it gives up on a client that reads nothing after two seconds, not thirty.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2b_code_interpreter import Sandbox as E2BSandbox
from sandboxes import SandboxFactory
from serving import Server, start_server

from sandcell import Limits, Sandbox
from sandcell.sandbox.connection import output_budget
from sandcell.server.store import Store

PATIENCE = 2
MIB = 1 << 20
OUTPUT_MB = 8
# 300 MiB of results: what reached the server whole before.
RESULTS_FLOOD = (
    "from IPython.display import HTML, display\nfor i in range(300):\n    display(HTML('r' * 1_000_000))\nprint('after the flood')\n'the main answer'"
)
TRUNCATED = "[sandcell: output truncated"


def memory_kib(pid: int, field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (the peak so far) of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    root = tmp_path_factory.mktemp("backpressure")
    running = start_server(root / "server.db", root / "server.log", extra=["--client-patience", str(PATIENCE), "--kill-on-exit"])
    key = Store(running.db).create_key("flood")[1]
    yield running, key
    running.stop()


@pytest.fixture
def bystander(own_server: tuple[Server, str], make_e2b_sandbox: SandboxFactory[E2BSandbox]) -> Iterator[E2BSandbox]:
    server, key = own_server
    sandbox = make_e2b_sandbox(api_url=server.url, sandbox_url=server.url, api_key=key)
    sandbox.run_code("witness = 'intact'")
    yield sandbox
    assert sandbox.run_code("witness").text == "intact"
    assert sandbox.run_code("print('bystander ok')").logs.stdout == ["bystander ok\n"]


def test_results_past_the_cap_end_with_a_marker_over_the_e2b_api(own_server: tuple[Server, str], bystander: E2BSandbox) -> None:
    server, key = own_server
    sandbox = E2BSandbox.create(timeout=120, api_url=server.url, sandbox_url=server.url, api_key=key)
    try:
        execution = sandbox.run_code(RESULTS_FLOOD, timeout=120)
        assert execution.error is None, execution.error
        assert len(execution.results) < 20, f"{len(execution.results)} results of 1 MB each reached the client past a 16 MiB cap"
        assert TRUNCATED in "".join(execution.logs.stderr)
        assert "after the flood" not in "".join(execution.logs.stdout)
        assert execution.text == "the main answer"
        assert sandbox.run_code("6 * 7").text == "42"
    finally:
        sandbox.kill()
    assert server.alive()


def test_results_past_the_cap_end_with_a_marker_over_the_python_client(own_server: tuple[Server, str], bystander: E2BSandbox) -> None:
    server, key = own_server
    with Sandbox.create(timeout=120, limits=Limits(output_mb=1), api_url=server.url, api_key=key) as sandbox:
        execution = sandbox.run_code(RESULTS_FLOOD.replace("300", "20"), timeout=120)
        assert len(execution.results) <= 2
        assert TRUNCATED in "".join(execution.logs.stderr)
        assert sandbox.run_code("6 * 7").text == "42"


def _unread_stream(server: Server, key: str, sandbox_id: str, code: str) -> tuple[int, bytes]:
    """Run ``code`` through the native NDJSON route without reading a byte until the
    server has given up on us; (the server's peak memory growth in KiB, the body then read)."""
    pid = server.process.pid
    before = memory_kib(pid, "VmRSS")
    # A small receive buffer: what the kernel holds for us does not hide the server's backlog.
    transport = httpx.HTTPTransport(socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)])
    with (
        httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=120, transport=transport) as client,
        client.stream("POST", f"/v1/sandboxes/{sandbox_id}/code", json={"code": code, "timeout": 60}) as response,
    ):
        assert response.status_code == 200
        time.sleep(PATIENCE + 6)  # the flood runs, the server waits for us, then drops the rest
        grown = memory_kib(pid, "VmHWM") - before
        body = response.read()
    return grown, body


@pytest.mark.slow
def test_a_client_that_does_not_read_cannot_grow_the_server(own_server: tuple[Server, str], bystander: E2BSandbox) -> None:
    server, key = own_server
    created = httpx.post(f"{server.url}/v1/sandboxes", json={"timeout": 120, "limits": {"output_mb": OUTPUT_MB}}, headers={"X-API-Key": key}, timeout=60)
    assert created.status_code == 201, created.text
    sandbox_id = created.json()["sandbox_id"]
    # Output under the cap but far more than a stream holds for its client.
    flood = "import sys\nfor i in range(6_000):\n    sys.stdout.write(f'{i:07d}' * 128 + '\\n'); sys.stdout.flush()\nprint('the end')"
    grown, body = _unread_stream(server, key, sandbox_id, flood)
    assert grown < (output_budget(OUTPUT_MB * MIB) + 48 * MIB) // 1024, f"the server grew by {grown} KiB for one unread stream"
    lines = [json.loads(line) for line in body.splitlines()]
    assert "the client read nothing" in "".join(line.get("text", "") for line in lines)
    assert lines[-1] == {"type": "end_of_execution"}
    assert "the end" not in body.decode(), "the stream kept what its client did not take"
    grown, body = _unread_stream(server, key, sandbox_id, RESULTS_FLOOD)
    assert grown < (output_budget(OUTPUT_MB * MIB) + 48 * MIB) // 1024, f"the server grew by {grown} KiB for one unread stream of results"
    assert json.loads(body.splitlines()[-1]) == {"type": "end_of_execution"}
    # The sandbox and its context carry on.
    after = httpx.post(f"{server.url}/v1/sandboxes/{sandbox_id}/code", json={"code": "print('still here')"}, headers={"X-API-Key": key}, timeout=60)
    assert json.loads(after.text.splitlines()[0])["text"] == "still here\n"
    httpx.delete(f"{server.url}/v1/sandboxes/{sandbox_id}", headers={"X-API-Key": key}, timeout=60)
    assert server.alive()
