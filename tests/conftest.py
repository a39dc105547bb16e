"""Shared fixtures: real sandboxes, always killed when the test (or, for a shared one, the module) ends."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pooling import take_pooled
from sandboxes import Made, SandboxFactory

from sandcell import Sandbox, SandboxPool


@pytest.fixture(scope="module")
def module_sandboxes() -> Iterator[Made[Any]]:
    """What ``make_sandbox(scope="module", ...)`` started in a module: killed after its last test."""
    with Made() as made:
        yield made


@pytest.fixture
def make_sandbox(module_sandboxes: Made[Sandbox]) -> Iterator[SandboxFactory[Sandbox]]:
    """The factory of cold-started sandboxes (see ``SandboxFactory``): every sandbox fixture is made with it."""
    with Made() as made:
        yield SandboxFactory(Sandbox.create, made, module_sandboxes, pool=False)


@pytest.fixture(scope="session")
def sandbox_pool() -> Iterator[SandboxPool]:
    """One pool for the session; size 1, since every refill takes a core."""
    with SandboxPool(size=1) as pool:
        yield pool


@pytest.fixture
def make_pooled_sandbox(sandbox_pool: SandboxPool, module_sandboxes: Made[Sandbox]) -> Iterator[SandboxFactory[Sandbox]]:
    """Like ``make_sandbox``, of sandboxes handed out by the pool (each waits for a ready one)."""
    with Made() as made:
        yield SandboxFactory(take_pooled, made, module_sandboxes, pool=sandbox_pool)


@pytest.fixture(params=["forked", "pooled", "bwrap"])
def any_sandbox(
    request: pytest.FixtureRequest, make_sandbox: Callable[..., Sandbox], make_pooled_sandbox: Callable[..., Sandbox], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Sandbox]:
    """A factory of sandboxes forked from a fork server, handed out by a pool (forked from a
    fork server too) or started by a bubblewrap of their own: what holds for one must hold for all."""
    if request.param == "bwrap":
        monkeypatch.setenv("SANDCELL_FORK_SERVER", "0")
    return make_pooled_sandbox if request.param == "pooled" else make_sandbox


@pytest.fixture
def sandbox(make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    """One sandbox with default limits, for one test."""
    return make_sandbox()
