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
kind (limits, network, template), since those are fixed at start; create-time envs
are set at hand-out (the ``set_env`` request), and the timeout clock,
``started_at`` and metadata start then too.

A pooled sandbox is handed out once: it leaves the pool when taken and a
used one never returns. Idle ones are ordinary sandboxes of this process,
so they die with it (at exit, or by the launcher's lifeline if it is
killed). One that dies while idle is dropped and replaced; one that fails
at hand-out is dropped and the caller starts one cold, so a create never
goes through the pool more than once.

What a pool holds is bounded: the kinds it was given (or ``warm()``ed) for
its whole life, and at most ``learn`` kinds learnt from misses, each kept
until nobody asked for it for ``LEARNED_IDLE`` seconds. A kind that cannot
start is retried after 5 s, then 10, 20... up to ``MAX_BACKOFF``, while the
other kinds go on filling; an owner's ``memory_budget`` caps what it holds.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Self

from sandcell.isolation import DEFAULT_TEMPLATE, Limits, Policy
from sandcell.isolation.templates import check_template

from .core import SandboxCore
from .models import SandboxException

log = logging.getLogger("sandcell.pool")

PRELOAD = ("numpy", "pandas", "matplotlib.pyplot", "e2b_charts")  # e2b_charts: what a figure's chart (e2b/chart) is extracted with
SPARES = ("javascript", "bash")
PRUNE_INTERVAL = 1.0
FAILURE_BACKOFF = 5.0
MAX_BACKOFF = 600.0
LEARNED = 3
LEARNED_IDLE = 600.0

Key = tuple[Limits, bool, str]  # limits, network, template


class Waiting(collections.deque[SandboxCore]):
    """The ready sandboxes of one kind, oldest first, and how refilling it goes."""

    def __init__(self, kept: bool) -> None:
        super().__init__()
        self.kept = kept  # given to the pool (or warmed): never expires
        self.asked_at = time.monotonic()
        self.failures = 0
        self.retry_at = 0.0


