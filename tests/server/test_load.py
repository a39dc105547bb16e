"""The short form of ``benchmarks/load.py``: floods beside well-behaved clients on one server."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serving import Server, start_server

from sandcell.server.store import Store

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
import load  # benchmarks/load.py

PATIENCE = 2
LOAD_BOUND = 200  # the well-behaved runs take 60 s at most, the floods' last ones up to load.FLOOD_TIMEOUT: past this, something waits that never ends


async def bounded(run: Any, seconds: float, server: Server) -> Any:
    """``run``, or a failure naming what still waited when it stalled (with the server's last words)."""
    task = asyncio.ensure_future(run)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if task in done:
        return task.result()
    waiting = [f"{other.get_coro()}: {other.get_stack(limit=3)}" for other in asyncio.all_tasks() if other is not asyncio.current_task() and not other.done()]
    task.cancel()
    pytest.fail(f"the load stalled past {seconds} s; still waiting: {waiting[:12]}\nserver log: {server.log.read_text()[-3000:]}")


@pytest.fixture
def load_server(tmp_path: Path) -> Iterator[tuple[Server, str]]:
    running = start_server(tmp_path / "server.db", tmp_path / "server.log", extra=["--client-patience", str(PATIENCE), "--kill-on-exit"])
    yield running, Store(running.db).create_key("load")[1]
    running.stop()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_floods_do_not_cost_well_behaved_clients_their_output(load_server: tuple[Server, str]) -> None:
    server, key = load_server
    run = load.load(
        server.url, key, server.process.pid, sandboxes=6, flooders=3, runs=50, pause=0.15, duration=60, kinds=["output", "results", "unread"], patience=PATIENCE
    )
    report = asyncio.run(bounded(run, LOAD_BOUND, server))
    print(report.summary())
    assert report.runs == 150
    assert report.lost == []
    assert set(report.floods) == {"output", "results", "unread"}, f"every flood ran at least once: {report.floods}"
    assert report.server_mib_peak - report.server_mib_started < 160, report.summary()
    assert report.percentile(0.99) < 5000, report.summary()
    assert server.alive()
