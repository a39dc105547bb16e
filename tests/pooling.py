"""Taking sandboxes from a pool in tests (a module of its own: two conftest.py files cannot both be imported by name)."""

from __future__ import annotations

from typing import Any

from sandcell import Limits, Sandbox, SandboxPool
from sandcell.isolation import DEFAULT_TEMPLATE

POOL_FILL_WAIT = 120


def take_pooled(pool: SandboxPool, limits: Limits | None = None, network: bool = False, template: str = DEFAULT_TEMPLATE, **kwargs: Any) -> Sandbox:
    """A sandbox that surely comes from ``pool``: waits until one of its kind is ready."""
    assert pool.warm(limits, network, timeout=POOL_FILL_WAIT, template=template), "the pool did not fill"
    sbx = Sandbox.create(pool=pool, limits=limits, network=network, template=template, **kwargs)
    assert sbx.backend.policy.preload, "the sandbox did not come from the pool"
    return sbx