class SandboxPool:
    """Keeps ``size`` started sandboxes ready per kind (limits, network, template).

    ``kinds`` (default: ``Limits()`` without network, of the default template) are kept warm from the
    start, and any kind from ``warm()`` on; up to ``learn`` others from the
    first ``create`` that asks for one (that one starts cold) until they go
    unasked for ``LEARNED_IDLE`` s. One background thread starts one sandbox
    at a time, so refilling takes at most one core from the callers.
    """

    def __init__(
        self,
        size: int = 2,
        *,
        preload: Sequence[str] = PRELOAD,
        spares: Sequence[str] = SPARES,
        detachable: bool = False,
        orphan_grace: float = 600.0,
        kinds: Iterable[Key] = ((Limits(), False, DEFAULT_TEMPLATE),),
        learn: int = LEARNED,
        memory_budget: Callable[[], int] | None = None,
    ) -> None:
        """``detachable``: sandboxes that outlive this process (the server's; see ``SandboxCore``).
        ``memory_budget``: the MiB of memory limits the pool may hold now, asked before each start."""
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"a pool's size must be a positive integer, not {size!r}")
        self.size = size
        self.preload = tuple(preload)
        self.spares = tuple(spares)
        self.detachable = detachable
        self.orphan_grace = orphan_grace
        self.learn = learn
        self.memory_budget = memory_budget
        self._ready: dict[Key, Waiting] = {key: Waiting(kept=True) for key in kinds}
        if not self._ready:
            raise ValueError("a pool needs at least one kind to keep warm")
        self.default_kind = next(iter(self._ready))
        self._starting: Key | None = None
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._refill_forever, name="sandcell-pool", daemon=True)
        self._thread.start()
        _pools.add(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _key(self, limits: Limits | None, network: bool | None, template: str | None) -> Key:
        default_limits, default_network, default_template = self.default_kind
        return (limits or default_limits, default_network if network is None else network, template or default_template)

    def ready(self, limits: Limits | None = None, network: bool | None = None, template: str | None = None) -> int:
        """How many sandboxes of this kind (default: the pool's first) wait to be handed out."""
        with self._cond:
            return len(self._ready.get(self._key(limits, network, template), ()))

    def kinds(self) -> list[Key]:
        """The kinds the pool keeps warm now."""
        with self._cond:
            return list(self._ready)

    def memory_mb(self) -> int:
        """The memory limits of the sandboxes the pool holds, the one it is starting included."""
        with self._cond:
            held = sum(key[0].memory_mb * len(ready) for key, ready in self._ready.items())
            return held + (self._starting[0].memory_mb if self._starting else 0)

    def warm(self, limits: Limits | None = None, network: bool | None = None, timeout: float | None = 0, template: str | None = None) -> bool:
        """Keep this kind warm from now on; wait up to ``timeout`` s (``None``: as long
        as it takes) until one is ready. Returns whether one is."""
        key = self._key(limits, network, template)
        check_template(key[2])
        with self._cond:
            ready = self._ready.setdefault(key, Waiting(kept=True))
            ready.kept = True
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._closed or bool(self._ready.get(key)), timeout) and not self._closed

    def take(self, limits: Limits, network: bool, envs: dict[str, str], template: str = DEFAULT_TEMPLATE) -> SandboxCore | None:
        """A ready sandbox of this kind, now with ``envs``; ``None`` if none is ready.

        Never waits for a start (a cold start is quicker than a pooled one
        with its preloading), but a miss may keep this kind warm from now on.
        A sandbox that fails at hand-out is dropped and ``None`` returned.
        """
        key = (limits, network, check_template(template))
        with self._cond:
            if self._closed:
                return None
            ready = self._ready.get(key)
            evicted = self._learn(key) if ready is None else []
            if ready is not None:
                ready.asked_at = time.monotonic()
            core = ready.popleft() if ready else None
            self._cond.notify_all()
        for old in evicted:
            old.kill("its kind left the pool")
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
            core.kill("it failed at hand-out")
            return None

    def _learn(self, key: Key) -> list[SandboxCore]:
        """Keep a missed kind warm, in place of the least recently asked learnt one if there are ``learn``; returns what that one held."""
        if self.learn <= 0:
            return []
        learnt = sorted((ready.asked_at, other) for other, ready in self._ready.items() if not ready.kept)
        evicted = [core for _, other in learnt[: max(len(learnt) - self.learn + 1, 0)] for core in self._ready.pop(other)]
        self._ready[key] = Waiting(kept=False)
        return evicted

    def release(self, memory_mb: int) -> int:
        """Kill idle sandboxes until ``memory_mb`` of limits are freed (or none is left); returns what was freed."""
        freed, victims = 0, []
        with self._cond:
            for (limits, _, _), ready in self._ready.items():
                while ready and freed < memory_mb:
                    victims.append(ready.pop())
                    freed += limits.memory_mb
        for core in victims:
            core.kill("its memory was needed for another sandbox")
        return freed

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
                dropped = self._drop_dead() + self._drop_expired()
                key, wait = (None, 0.0) if self._closed else self._next()
                if key is None and not self._closed:
                    self._cond.wait(wait)
                self._starting = key
                closed = self._closed
            for core, reason in dropped:
                core.kill(reason)
            if closed:
                return
            if key is not None:
                self._add(key)

    def _next(self) -> tuple[Key | None, float]:
        """The kind to start one of now (the furthest below ``size`` that is not backing off), or how long to wait."""
        now = time.monotonic()
        due = [key for key, ready in self._ready.items() if len(ready) < self.size and ready.retry_at <= now]
        key = min(due, key=lambda k: len(self._ready[k]), default=None)
        if key is not None and self.memory_budget is not None and self.memory_mb() + key[0].memory_mb > self.memory_budget():
            key = None  # the owner's memory is spoken for; look again soon
        retries = [ready.retry_at - now for ready in self._ready.values() if len(ready) < self.size and ready.retry_at > now]
        return key, min([PRUNE_INTERVAL, *retries])

    def _drop_dead(self) -> list[tuple[SandboxCore, str]]:
        dead = []
        for ready in self._ready.values():
            for core in [core for core in ready if not core.running]:
                ready.remove(core)
                dead.append((core, "it died while idle in the pool"))
        return dead

    def _drop_expired(self) -> list[tuple[SandboxCore, str]]:
        cutoff = time.monotonic() - LEARNED_IDLE
        expired = [key for key, ready in self._ready.items() if not ready.kept and ready.asked_at < cutoff]
        return [(core, f"nobody asked for its kind in {LEARNED_IDLE:g} s") for key in expired for core in self._ready.pop(key)]

    def _add(self, key: Key) -> None:
        limits, network, template = key
        core = None
        try:
            policy = Policy(limits=limits, network=network, preload=self.preload, spares=self.spares, template=template)
            core = SandboxCore(policy, self.detachable, self.orphan_grace)
            core.wait_started()
        except Exception as exc:  # noqa: BLE001 - the thread must go on; create() starts cold meanwhile
            core = None
            if not self._closed:  # else it was killed by close() or at exit
                self._back_off(key, exc)
        with self._cond:
            self._starting = None
            ready = None if self._closed or core is None else self._ready.get(key)
            if ready is not None and self.memory_budget is not None and self.memory_mb() + limits.memory_mb > self.memory_budget():
                ready = None  # the owner took the memory meanwhile
            if ready is not None and core is not None:
                ready.append(core)
                ready.failures = 0
                self._cond.notify_all()
        if core is not None and ready is None:
            core.kill("its pool was closed, its kind left it or its memory was needed")

    def _back_off(self, key: Key, exc: Exception) -> None:
        with self._cond:
            ready = self._ready.get(key)
            if ready is None:
                return
            delay = min(FAILURE_BACKOFF * 2**ready.failures, MAX_BACKOFF)
            ready.failures += 1
            ready.retry_at = time.monotonic() + delay
        log.warning(
            "the sandbox pool cannot start a %s sandbox of %s (%s; retrying in %g s): %s", key[2], key[0], "network" if key[1] else "no network", delay, exc
        )


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
