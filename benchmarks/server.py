"""``sandcell serve`` over loopback HTTP: the official E2B SDK and sandcell's own client.

Used by ``run.py``; the baseline of each figure is the same call on an
in-process ``Sandbox`` in the same run, so the ratio is what HTTP costs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from sandcell import Sandbox
from sandcell.server.store import Store


@contextmanager
def running_server(pool: int, extra: list[str] | None = None) -> Iterator[tuple[str, str, subprocess.Popen[bytes]]]:
    """A real server on a free loopback port (``extra``: more ``sandcell serve`` options), a key for it, and its process."""
    with tempfile.TemporaryDirectory() as root, socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        db = Path(root) / "server.db"
        key = Store(db).create_key("bench")[1]
        sandcell = Path(sys.executable).with_name("sandcell")
        argv = [str(sandcell), "serve", "--port", str(port), "--db", str(db), "--log-level", "warning", "--pool", str(pool), "--kill-on-exit", *(extra or [])]
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    httpx.get(url + "/openapi.json", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            yield url, key, process
        finally:
            process.terminate()
            process.wait(30)


def pool_ready(url: str) -> bool:
    return any(line.startswith("sandcell_pool_ready ") and float(line.split()[1]) >= 1 for line in httpx.get(url + "/metrics").text.splitlines())


def figures(timed: Callable[[Callable[[], object], int], list[float]], starts: int, trips: int) -> list[tuple[str, list[float], list[float]]]:
    """(name, over HTTP, in-process) samples in milliseconds."""
    from e2b_code_interpreter import Sandbox as E2BSandbox

    def local_create() -> None:
        with Sandbox.create() as sandbox:
            assert sandbox.run_code("1+1").text == "2"

    with Sandbox.create() as local:
        local.run_code("1+1")
        local_trips = timed(lambda: local.run_code("1+1"), trips)
    local_starts = timed(local_create, starts)

    with running_server(pool=0) as (url, key, _):
        os.environ.update(E2B_API_URL=url, E2B_SANDBOX_URL=url, E2B_API_KEY=key)

        def e2b_create() -> None:
            sandbox = E2BSandbox.create()
            assert sandbox.run_code("1+1").text == "2"
            sandbox.kill()

        def client_create() -> None:
            with Sandbox.create(api_url=url, api_key=key) as sandbox:
                assert sandbox.run_code("1+1").text == "2"

        e2b_create()
        e2b_starts = timed(e2b_create, starts)
        client_starts = timed(client_create, starts)
        e2b_sandbox = E2BSandbox.create()
        e2b_sandbox.run_code("1+1")
        e2b_trips = timed(lambda: e2b_sandbox.run_code("1+1"), trips)
        e2b_sandbox.kill()
        with Sandbox.create(api_url=url, api_key=key) as remote:
            remote.run_code("1+1")
            client_trips = timed(lambda: remote.run_code("1+1"), trips)

    with running_server(pool=1) as (url, key, _):
        os.environ.update(E2B_API_URL=url, E2B_SANDBOX_URL=url, E2B_API_KEY=key)

        def pooled_create() -> None:
            while not pool_ready(url):  # each create takes the one ready sandbox; not timed
                time.sleep(0.1)
            started = time.perf_counter()
            sandbox = E2BSandbox.create()
            assert sandbox.run_code("1+1").text == "2"
            pooled_starts.append((time.perf_counter() - started) * 1000)
            sandbox.kill()

        pooled_starts: list[float] = []
        for _ in range(starts):
            pooled_create()
    return [
        ("http: e2b SDK create -> first result (vs in-process)", e2b_starts, local_starts),
        ("http: e2b SDK create from the server's pool", pooled_starts, local_starts),
        ("http: sandcell client create -> first result", client_starts, local_starts),
        ("http: e2b SDK run_code('1+1') (vs in-process)", e2b_trips, local_trips),
        ("http: sandcell client run_code('1+1')", client_trips, local_trips),
    ]
