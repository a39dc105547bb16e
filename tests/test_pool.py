"""Pooled sandboxes: handed out once, and with a cold sandbox's envs, clock and metadata."""

from __future__ import annotations

import datetime
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pooling import POOL_FILL_WAIT, take_pooled

from sandcell import Limits, Sandbox, SandboxPool
from sandcell.isolation import DEFAULT_TEMPLATE

pytestmark = pytest.mark.timeout(240)

ENVS = {"PROJECT": "pooled", "QUOTED": "it's $HOME; `x`"}


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture
def pool() -> SandboxPool:
    with SandboxPool(size=3) as pool:
        yield pool


def test_concurrent_creates_hand_out_each_sandbox_once(pool: SandboxPool) -> None:
    assert wait_until(lambda: pool.ready() == 3, POOL_FILL_WAIT)
    barrier = threading.Barrier(6)
    sandboxes: list[Sandbox] = []
    lock = threading.Lock()

    def create() -> None:
        barrier.wait()
        sbx = Sandbox.create(pool=pool, timeout=60)
        with lock:
            sandboxes.append(sbx)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    try:
        assert len(sandboxes) == 6
        assert len({sbx.sandbox_id for sbx in sandboxes}) == 6
        assert len({sbx.backend.process.launcher_pid for sbx in sandboxes}) == 6, "two callers got one sandbox"
        assert 1 <= sum(bool(sbx.backend.policy.preload) for sbx in sandboxes) <= 3
        for index, sbx in enumerate(sandboxes):
            sbx.files.write("/home/user/owner", str(index))
        assert [sbx.files.read("/home/user/owner") for sbx in sandboxes] == [str(i) for i in range(6)]
    finally:
        for sbx in sandboxes:
            sbx.kill()


def test_a_used_sandbox_never_comes_back(pool: SandboxPool) -> None:
    used = take_pooled(pool, timeout=60)
    used.run_code("secret = 'left behind'")
    used.files.write("/home/user/trace", "used")
    used.kill()
    for _ in range(4):
        sbx = take_pooled(pool, timeout=60)
        try:
            assert sbx.sandbox_id != used.sandbox_id
            assert sbx.run_code("secret").error.name == "NameError"
            assert not sbx.files.exists("/home/user/trace")
        finally:
            sbx.kill()


def test_envs_clock_and_metadata_start_at_hand_out(pool: SandboxPool) -> None:
    assert pool.warm(timeout=POOL_FILL_WAIT)
    time.sleep(3)  # idle in the pool longer than its timeout
    before = datetime.datetime.now(datetime.UTC)
    sbx = take_pooled(pool, timeout=3, envs=ENVS, metadata={"user": "u1"})
    info = sbx.get_info()
    assert before <= info.started_at <= datetime.datetime.now(datetime.UTC)
    assert info.end_at is not None and abs((info.end_at - info.started_at).total_seconds() - 3) < 0.1
    assert info.envs == ENVS and info.metadata == {"user": "u1"}
    environ = f"import os; {{k: os.environ.get(k) for k in {list(ENVS)!r}}}"
    assert sbx.run_code(environ).text == repr(ENVS), "the default context"
    assert sbx.run_code(environ, context=sbx.create_code_context()).text == repr(ENVS), "a new context"
    assert sbx.run_code("process.env.PROJECT + '|' + process.env.QUOTED", language="javascript").text == "|".join(ENVS.values())
    assert sbx.run_code('printf "%s|%s" "$PROJECT" "$QUOTED"', language="bash").logs.stdout == ["|".join(ENVS.values())]
    assert sbx.commands.run('printf "%s|%s" "$PROJECT" "$QUOTED"').stdout == "|".join(ENVS.values())
    time.sleep(1)
    assert sbx.is_running(), "the timeout counted time spent idle in the pool"
    assert wait_until(lambda: not sbx.is_running(), 10)


def test_environment_is_that_of_a_cold_sandbox(make_sandbox: Callable[..., Sandbox], make_pooled_sandbox: Callable[..., Sandbox]) -> None:
    """Every language sees exactly the environment and cwd a cold sandbox's would."""
    probes = {
        "python": "import os, json; print(json.dumps([os.getcwd(), dict(os.environ)], sort_keys=True))",
        "javascript": "console.log(JSON.stringify([process.cwd(), Object.fromEntries(Object.entries(process.env).sort())]))",
        "bash": "pwd; env | sort; declare -p OLDPWD",
    }
    views = []
    for sbx in (make_sandbox(envs=ENVS), make_pooled_sandbox(envs=ENVS)):
        view = {}
        for language, code in probes.items():
            context = sbx.create_code_context(language=language, cwd="/home/user/work", envs={"CONTEXT_ONLY": "yes"})
            execution = sbx.run_code(code, context=context)
            assert execution.error is None, execution.error
            view[language] = "".join(execution.logs.stdout)
        view["default python"] = "".join(sbx.run_code(probes["python"]).logs.stdout)
        views.append(view)
    cold, pooled = views
    assert "CONTEXT_ONLY" in cold["bash"] and "/home/user/work" in cold["javascript"]
    assert pooled == cold


