"""A real ``sandcell serve`` on loopback, and the official E2B SDKs pointed at it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from e2b_code_interpreter import Sandbox
from sandboxes import Made, SandboxFactory
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
def make_e2b_sandbox(module_sandboxes: Made[Any]) -> Iterator[SandboxFactory[Sandbox]]:
    """The factory of the E2B SDK's sandboxes (see ``SandboxFactory``): on the session's server unless
    ``api_url``, ``sandbox_url`` and ``api_key`` name another; every E2B sandbox fixture is made with it."""
    with Made() as made:
        yield SandboxFactory(Sandbox.create, made, module_sandboxes)


@pytest.fixture
def bystander(server: Server, make_e2b_sandbox: SandboxFactory[Sandbox]) -> Iterator[Sandbox]:
    """A sandbox on the session's server that must not notice anything a test does to the server."""
    sandbox = make_e2b_sandbox()
    sandbox.run_code("witness = 'intact'")
    yield sandbox
    assert sandbox.run_code("witness").text == "intact"
