"""Many sandboxes in one server process: ownership, lifetime and the registry.

Every API (native REST, E2B control plane, E2B data plane) goes through here,
so a team can only ever reach its own sandboxes, and every sandbox that ends
has its reason written down.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import hmac
import logging
import os
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from sandcell.isolation import DEFAULT_TEMPLATE, Limits, Policy
from sandcell.sandbox import AsyncSandbox, SandboxException
from sandcell.sandbox.checks import check_create, check_seconds
from sandcell.sandbox.core import SandboxCore
from sandcell.sandbox.errors import status_for
from sandcell.sandbox.pool import SandboxPool
from sandcell.sandbox.state_copy import copy_state

from .errors import ApiError
from .quotas import check_limits, check_maxima, default_server_memory_mb, default_team_memory_mb, machine_maxima
from .store import LIVE_STATES, SandboxRecord, Store, Team, now

log = logging.getLogger("sandcell.server")

# The template names a client may ask for, and the sandcell template each is
# (code-interpreter-beta: what E2B's code interpreter SDK asked for before v1).
TEMPLATES = {"base": "base", "code-interpreter-v1": "code-interpreter-v1", "code-interpreter-beta": "code-interpreter-v1", "sandcell": DEFAULT_TEMPLATE}
REAP_INTERVAL = 0.5


@dataclass
class ServerConfig:
    default_timeout: float = 300
    max_timeout: float = 24 * 3600
    max_sandboxes_per_team: int = 100
    max_upload_bytes: int = 512 * 1024 * 1024
    # Uploads streaming into one team's sandboxes at once (each holds a few MiB
    # of the server's memory); more wait for a slot, up to upload_wait seconds.
    max_uploads_per_team: int = 4
    upload_wait: float = 30.0
    limits: Limits = field(default_factory=Limits)
    # The largest limits one sandbox may ask for, field by field (see quotas.py).
    max_limits: Limits = field(default_factory=machine_maxima)
    # Memory limits (MiB) one team's live sandboxes may hold together, and all
    # sandboxes of the server, pooled ones included.
    max_team_memory_mb: int = field(default_factory=default_team_memory_mb)
    max_server_memory_mb: int = field(default_factory=default_server_memory_mb)
    # How long sandboxes wait for the server to come back after it stops;
    # with kill_on_exit they end with it instead.
    orphan_grace: float = 600.0
    kill_on_exit: bool = False
    # Started sandboxes of the default template kept ready (numpy, pandas, matplotlib imported): create becomes a hand-over.
    pool_size: int = 0
    # Seconds a stream of output waits for a client that reads nothing before it drops the rest.
    client_patience: float = 30.0

    def __post_init__(self) -> None:
        check_maxima(self.limits, self.max_limits)


@dataclass
class LiveSandbox:
    record: SandboxRecord
    sandbox: AsyncSandbox

    @property
    def access_token(self) -> str:
        return self.record.access_token

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def paused(self) -> bool:
        return self.record.state == "paused"

    @property
    def core(self) -> SandboxCore:
        """The server's own sandboxes run here, on a ``SandboxCore`` it started or attached to."""
        core = self.sandbox.backend
        assert isinstance(core, SandboxCore)
        return core

    @property
    def memory_mb(self) -> int:
        return int(self.record.limits.get("memory_mb", 0))

    def token_matches(self, token: str | None) -> bool:
        # An empty token is never one: a sandbox without one (an old registry's) matches nothing.
        if not token or not self.access_token:
            return False
        return hmac.compare_digest(token.encode(), self.access_token.encode())