def test_pooled_zygote_preloads_pandas_and_cold_does_not(make_sandbox: Callable[..., Sandbox], make_pooled_sandbox: Callable[..., Sandbox]) -> None:
    preloaded = "import sys; [name in sys.modules for name in ('numpy', 'pandas', 'matplotlib.pyplot')]"
    pooled = make_pooled_sandbox()
    assert pooled.run_code(preloaded).text == "[True, True, True]"
    assert make_sandbox().run_code(preloaded).text == "[False, False, False]"
    zygote = pooled.run_code("import os; os.getppid()").text
    assert "Threads:\t1\n" in pooled.files.read(f"/proc/{zygote}/status"), "a zygote must hold no thread when it forks"
    plot = pooled.run_code("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()")
    assert plot.error is None and any(result.png for result in plot.results)
    assert pooled.run_code("import pandas as pd; int(pd.DataFrame({'a': [1, 2]})['a'].sum())").text == "3"


def test_spare_contexts_are_fresh_and_take_the_asked_cwd_and_envs(make_pooled_sandbox: Callable[..., Sandbox]) -> None:
    sbx = make_pooled_sandbox(envs=ENVS)
    sbx.files.write("/home/user/project/lib.js", "module.exports = 'local module';")
    time.sleep(1)  # the spares are started well before they are asked for
    first = sbx.create_code_context(language="javascript", cwd="/home/user/project", envs={"CTX": "1"})
    uptime = sbx.run_code("process.uptime()", context=first)
    assert float(uptime.text) > 0.5, "the context was not a spare"
    assert (
        sbx.run_code("[process.cwd(), process.env.CTX, process.env.PROJECT, require('./lib.js')]", context=first).text
        == "[ '/home/user/project', '1', 'pooled', 'local module' ]"
    )
    sbx.run_code("globalThis.leftover = 1; var declared = 2", context=first)
    second = sbx.create_code_context(language="javascript")
    assert (
        sbx.run_code("[typeof leftover, typeof declared, process.cwd(), process.env.CTX]", context=second).text
        == "[ 'undefined', 'undefined', '/home/user', undefined ]"
    )

    bash = sbx.create_code_context(language="bash", cwd="/tmp/work", envs={"CTX": "2"})
    assert sbx.run_code('echo "$PWD $CTX $PROJECT"; leftover=1', context=bash).logs.stdout == ["/tmp/work 2 pooled\n"]
    again = sbx.create_code_context(language="bash")
    assert sbx.run_code('echo "$PWD [$CTX] [$leftover]"', context=again).logs.stdout == ["/home/user [] []\n"]
    assert {c.language for c in sbx.list_code_contexts()} == {"python", "javascript", "bash"}
    assert len(sbx.list_code_contexts()) == 6, "spares are not listed (the two defaults and the four made here are)"


def test_pool_replaces_a_sandbox_that_died_idle(pool: SandboxPool) -> None:
    assert wait_until(lambda: pool.ready() == 3, POOL_FILL_WAIT)
    victim = pool._ready[(Limits(), False, DEFAULT_TEMPLATE)][0]
    victim.process.kill()  # as if the sandbox died on its own
    assert wait_until(lambda: victim not in pool._ready[(Limits(), False, DEFAULT_TEMPLATE)], 10)
    assert wait_until(lambda: pool.ready() == 3, POOL_FILL_WAIT), "the pool did not refill"
    sbx = take_pooled(pool, timeout=60)
    try:
        assert sbx.sandbox_id != victim.sandbox_id and sbx.run_code("1 + 1").text == "2"
    finally:
        sbx.kill()


def test_a_miss_warms_that_kind(pool: SandboxPool) -> None:
    small = Limits(memory_mb=512)
    cold = Sandbox.create(pool=pool, limits=small, timeout=60)
    try:
        assert not cold.backend.policy.preload
    finally:
        cold.kill()
    assert wait_until(lambda: pool.ready(small) >= 1, POOL_FILL_WAIT)
    with Sandbox.create(pool=pool, limits=small, timeout=60) as sbx:
        assert sbx.backend.policy.preload and sbx.get_info().limits["memory_mb"] == 512


