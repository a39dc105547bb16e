"""Pause/resume (cgroup freezer) and metrics, on real sandboxes."""

from __future__ import annotations

import asyncio
import time

import pytest

from sandcell import AsyncSandbox, SandboxException, SandboxMetrics, SandboxPausedException

# A busy loop that records (counter, wall time) every 20 ms: a pause shows up
# as one long gap in wall time over which the counter did not move on.
BUSY = """python3 -c '
import time
i, last = 0, 0.0
with open("/home/user/ticks", "w", buffering=1) as out:
    while True:
        i += 1
        now = time.time()
        if now - last > 0.02:
            out.write(f"{i} {now}\\n")
            last = now
'"""


def ticks(sandbox) -> list[tuple[int, float]]:
    return [(int(i), float(t)) for i, t in (line.split() for line in sandbox.files.read("/home/user/ticks").splitlines() if line.count(" ") == 1)]


def test_pause_stops_a_busy_loop_and_resume_continues_it(make_sandbox):
    sandbox = make_sandbox()
    started_with = sandbox.backend.process.cpu_seconds() or 0.0
    sandbox.commands.run(BUSY, background=True)
    deadline = time.monotonic() + 20
    while (sandbox.backend.process.cpu_seconds() or 0.0) - started_with < 0.3 and time.monotonic() < deadline:
        time.sleep(0.1)
    sandbox.pause()
    paused_at = time.time()
    cpu_before = sandbox.backend.process.cpu_seconds()
    assert cpu_before and cpu_before - started_with >= 0.3  # the loop was running
    time.sleep(1.5)
    assert sandbox.backend.process.cpu_seconds() == cpu_before  # not one tick of CPU while frozen
    assert sandbox.get_info().state == "paused"
    sandbox.resume()
    resumed_at = time.time()
    time.sleep(0.5)
    records = ticks(sandbox)
    counters = [i for i, _ in records]
    assert counters == sorted(counters)  # one process, state kept: the counter just goes on
    assert not [t for _, t in records if paused_at + 0.05 < t < resumed_at - 0.05]
    before, after = [t for _, t in records if t <= paused_at], [t for _, t in records if t >= resumed_at]
    assert before and len(after) >= 5
    assert sandbox.get_info().state == "running"


def test_requests_while_paused_fail_at_once_and_state_survives(make_sandbox):
    sandbox = make_sandbox()
    assert sandbox.run_code("secret = 41").error is None
    sandbox.pause()
    sandbox.pause()  # idempotent
    started = time.monotonic()
    with pytest.raises(SandboxPausedException, match="resume"):
        sandbox.run_code("secret")
    with pytest.raises(SandboxPausedException):
        sandbox.commands.run("true")
    with pytest.raises(SandboxPausedException):
        sandbox.files.read("/etc/hostname")
    assert time.monotonic() - started < 1.0
    sandbox.resume()
    sandbox.resume()  # idempotent
    assert sandbox.run_code("secret + 1").text == "42"


def test_paused_time_does_not_count_against_the_timeout(make_sandbox):
    sandbox = make_sandbox(timeout=3)
    time.sleep(1)
    sandbox.pause()
    assert sandbox.get_info().end_at is not None
    time.sleep(3)  # past the timeout, but paused
    sandbox.resume()
    assert sandbox.is_running() and sandbox.run_code("1 + 1").text == "2"
    deadline = time.monotonic() + 6
    while sandbox.is_running() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not sandbox.is_running()  # the 2 s it had left ran out after all
    with pytest.raises(SandboxException, match="timeout"):
        sandbox.run_code("1")


def test_kill_while_paused(make_sandbox):
    sandbox = make_sandbox()
    sandbox.commands.run("sleep 100", background=True)
    sandbox.pause()
    started = time.monotonic()
    sandbox.kill()
    assert time.monotonic() - started < 5
    assert not sandbox.is_running()
    assert not sandbox.backend.process.cgroup.exists()


def test_metrics(make_sandbox):
    sandbox = make_sandbox()
    first = sandbox.get_metrics()
    assert isinstance(first, SandboxMetrics)
    assert first.cpu_count >= 1 and 0.0 <= first.cpu_used_pct <= 100.0
    assert 0 < first.mem_used <= first.mem_total == sandbox.get_info().limits["memory_mb"] * 1024 * 1024
    assert 0 < first.disk_total == sandbox.get_info().limits["disk_mb"] * 1024 * 1024
    sandbox.files.write("/home/user/ten.bin", b"\1" * (10 * 1024 * 1024))
    second = sandbox.get_metrics()
    assert second.disk_used - first.disk_used >= 10 * 1024 * 1024
    assert second.mem_cache >= 10 * 1024 * 1024  # tmpfs files live in memory
    assert second.timestamp > first.timestamp
    # A busy second between two samples shows up as CPU use; an idle one does not.
    sandbox.run_code("import time\nend = time.time() + 1\nwhile time.time() < end: pass")
    busy = sandbox.get_metrics().cpu_used_pct
    time.sleep(1)
    idle = sandbox.get_metrics().cpu_used_pct
    assert busy > 30 and idle < 10, (busy, idle)
    sandbox.pause()
    with pytest.raises(SandboxPausedException):
        sandbox.get_metrics()


def test_async_pause_resume_metrics():
    async def scenario() -> None:
        async with await AsyncSandbox.create(timeout=60) as asbx:
            await asbx.run_code("x = 'kept'")
            await asbx.pause()
            with pytest.raises(SandboxPausedException):
                await asbx.run_code("x")
            await asbx.resume()
            assert (await asbx.run_code("x")).text == "kept"
            metrics = await asbx.get_metrics()
            assert metrics.mem_used > 0 and metrics.disk_total > 0

    asyncio.run(scenario())
