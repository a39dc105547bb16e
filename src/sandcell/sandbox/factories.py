"""Where a new sandbox's backend comes from: a pool, a cold start, a server, or a copy of another.

Above ``core``, ``pool``, ``remote`` and ``state_copy``, which know nothing of each other's choice.
"""

from __future__ import annotations

import os
from typing import Literal

from sandcell.isolation import DEFAULT_TEMPLATE, Limits, Policy
from sandcell.isolation.templates import check_template

from .backend import SandboxBackend
from .checks import check_create
from .core import SandboxCore
from .models import SandboxException
from .pool import SandboxPool, default_pool
from .remote import RemoteCore
from .state_copy import copy_state


def local_core(
    timeout: float | None,
    envs: dict[str, str] | None,
    limits: Limits | None,
    metadata: dict[str, str] | None,
    network: bool,
    pool: SandboxPool | Literal[False] | None,
    template: str = DEFAULT_TEMPLATE,
) -> SandboxCore:
    """A sandbox on this machine, from ``pool`` if it has one ready (``None``: the process-wide pool, if any)."""
    check_create(timeout, envs)
    check_template(template)
    limits = limits or Limits()
    chosen = default_pool() if pool is None else pool or None
    core = chosen.take(limits, network, envs or {}, template) if chosen else None
    if core is None:
        core = SandboxCore(Policy(limits=limits, envs=dict(envs or {}), network=network, template=template))
    core.pool = pool
    core.hand_out(timeout, metadata)
    return core


def new_backend(
    timeout: float | None,
    envs: dict[str, str] | None,
    limits: Limits | None,
    metadata: dict[str, str] | None,
    network: bool,
    api_url: str | None,
    api_key: str | None,
    pool: SandboxPool | Literal[False] | None = None,
    template: str = DEFAULT_TEMPLATE,
) -> SandboxBackend:
    """A sandbox on this machine (from ``pool`` if it has one ready), or on the
    server named by ``api_url`` / ``SANDCELL_API_URL``.

    ``pool`` ``None`` means the process-wide pool that ``SANDCELL_POOL_SIZE``
    turns on; ``False``, a cold start whatever the environment says.
    """
    api_url = api_url or os.environ.get("SANDCELL_API_URL")
    if not api_url:
        return local_core(timeout, envs, limits, metadata, network, pool, template)
    if pool:
        raise ValueError("a SandboxPool holds sandboxes of this machine; it cannot serve api_url")
    body = {
        "timeout": timeout,
        "envs": envs or {},
        "metadata": metadata or {},
        "limits": limits.to_dict() if limits else {},
        "network": network,
        "template": check_template(template),
    }
    return RemoteCore.create(api_url, api_key or os.environ.get("SANDCELL_API_KEY"), **body)


def server_backend(sandbox_id: str, api_url: str | None, api_key: str | None) -> RemoteCore:
    api_url = api_url or os.environ.get("SANDCELL_API_URL")
    if not api_url:
        raise SandboxException("connect() needs the server: pass api_url or set SANDCELL_API_URL")
    return RemoteCore.connect(api_url, api_key or os.environ.get("SANDCELL_API_KEY"), sandbox_id)


def fork_backend(source: SandboxBackend, timeout: float | None) -> SandboxBackend:
    """A new sandbox like ``source``, with a copy of its files and Python state (see ``state_copy``).

    A server copies its own sandboxes. A local one's copy comes from the pool
    the source came from (or the process-wide pool) when one is ready there,
    and starts while the source packs its state.
    """
    if isinstance(source, RemoteCore):
        return source.fork(timeout)
    pool = source.pool if isinstance(source, SandboxCore) else None
    policy = source.policy

    def start() -> SandboxCore:
        child = local_core(timeout, policy.envs, policy.limits, source.metadata, policy.network, pool, policy.template)
        child.wait_started()
        return child

    return copy_state(source, start, lambda child: child, lambda child, reason: child.kill(f"the fork failed: {reason}"))
