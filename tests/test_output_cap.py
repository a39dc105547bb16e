"""Everything a run sends counts against its output cap, and its output travels in few frames.

Issue 10, finding 5: results, errors and every other event of a run were
forwarded whole, past ``output_mb``; the host's own backstop counted only
stdout and stderr. Finding 15: one byte per ``write()`` was one frame (and
one callback, one HTTP line). Each test runs in every sandbox mode and
checks a bystanding sandbox and the host afterwards (``witnesses``).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from typing import Any

import pytest
import test_isolation
from test_isolation import Witnesses, rss_bytes

from sandcell import Limits, Sandbox, protocol
from sandcell.sandbox.connection import FRAME_COST, HOST_CUT_MARKER, Connection, SyncStream, output_budget

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(os.geteuid() != 0, reason="every sandbox mode needs root (cgroups, unprivileged host uids)"),
]

# Every sandbox mode (fork server, pool, own bubblewrap) and the bystanders, as the isolation tests have them.
make_sandbox, witnesses = test_isolation.make_sandbox, test_isolation.witnesses
LIMIT = 1 << 20
TRUNCATED = "[sandcell: output truncated"


def received(execution: Any) -> int:
    """The bytes of everything the run delivered: output, results (as JSON) and its error."""
    size = sum(len(chunk) for chunk in execution.logs.stdout + execution.logs.stderr)
    size += sum(len(json.dumps(result.bundle)) for result in execution.results)
    if execution.error is not None:
        size += len(execution.error.name) + len(execution.error.value) + len(execution.error.traceback)
    return size


def stderr(execution: Any) -> str:
    return "".join(execution.logs.stderr)


def still_works(sbx: Sandbox) -> None:
    assert sbx.run_code("6 * 7", timeout=20).text == "42"
    assert sbx.run_code("console.log('js ok')", language="javascript", timeout=20).logs.stdout == ["js ok\n"]
    assert sbx.commands.run("echo ok", timeout=20).stdout == "ok\n"


# -- the cap ------------------------------------------------------------------------------


RESULTS_FLOOD = """
from IPython.display import HTML, display
for i in range(40):
    display(HTML('r' * 100_000))
    display({'text/html': 'h' * 20_000, 'image/png': 'p' * 20_000, 'application/json': {'k': 'j' * 20_000}, 'text/plain': 'x'}, raw=True)
print('printed after the cap')
'the main answer'
"""


def test_results_of_every_type_count_against_the_output_cap(make_sandbox: Callable[..., Sandbox], witnesses: Witnesses) -> None:
    sbx = make_sandbox(limits=Limits(output_mb=1))
    execution = sbx.run_code(RESULTS_FLOOD, timeout=60)
    assert execution.error is None, execution.error
    assert received(execution) <= LIMIT + 64 * 1024, f"{received(execution)} bytes of a run capped at {LIMIT} reached the host"
    assert 0 < len(execution.results) < 40
    assert TRUNCATED in stderr(execution)
    assert "printed after the cap" not in "".join(execution.logs.stdout)
    assert execution.text == "the main answer", "a small main result still says how the run ended"
    # The cap is per run, and the context carries on.
    assert sbx.run_code("print('next run'); 'fine'").logs.stdout == ["next run\n"]
    still_works(sbx)
    witnesses.check()


def test_an_error_counts_against_the_cap_and_still_says_the_run_failed(make_sandbox: Callable[..., Sandbox], witnesses: Witnesses) -> None:
    sbx = make_sandbox(limits=Limits(output_mb=1))
    execution = sbx.run_code("raise ValueError('v' * 5_000_000)", timeout=60)
    assert execution.error is not None and execution.error.name == "ValueError"
    assert received(execution) <= LIMIT + 64 * 1024
    assert execution.error.value.startswith("vvvv")
    assert TRUNCATED in stderr(execution)
    still_works(sbx)
    witnesses.check()


# Events written straight to the kernels' event pipes (fd 4), as code may: a
# storm of small ones (each acknowledged on a pipe the code does not read), big ones.
FORGED_PYTHON = """
import os, json
tiny = b'{"type": "result", "data": {"text/plain": "t"}, "main": false}\\n'
for _ in range(100_000):
    os.write(4, tiny)
line = (json.dumps({"type": "result", "data": {"text/plain": "f" * 10_000}, "main": False}) + "\\n").encode()
for _ in range(2_000):
    os.write(4, line)
