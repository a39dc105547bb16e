"""A real ``sandcell serve`` on loopback, and the official E2B SDKs pointed at it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from e2b_code_interpreter import Sandbox
from serving import Keys, Server, start_server

from sandcell.server.store import Store


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


@pytest.fixture
def bystander(server: Server) -> Iterator[Sandbox]:
    """A sandbox on the session's server that must not notice anything a test does to the server."""
    sandbox = Sandbox.create(timeout=120)
    sandbox.run_code("witness = 'intact'")
    yield sandbox
    assert sandbox.run_code("witness").text == "'intact'"
    sandbox.kill()
