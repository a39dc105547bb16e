"""Shared fixtures: real sandboxes, always killed when the test ends."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pooling import take_pooled

from sandcell import Limits, Sandbox, SandboxPool

# A sandbox's own lifetime in tests: long enough for any test, short enough
# that a leaked one does not outlive the test session by much.
TEST_SANDBOX_TIMEOUT = 180


def sandbox_factory(create: Callable[..., Sandbox]) -> Iterator[Callable[..., Sandbox]]:
    """``make(limits=Limits(...), **create_kwargs)``; what it made is killed at the end."""
    created: list[Sandbox] = []

    def make(limits: Limits | None = None, **kwargs: Any) -> Sandbox:
        kwargs.setdefault("timeout", TEST_SANDBOX_TIMEOUT)
        sbx = create(limits=limits, **kwargs)
        created.append(sbx)
        return sbx

    yield make
    for sbx in created:
        try:
            sbx.kill()
        except Exception:  # noqa: S110, BLE001 - teardown must go on
            pass


@pytest.fixture
def make_sandbox() -> Iterator[Callable[..., Sandbox]]:
    """A factory of cold-started sandboxes."""
    yield from sandbox_factory(functools.partial(Sandbox.create, pool=False))


@pytest.fixture(scope="session")
def sandbox_pool() -> Iterator[SandboxPool]:
    """One pool for the session; size 1, since every refill takes a core."""
    with SandboxPool(size=1) as pool:
        yield pool


@pytest.fixture
def make_pooled_sandbox(sandbox_pool: SandboxPool) -> Iterator[Callable[..., Sandbox]]:
    """A factory of sandboxes handed out by the pool (each waits for a ready one)."""
    yield from sandbox_factory(functools.partial(take_pooled, sandbox_pool))


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
    """One sandbox with default limits."""
    return make_sandbox()