os.write(4, (json.dumps({"type": "error", "name": "Forged", "value": "e" * 5_000_000, "traceback": ""}) + "\\n").encode())
"""
FORGED_JAVASCRIPT = """
const fs = require('fs');
const line = JSON.stringify({type: 'result', data: {'text/plain': 'f'.repeat(10000)}, main: false}) + '\\n';
for (let i = 0; i < 2000; i++) fs.writeSync(4, line);
'x'.repeat(3000000)
"""


@pytest.mark.parametrize(("language", "code"), [("python", FORGED_PYTHON), ("javascript", FORGED_JAVASCRIPT)])
def test_events_forged_on_the_event_pipe_count_too(make_sandbox: Callable[..., Sandbox], witnesses: Witnesses, language: str, code: str) -> None:
    sbx = make_sandbox(limits=Limits(output_mb=1))
    execution = sbx.run_code(code, language=language, timeout=60)
    assert received(execution) <= LIMIT + 64 * 1024, f"{received(execution)} bytes of a run capped at {LIMIT} reached the host"
    assert TRUNCATED in stderr(execution)
    still_works(sbx)
    witnesses.check()


# -- the host's backstop ------------------------------------------------------------------


def _fed_connection(limit: int) -> tuple[Connection, Any]:
    """A connection to no sandbox, and the supervisor's end of it for the test to write."""
    events_read, events_write = os.pipe()
    requests_read, requests_write = os.pipe()
    threading.Thread(target=lambda: [None for _ in iter(lambda: os.read(requests_read, 65536), b"")], daemon=True).start()
    connection = Connection(os.fdopen(requests_write, "wb"), os.fdopen(events_read, "rb"), lambda error: "closed", lambda: None, limit)
    return connection, os.fdopen(events_write, "wb")


def _drain(stream: SyncStream) -> list[tuple[dict[str, Any], bytes]]:
    frames = []
    while True:
        frame = stream.get(10)
        frames.append(frame)
        if frame[0]["type"] in protocol.TERMINAL:
            return frames


@pytest.mark.parametrize("chunk", [4096, 1], ids=["big-frames", "one-byte-frames"])
def test_the_host_drops_what_a_supervisor_sends_past_its_budget(chunk: int) -> None:
    """A subverted supervisor ignores the cap: the host delivers at most the budget, then a marker and the end."""
    connection, supervisor = _fed_connection(LIMIT)
    run, ping = SyncStream(), SyncStream()
    run_id = connection.open({"op": "run_code", "code": ""}, b"", run)
    ping_id = connection.open({"op": "ping"}, b"", ping)
    rss_before = rss_bytes()
    flood = protocol.encode({"type": "stdout", "id": run_id}, b"x" * chunk)
    for _ in range(12 * LIMIT // len(flood)):
        supervisor.write(flood)
    supervisor.write(protocol.encode({"type": "result", "id": run_id, "data": {"text/plain": "r" * 100_000}}))
    supervisor.write(protocol.encode({"type": "done", "id": run_id}))
    supervisor.write(protocol.encode({"type": "done", "id": ping_id}))
    supervisor.close()
    frames = _drain(run)
    assert frames[-1][0]["type"] == "done"
    assert [payload for _, payload in frames].count(HOST_CUT_MARKER) == 1
    assert sum(len(payload) + FRAME_COST for _, payload in frames) <= output_budget(LIMIT) + FRAME_COST + len(HOST_CUT_MARKER)
    assert not any(header["type"] == "result" for header, _ in frames)
    assert rss_bytes() - rss_before < 64 << 20
    assert _drain(ping)[-1][0]["type"] == "done", "other requests are not cut"


# -- coalescing -------------------------------------------------------------------------


TRICKLE_PYTHON = "import sys, time\nfor i in range(2000):\n    sys.stdout.write('x'); sys.stdout.flush(); time.sleep(0.0005)\n"
TRICKLE_COMMAND = "python3 -c \"import sys, time\nfor i in range(2000):\n    sys.stdout.write('x'); sys.stdout.flush(); time.sleep(0.0005)\""


@pytest.mark.slow
def test_one_byte_writes_travel_in_few_frames(make_sandbox: Callable[..., Sandbox], witnesses: Witnesses) -> None:
    """Written a byte at a time, half a millisecond apart: one frame each, before; a few ms' worth per frame now."""
    sbx = make_sandbox()
    chunks: list[str] = []
    execution = sbx.run_code(TRICKLE_PYTHON, on_stdout=lambda message: chunks.append(message.line), timeout=60)
    assert "".join(chunks) == "".join(execution.logs.stdout) == "x" * 2000
    assert len(chunks) < 700, f"{len(chunks)} callbacks for 2000 one-byte writes"
    command_chunks: list[str] = []
    result = sbx.commands.run(TRICKLE_COMMAND, on_stdout=command_chunks.append, timeout=60)
    assert result.stdout == "".join(command_chunks) == "x" * 2000
    assert len(command_chunks) < 700, f"{len(command_chunks)} callbacks for 2000 one-byte writes of a command"
    witnesses.check()


def test_coalesced_output_keeps_its_order_and_its_end(make_sandbox: Callable[..., Sandbox]) -> None:
    sbx = make_sandbox()
    seen: list[str] = []
    execution = sbx.run_code(
        "import sys\nprint('a')\nsys.stderr.write('b\\n')\ndisplay(1)\nprint('c', end='')",
        on_stdout=lambda message: seen.append("out:" + message.line),
        on_stderr=lambda message: seen.append("err:" + message.line),
        on_result=lambda result: seen.append("result:" + result.text),
    )
    assert seen == ["out:a\n", "err:b\n", "result:1", "out:c"]
    assert execution.logs.stdout == ["a\n", "c"]
