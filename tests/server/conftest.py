"""A real ``sandcell serve`` on loopback, and the official E2B SDKs pointed at it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from sandcell.server.store import Store

SANDCELL = Path(sys.executable).with_name("sandcell")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    db: Path
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def alive(self) -> bool:
        return self.process.poll() is None and httpx.get(self.url + "/openapi.json", timeout=5).status_code == 200


def start_server(db: Path, log: Path, port: int | None = None) -> Server:
    port = port or free_port()
    with log.open("ab") as sink:
        process = subprocess.Popen([str(SANDCELL), "serve", "--port", str(port), "--db", str(db), "--log-level", "warning"], stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sandcell serve exited: {log.read_text()[-2000:]}")
        try:
            httpx.get(url + "/openapi.json", timeout=1)
            return Server(url, db, process, log)
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("sandcell serve did not start within 30 s")


@dataclass
class Keys:
    alpha: str
    beta: str
    revoked: str


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("server")
    running = start_server(root / "server.db", root / "server.log")
    yield running
    running.stop()
    assert running.process.returncode is not None


@pytest.fixture(scope="session")
def keys(server: Server) -> Keys:
    store = Store(server.db)
    revoked, revoked_secret = store.create_key("alpha", "revoked")
    store.revoke_key(revoked.id)
    return Keys(alpha=store.create_key("alpha")[1], beta=store.create_key("beta")[1], revoked=revoked_secret)


@pytest.fixture(scope="session", autouse=True)
def e2b_environment(server: Server, keys: Keys) -> Iterator[None]:
    """The two environment variables (plus the key) a user changes to switch from E2B."""
    saved = {name: os.environ.get(name) for name in ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY")}
    os.environ.update(E2B_API_URL=server.url, E2B_SANDBOX_URL=server.url, E2B_API_KEY=keys.alpha)
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