def test_learnt_kinds_are_bounded_and_expire(pool: SandboxPool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every distinct limits asked for used to be kept warm for ever."""
    from sandcell.sandbox import pool as pool_module

    for n in range(pool.learn + 3):
        assert pool.take(Limits(memory_mb=300 + n), False, {}) is None
    assert len(pool._ready) == 1 + pool.learn, "more kinds kept warm than the pool may learn"
    assert (Limits(memory_mb=300), False, DEFAULT_TEMPLATE) not in pool._ready, "the least recently asked kind should have made room"
    monkeypatch.setattr(pool_module, "LEARNED_IDLE", 0.5)
    assert wait_until(lambda: pool.kinds() == [(Limits(), False, DEFAULT_TEMPLATE)], 10), "learnt kinds nobody asks for must expire"


def test_a_kind_that_cannot_start_backs_off_and_does_not_starve_the_others() -> None:
    """A failing kind used to be retried every 5 s on the refill thread, and the default kind never filled."""
    broken = Limits(open_files=5)  # the supervisor cannot even open its pipes
    with SandboxPool(size=2) as pool:
        pool.warm(broken, timeout=0)
        assert wait_until(lambda: pool.ready() == 2, POOL_FILL_WAIT), "the default kind starved behind the failing one"
        assert wait_until(lambda: pool._ready[(broken, False, DEFAULT_TEMPLATE)].failures >= 2, 30)
        retry_in = pool._ready[(broken, False, DEFAULT_TEMPLATE)].retry_at - time.monotonic()
        assert retry_in > 5, "the failing kind should wait longer after each failure"
        assert pool.ready(broken) == 0


def test_a_sandbox_failing_at_hand_out_is_not_replaced_by_the_next(pool: SandboxPool) -> None:
    """Bad envs at hand-out used to kill every pooled sandbox in turn (dozens, for 49 s) before a create answered."""
    assert wait_until(lambda: pool.ready() == 3, POOL_FILL_WAIT)
    first, *others = [core.sandbox_id for core in pool._ready[(Limits(), False, DEFAULT_TEMPLATE)]]
    started = time.monotonic()
    assert pool.take(Limits(), False, {"": "not a name"}) is None  # past the checks create() makes: the supervisor refuses it
    assert time.monotonic() - started < 10
    left = [core.sandbox_id for core in pool._ready[(Limits(), False, DEFAULT_TEMPLATE)]]
    assert first not in left and all(other in left for other in others), "only the one sandbox tried may be used up"


def test_default_pool_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from sandcell.sandbox import pool as pool_module

    monkeypatch.setattr(pool_module, "_default", None)
    monkeypatch.setenv("SANDCELL_POOL_SIZE", "0")
    assert pool_module.default_pool() is None
    monkeypatch.setenv("SANDCELL_POOL_SIZE", "many")
    with pytest.raises(ValueError, match="SANDCELL_POOL_SIZE"):
        pool_module.default_pool()
    monkeypatch.setenv("SANDCELL_POOL_SIZE", "1")
    default = pool_module.default_pool()
    try:
        assert default is not None and default.size == 1 and pool_module.default_pool() is default
        assert default.warm(timeout=POOL_FILL_WAIT)
        with Sandbox.create(timeout=60) as sbx:
            assert sbx.backend.policy.preload
        with Sandbox.create(timeout=60, pool=False) as sbx:
            assert not sbx.backend.policy.preload
    finally:
        default.close()


OWNER_SCRIPT = """
import json, os, sys, time
from sandcell import Sandbox, SandboxPool
pool = SandboxPool(size=2)
while pool.ready() < 2:
    time.sleep(0.1)
taken = Sandbox.create(pool=pool, timeout=120)
while pool.ready() < 2:
    time.sleep(0.1)
cores = [taken.backend, *pool._ready[next(iter(pool._ready))]]
described = [{"dirs": [str(d) for d in c.process.cgroup.dirs], "pids": sorted(c.process.cgroup.pids()), "launcher": c.process.launcher_pid} for c in cores]
print(json.dumps(described), flush=True)
if sys.argv[1] == "exit":
    os._exit(0)
time.sleep(120)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs cgroups (root)")
@pytest.mark.parametrize("death", ["exit", "sigkill"])
def test_pooled_sandboxes_die_with_their_owner(death: str) -> None:
    owner = subprocess.Popen([sys.executable, "-c", OWNER_SCRIPT, death], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert select.select([owner.stdout], [], [], POOL_FILL_WAIT)[0], "the owner did not fill its pool"
        line = owner.stdout.readline()
        assert line, owner.stderr.read()
        sandboxes = json.loads(line)
        assert len(sandboxes) == 3 and all(len(s["pids"]) >= 3 for s in sandboxes)
        if death == "sigkill":
            owner.kill()
        owner.wait(20)
        for sandbox in sandboxes:
            processes = [Path(f"/proc/{pid}") for pid in sandbox["pids"]]
            directories = [Path(d) for d in sandbox["dirs"]]
            launcher = Path(f"/proc/{sandbox['launcher']}")
            assert wait_until(lambda processes=processes: not any(path.exists() for path in processes), 10), sandbox
            assert wait_until(lambda directories=directories: not any(path.exists() for path in directories), 10), sandbox
            assert wait_until(lambda launcher=launcher: not launcher.exists(), 10)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
