"""Sandboxes forked from a fork server: what they share with it, and what they must not."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sandcell import Sandbox

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(os.geteuid() != 0, reason="fork servers need root (a range of host uids)"),
]


def fork_server_pids() -> list[int]:
    """Host pids of the running fork servers."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == "sandcell-forksv":
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_sandboxes_draw_their_own_random_numbers(make_sandbox: Callable[..., Sandbox]) -> None:
    """numpy seeds its generator at import, in the fork server: each context must reseed."""
    draw = "import random, numpy; (random.random(), float(numpy.random.rand()))"
    first, second = make_sandbox(), make_sandbox()
    draws = {first.run_code(draw).text, second.run_code(draw).text}
    context = first.create_code_context()
    draws.add(first.run_code(draw, context=context).text)
    assert len(draws) == 3, draws


def test_each_sandbox_has_its_own_host_uid(make_sandbox: Callable[..., Sandbox]) -> None:
    sandboxes = [make_sandbox() for _ in range(3)]
    uids = {sandbox.backend.process.host_uid for sandbox in sandboxes}
    assert len(uids) == 3 and all(uid is not None and uid >= 1 << 26 for uid in uids), uids


def test_a_dead_fork_server_is_replaced_and_its_sandboxes_live_on(make_sandbox: Callable[..., Sandbox]) -> None:
    """Its sandboxes keep their uid range reserved: the new fork server takes another."""
    before = make_sandbox()
    assert before.run_code("x = 41").error is None
    killed = fork_server_pids()
    assert killed
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while set(fork_server_pids()) & set(killed) and time.monotonic() < deadline:
        time.sleep(0.05)
    after = make_sandbox()
    assert after.run_code("1+1").text == "2"
    assert before.run_code("x + 1").text == "42"
    assert after.backend.process.host_uid >> 20 != before.backend.process.host_uid >> 20  # another range
    assert not set(fork_server_pids()) & set(killed)


def test_fork_servers_hold_no_thread(make_sandbox: Callable[..., Sandbox], make_pooled_sandbox: Callable[..., Sandbox]) -> None:
    """A fork copies only the calling thread: a fork server with others would hand out broken locks."""
    make_sandbox().run_code("1+1")
    make_pooled_sandbox().run_code("1+1")  # the pool's fork server preloads numpy, pandas and matplotlib
    servers = fork_server_pids()
    assert servers
    for pid in servers:
        assert "Threads:\t1\n" in Path(f"/proc/{pid}/status").read_text(), pid
