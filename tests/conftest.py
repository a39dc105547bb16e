"""Shared fixtures: real sandboxes, always killed when the test ends."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from sandcell import Limits, Sandbox

# A sandbox's own lifetime in tests: long enough for any test, short enough
# that a leaked one does not outlive the test session by much.
TEST_SANDBOX_TIMEOUT = 180


@pytest.fixture
def make_sandbox() -> Iterator[Callable[..., Sandbox]]:
    """A factory of sandboxes, ``make_sandbox(limits=Limits(...), **create_kwargs)``."""
    created: list[Sandbox] = []

    def make(limits: Limits | None = None, **kwargs: Any) -> Sandbox:
        kwargs.setdefault("timeout", TEST_SANDBOX_TIMEOUT)
        sbx = Sandbox.create(limits=limits, **kwargs)
        created.append(sbx)
        return sbx

    yield make
    for sbx in created:
        try:
            sbx.kill()
        except Exception:  # noqa: BLE001 - teardown must go on
            pass


@pytest.fixture
def sandbox(make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    """One sandbox with default limits."""
    return make_sandbox()
