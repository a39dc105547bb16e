"""A warm pool of whole sandboxes: ``create()`` becomes a hand-over.

A cold sandbox starts in a few hundred milliseconds, and its first
``import pandas`` costs over a second more. A pool starts sandboxes before
anyone asks, with numpy, pandas and matplotlib already imported in their
Python zygote and a spare JavaScript and bash context waiting, so that
``Sandbox.create(pool=...)`` to a first result costs about a round trip.

Isolation is exactly a cold sandbox's: a pooled sandbox is started by the
same ``launch`` with the same limits, network and uid scheme; it is only
started earlier. What the pool adds is per sandbox and costs memory, not
rights: the preloaded modules and the spare contexts. Sandboxes wait per
kind (limits, network), since those are fixed at start; create-time envs
are set at hand-out (the ``set_env`` request), and the timeout clock,
``started_at`` and metadata start then too.

A pooled sandbox is handed out once: it leaves the pool when taken and a
used one never returns. Idle ones are ordinary sandboxes of this process,
so they die with it (at exit, or by the launcher's lifeline if it is
killed). One that dies while idle is dropped and replaced.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import threading
import weakref
from typing import Sequence

from sandcell.isolation import Limits, Policy

from .core import SandboxCore
from .models import SandboxException

log = logging.getLogger("sandcell.pool")

PRELOAD = ("numpy", "pandas", "matplotlib.pyplot")
SPARES = ("javascript", "bash")
PRUNE_INTERVAL = 1.0
FAILURE_BACKOFF = 5.0

Key = tuple[Limits, bool]


class SandboxPool:
    """Keeps ``size`` started sandboxes ready per kind (limits, network).

    The default kind (``Limits()``, no network) is kept warm from the start;
    any other is kept warm from the first ``create`` that asks for it (that
    one starts cold) or from ``warm()``. One background thread starts one
    sandbox at a time, so refilling takes at most one core from the callers.
    """

    def __init__(
        self,
        size: int = 2,
        *,
        preload: Sequence[str] = PRELOAD,
        spares: Sequence[str] = SPARES,
        detachable: bool = False,
        orphan_grace: float = 600.0,
    ) -> None:
        """``detachable``: sandboxes that outlive this process (the server's; see ``SandboxCore``)."""
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"a pool's size must be a positive integer, not {size!r}")
        self.size = size
        self.preload = tuple(preload)
        self.spares = tuple(spares)
        self.detachable = detachable
        self.orphan_grace = orphan_grace
        self._ready: dict[Key, collections.deque[SandboxCore]] = {(Limits(), False): collections.deque()}
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._refill_forever, name="sandcell-pool", daemon=True)
        self._thread.start()
        _pools.add(self)

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def ready(self, limits: Limits | None = None, network: bool = False) -> int:
        """How many sandboxes of this kind wait to be handed out."""
        with self._cond:
            return len(self._ready.get((limits or Limits(), network), ()))

    def warm(self, limits: Limits | None = None, network: bool = False, timeout: float | None = 0) -> bool:
        """Keep this kind warm from now on; wait up to ``timeout`` s (``None``: as long
        as it takes) until one is ready. Returns whether one is."""
        key = (limits or Limits(), network)
        with self._cond:
            self._ready.setdefault(key, collections.deque())
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._closed or bool(self._ready[key]), timeout) and not self._closed

    def take(self, limits: Limits, network: bool, envs: dict[str, str]) -> SandboxCore | None:
        """A ready sandbox of this kind, now with ``envs``; ``None`` if none is ready.

        Never waits for a start (a cold start is quicker than a pooled one
        with its preloading), but a miss keeps this kind warm from now on.
        """
        key = (limits, network)
        while True:
            with self._cond:
                if self._closed:
                    return None
                ready = self._ready.setdefault(key, collections.deque())
                core = ready.popleft() if ready else None
                self._cond.notify_all()
            if core is None:
                return None
            try:
                if not core.running:
                    raise SandboxException(core.stop_reason or "it stopped")
                if envs:
                    core.add_envs(envs)
                return core
            except SandboxException as exc:
                log.warning("pooled sandbox %s dropped at hand-out: %s", core.sandbox_id, exc)
                core.kill("it died while idle in the pool")

    def close(self) -> None:
        """Kill the idle sandboxes and stop refilling; those handed out live on."""
        with self._cond:
            self._closed = True
            idle = [core for ready in self._ready.values() for core in ready]
            self._ready.clear()
            self._cond.notify_all()
        for core in idle:
            core.kill("its pool was closed")

    # -- the refill thread --------------------------------------------------------
    def _refill_forever(self) -> None:
        while True:
            with self._cond:
                dead = self._drop_dead()
                key = None if self._closed else self._shortest()
                if key is None and not self._closed:
                    self._cond.wait(PRUNE_INTERVAL)
                closed = self._closed
            for core in dead:
                core.kill("it died while idle in the pool")
            if closed:
                return
            if key is not None:
                self._add(key)

    def _shortest(self) -> Key | None:
        """The kind furthest below ``size``, if any is."""
        key = min(self._ready, key=lambda k: len(self._ready[k]), default=None)
        return key if key is not None and len(self._ready[key]) < self.size else None

    def _drop_dead(self) -> list[SandboxCore]:
        dead = []
        for ready in self._ready.values():
            for core in [core for core in ready if not core.running]:
                ready.remove(core)
                dead.append(core)
        return dead

    def _add(self, key: Key) -> None:
        limits, network = key
        try:
            policy = Policy(limits=limits, network=network, preload=self.preload, spares=self.spares)
            core = SandboxCore(policy, self.detachable, self.orphan_grace)
            core.wait_started()
        except Exception as exc:  # noqa: BLE001 - the thread must go on; create() starts cold meanwhile
            if self._closed:
                return  # killed by close() or at exit
            log.warning("the sandbox pool cannot start a sandbox (retrying in %g s): %s", FAILURE_BACKOFF, exc)
            with self._cond:
                self._cond.wait_for(lambda: self._closed, FAILURE_BACKOFF)
            return
        with self._cond:
            kept = not self._closed and key in self._ready
            if kept:
                self._ready[key].append(core)
                self._cond.notify_all()
        if not kept:
            core.kill("its pool was closed")


_pools: weakref.WeakSet[SandboxPool] = weakref.WeakSet()
_default: SandboxPool | None = None
_default_lock = threading.Lock()


def default_pool() -> SandboxPool | None:
    """The process-wide pool that ``SANDCELL_POOL_SIZE`` (unset or 0: none) turns on, made on first use."""
    global _default
    raw = os.environ.get("SANDCELL_POOL_SIZE", "").strip()
    try:
        size = int(raw or 0)
    except ValueError:
        raise ValueError(f"SANDCELL_POOL_SIZE must be a whole number, not {raw!r}") from None
    if size <= 0:
        return None
    with _default_lock:
        if _default is None or _default.closed:
            _default = SandboxPool(size)
        return _default


@atexit.register
def _close_all() -> None:
    """Stop refilling before ``core`` kills every sandbox at exit (atexit runs this first)."""
    for pool in list(_pools):
        pool.close()