class SandboxManager:
    def __init__(self, store: Store, config: ServerConfig | None = None) -> None:
        self.store = store
        self.config = config or ServerConfig()
        self.instance = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._live: dict[str, LiveSandbox] = {}
        self.created = 0
        self.ended: collections.Counter[str] = collections.Counter()
        self._reaper: asyncio.Task[None] | None = None
        self.pool: SandboxPool | None = None
        self._starting: list[tuple[str, int]] = []  # (team id, memory MiB) of the creates under way
        self._upload_slots: dict[str, asyncio.Semaphore] = {}

    @contextlib.asynccontextmanager
    async def upload_slot(self, team_id: str) -> AsyncIterator[None]:
        """One of the team's ``max_uploads_per_team`` upload slots, held while an upload streams in;
        429 if none frees within ``upload_wait`` seconds."""
        slots = self._upload_slots.setdefault(team_id, asyncio.Semaphore(self.config.max_uploads_per_team))
        try:
            await asyncio.wait_for(slots.acquire(), self.config.upload_wait)
        except TimeoutError:
            raise ApiError(
                429, f"the team already has {self.config.max_uploads_per_team} uploads under way (the server's limit); retry when one has ended"
            ) from None
        try:
            yield
        finally:
            slots.release()

    # -- server lifetime ------------------------------------------------------
    async def start(self) -> None:
        self.store.claim_for_server()
        await self.take_over_previous_runs()
        self._reaper = asyncio.create_task(self._reap_forever())
        if self.config.pool_size:
            # Only the server's own default kind is kept warm, within what the live sandboxes leave of the memory budget.
            self.pool = SandboxPool(
                self.config.pool_size,
                detachable=True,
                orphan_grace=self.config.orphan_grace,
                kinds=[(self.config.limits, False, DEFAULT_TEMPLATE)],
                learn=0,
                memory_budget=lambda: self.config.max_server_memory_mb - self.memory_mb(),
            )

    async def close(self) -> None:
        """Stop: sandboxes stay up for the next server to take over, unless ``kill_on_exit``."""
        if self._reaper is not None:
            self._reaper.cancel()
        if self.pool is not None:
            await asyncio.to_thread(self.pool.close)
        for live in list(self._live.values()):
            if self.config.kill_on_exit:
                await self._end(live, "stopped", "the server shut down")
            else:
                live.core.detach()
                self._live.pop(live.id, None)

    async def take_over_previous_runs(self) -> None:
        """Re-attach the sandboxes a previous server process left running; record why any could not be."""
        left = [record for record in self.store.sandboxes(states=LIVE_STATES) if record.server_instance != self.instance]
        await asyncio.gather(*(self._take_over(record) for record in left))

    async def _take_over(self, record: SandboxRecord) -> None:
        try:
            template = TEMPLATES.get(record.template, DEFAULT_TEMPLATE)
            core = await asyncio.to_thread(
                SandboxCore.attach, record.id, Limits(**record.limits), record.metadata, record.started_at, record.allow_internet, template
            )
        except SandboxException as exc:
            reason = f"lost when the server restarted: {exc}"
            self.store.update_sandbox(record.id, state="lost", reason=reason, ended_at=now())
            self.ended["lost"] += 1
            log.warning("sandbox %s lost: %s", record.id, exc)
            return
        live = LiveSandbox(record, AsyncSandbox(core))
        record.server_instance = self.instance
        record.state = "paused" if core.paused else "running"
        self._live[record.id] = live
        self.store.update_sandbox(record.id, server_instance=self.instance, state=record.state)
        left = None if record.end_at is None else (record.end_at - now()).total_seconds()
        if core.paused:
            core.set_timeout(self.config.default_timeout)  # a paused sandbox's clock starts when it is resumed
        elif left is not None and left <= 0:
            await self._end(live, "ended", "it reached its timeout while the server was down")
            return
        elif left is not None:
            core.set_timeout(left)
        log.info("sandbox %s re-attached (%s)", record.id, record.state)

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL)
            self._forget_ended()

    def _forget_ended(self) -> None:
        for live in list(self._live.values()):
            if live.sandbox.stop_reason is not None:
                self._forget(live)

    def _running(self, sandbox_id: str) -> LiveSandbox | None:
        """The live sandbox of that id, if it still runs (one that ended meanwhile is recorded as ended)."""
        live = self._live.get(sandbox_id)
        if live is not None and live.sandbox.stop_reason is not None:
            self._forget(live)
            return None
        return live

    def _forget(self, live: LiveSandbox) -> None:
        """Record why a sandbox ended by itself (timeout, crash, memory)."""
        if self._live.pop(live.id, None) is None:
            return
        reason = live.sandbox.stop_reason or "the sandbox stopped"
        self.store.update_sandbox(live.id, state="ended", reason=reason, ended_at=now())
        self.ended["ended"] += 1
        log.info("sandbox %s ended: %s", live.id, reason)

    async def _end(self, live: LiveSandbox, state: str, reason: str) -> None:
        self._live.pop(live.id, None)
        await live.sandbox.kill()
        self.store.update_sandbox(live.id, state=state, reason=reason, ended_at=now())
        self.ended[state] += 1

    # -- lifecycle ------------------------------------------------------------
    async def create(
        self,
        team: Team,
        template: str = DEFAULT_TEMPLATE,
        timeout: float | None = None,
        metadata: dict[str, str] | None = None,
        envs: dict[str, str] | None = None,
        allow_internet: bool = False,
        limits: Limits | None = None,
    ) -> LiveSandbox:
        if template not in TEMPLATES:
            raise ApiError(404, f"template {template!r} not found; available: {', '.join(TEMPLATES)}")
        template = TEMPLATES[template]
        timeout = self._check_timeout(timeout)
        limits = limits or self.config.limits
        try:
            check_create(timeout, envs)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        self._admit(team, limits)
        claim = (team.id, limits.memory_mb)
        self._starting.append(claim)  # counted from now on, so that concurrent creates cannot pass the shares
        try:
            core = await asyncio.to_thread(self._start, limits, allow_internet, dict(envs or {}), template)
            core.hand_out(timeout, metadata)
            info = core.info()
            record = SandboxRecord(
                id=core.sandbox_id,
                team_id=team.id,
                template=template,
                metadata=dict(metadata or {}),
                limits=limits.to_dict(),
                allow_internet=allow_internet,
                state="running",
                started_at=info.started_at,
                end_at=info.end_at,
                server_instance=self.instance,
                access_token=secrets.token_urlsafe(24),
            )
            self.store.add_sandbox(record)
            live = LiveSandbox(record, AsyncSandbox(core))
            self._live[live.id] = live
        finally:
            self._starting.remove(claim)
        self.created += 1
        log.info("sandbox %s created for team %s (template %s)", live.id, team.name, template)
        return live

    def _start(self, limits: Limits, network: bool, envs: dict[str, str], template: str) -> SandboxCore:
        """A started sandbox (blocking): a pooled one if one is ready, else one cold start, for which the pool makes room."""
        core = self.pool.take(limits, network, envs, template) if self.pool else None
        if core is not None:
            return core
        if self.pool is not None:
            over = self.memory_mb() + self.pool.memory_mb() - self.config.max_server_memory_mb
            if over > 0:
                self.pool.release(over)
        core = SandboxCore(Policy(limits=limits, envs=envs, network=network, template=template), True, self.config.orphan_grace)
        core.wait_started()
        return core

    def memory_mb(self) -> int:
        """The memory limits of the live sandboxes and those being created (called from the pool's thread too)."""
        return sum(live.memory_mb for live in tuple(self._live.values())) + sum(memory for _, memory in tuple(self._starting))

    def _admit(self, team: Team, limits: Limits) -> None:
        """Refuse a sandbox above the maxima (400), or past the team's or the server's share (429, 503)."""
        check_limits(limits, self.config.max_limits)
        config, asked = self.config, limits.memory_mb
        mine = [live.memory_mb for live in self._live.values() if live.record.team_id == team.id]
        mine += [memory for team_id, memory in self._starting if team_id == team.id]
        if len(mine) >= config.max_sandboxes_per_team:
            raise ApiError(429, f"the team already has {len(mine)} live sandboxes, the most this server allows (sandcell serve --max-sandboxes)")
        if sum(mine) + asked > config.max_team_memory_mb:
            raise ApiError(
                429,
                f"the team's live sandboxes hold {sum(mine)} MiB of memory limits; {asked} more would pass "
                f"the team's maximum of {config.max_team_memory_mb} MiB (sandcell serve --max-team-memory-mb)",
            )
        held = self.memory_mb()
        if held + asked > config.max_server_memory_mb:
            raise ApiError(
                503,
                f"the server's sandboxes hold {held} MiB of memory limits; {asked} more would pass "
                f"its budget of {config.max_server_memory_mb} MiB (sandcell serve --max-server-memory-mb)",
            )

    def live(self) -> list[LiveSandbox]:
        return list(self._live.values())

    def _check_timeout(self, timeout: float | None) -> float:
        if timeout is None:
            return self.config.default_timeout
        try:
            seconds = check_seconds(timeout, minimum=1, maximum=self.config.max_timeout)
        except ValueError as exc:
            raise ApiError(400, f"{exc} (the most is set by sandcell serve --max-timeout)") from None
        assert seconds is not None  # only None (handled above) gives None
        return seconds

    def get(self, team: Team, sandbox_id: str) -> LiveSandbox:
        """The team's live sandbox, or 404 (also for another team's, which must not be told apart)."""
        live = self._running(sandbox_id)
        if live is None or live.record.team_id != team.id:
            record = self.store.sandbox(sandbox_id)
            if record is not None and record.team_id == team.id and record.reason:
                raise ApiError(404, f"sandbox {sandbox_id} is not running: {record.reason}")
            raise ApiError(404, f"sandbox {sandbox_id} not found")
        return live

    def data_plane(self, sandbox_id: str) -> LiveSandbox | None:
        """A live sandbox addressed by id alone (the caller checks its access token); ``None`` if none runs.

        Nothing tells an id that never existed from one that ended: the data
        plane answers both without an API key.
        """
        return self._running(sandbox_id)

    def records(self, team: Team, states: tuple[str, ...] = LIVE_STATES, metadata: dict[str, str] | None = None) -> list[SandboxRecord]:
        self._forget_ended()
        found = []
        for record in self.store.sandboxes(team.id, states):
            if metadata and any(record.metadata.get(key) != value for key, value in metadata.items()):
                continue
            live = self._live.get(record.id)
            found.append(live.record if live is not None else record)
        return found

    async def kill(self, live: LiveSandbox) -> None:
        await self._end(live, "killed", "it was killed through the API")

    async def fork(self, team: Team, live: LiveSandbox, timeout: float | None) -> LiveSandbox:
        """A new sandbox of the team with a copy of ``live``'s files and Python state (``Sandbox.fork``)."""
        if live.paused:
            raise ApiError(409, f"sandbox {live.id} is paused; resume it before forking")
        policy = live.core.policy
        timeout = self._check_timeout(timeout)
        self._admit(team, policy.limits)  # before the source packs its state (create checks again)
        loop = asyncio.get_running_loop()

        def start() -> LiveSandbox:  # on a copying thread, while the source packs its state
            create = self.create(team, live.record.template, timeout, live.record.metadata, policy.envs, live.record.allow_internet, policy.limits)
            return asyncio.run_coroutine_threadsafe(create, loop).result()

        def discard(child: LiveSandbox, reason: str) -> None:
            asyncio.run_coroutine_threadsafe(self._end(child, "ended", f"the fork failed: {reason}"), loop).result()

        try:
            return await asyncio.to_thread(copy_state, live.core, start, lambda child: child.core, discard)
        except SandboxException as exc:
            raise ApiError(status_for(exc), f"cannot fork sandbox {live.id}: {exc}") from None

    async def set_timeout(self, live: LiveSandbox, timeout: float) -> None:
        timeout = self._check_timeout(timeout)
        await live.sandbox.set_timeout(timeout)
        live.record.end_at = now() + datetime.timedelta(seconds=timeout)
        self.store.update_sandbox(live.id, end_at=live.record.end_at)

    async def pause(self, live: LiveSandbox) -> None:
        if live.paused:
            raise ApiError(409, f"sandbox {live.id} is already paused")
        await live.sandbox.pause()
        live.record.state = "paused"
        self.store.update_sandbox(live.id, state="paused")

    async def resume(self, live: LiveSandbox, timeout: float | None = None) -> None:
        """Thaw a paused sandbox; with a timeout, its clock restarts from now."""
        if live.paused:
            await live.sandbox.resume()
            live.record.state = "running"
            self.store.update_sandbox(live.id, state="running")
        if timeout is not None:
            await self.set_timeout(live, timeout)
        else:
            live.record.end_at = (await live.sandbox.get_info()).end_at
            self.store.update_sandbox(live.id, end_at=live.record.end_at)
