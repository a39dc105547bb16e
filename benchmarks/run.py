"""sandcell against a Jupyter kernel, measured in the same run.

    python benchmarks/run.py [--quick] [--json PATH]

Prints p50 / p99 of each figure and the ratio baseline / sandcell (above 1:
sandcell is faster or smaller), and writes the same figures as JSON. The
server figures compare HTTP with the same call in-process (below 1: the
cost of HTTP).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from sandcell import AsyncSandbox, Sandbox, SandboxPool
from sandcell.isolation.process import SandboxProcess
from sandcell.sandbox.core import SandboxCore

sys.path.insert(0, str(Path(__file__).parent))
import server  # benchmarks/server.py

if TYPE_CHECKING:  # the Jupyter baseline's types; jupyter_client is imported only when it runs
    from jupyter_client.blocking.client import BlockingKernelClient
    from jupyter_client.manager import KernelManager


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def launched(sandbox: Sandbox | AsyncSandbox) -> SandboxProcess:
    """A local sandbox's host process (its cgroup's figures)."""
    core = sandbox.backend
    assert isinstance(core, SandboxCore)
    return core.process


def timed(function: Callable[[], object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def private_mib(pids: set[int], name: str | None = None) -> float:
    """Private dirty memory of these processes (only those called ``name``, if given), in MiB.

    Clean private pages are left out: they are file pages (a binary, its
    libraries) only this process maps at the moment, page cache that the
    kernel drops at will and that the next process of the same program shares.
    Counted, they made one idle pooled sandbox's Node 30 MiB "larger"
    whenever no other Node ran on the machine.
    """
    total = 0
    for pid in pids:
        try:
            if name is not None and Path(f"/proc/{pid}/comm").read_text().strip() != name:
                continue
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Private_Dirty:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


# -- sandcell --------------------------------------------------------------------
@contextlib.contextmanager
def fork_server(enabled: bool) -> Iterator[None]:
    """Sandboxes forked from a fork server (the default), or each started by a bubblewrap of its own."""
    previous = os.environ.get("SANDCELL_FORK_SERVER")
    os.environ["SANDCELL_FORK_SERVER"] = "1" if enabled else "0"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["SANDCELL_FORK_SERVER"]
        else:
            os.environ["SANDCELL_FORK_SERVER"] = previous


# The same small cell with types and without: what stripping types costs per cell.
TYPED_CELL = "interface P { x: number }\nconst p: P = { x: 1 };\nfunction twice<T extends number>(n: T): number { return n * 2 }\ntwice(p.x as number)"
UNTYPED_CELL = "const p = { x: 1 };\nfunction twice(n) { return n * 2 }\ntwice(p.x)"


def sandcell_create_to_first_result(repeat: int) -> list[float]:
    """Sandbox.create() to the first result of 1+1, without a pool (the kill is not timed)."""
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        sandbox = Sandbox.create(pool=False)
        assert sandbox.run_code("1+1").text == "2"
        samples.append((time.perf_counter() - started) * 1000)
        sandbox.kill()
    return samples


def sandcell_round_trips(repeat: int, code: str = "1+1", language: str = "python") -> list[float]:
    with Sandbox.create(pool=False) as sandbox:
        sandbox.run_code(code, language=language)
        return timed(lambda: sandbox.run_code(code, language=language), repeat)


CHART_CELL = "plt.figure(); plt.bar(['north', 'south', 'east'], [3, 5, 2]); plt.title('sales'); plt.show()"


def sandcell_chart_cell(repeat: int, extract: bool) -> list[float]:
    """A bar chart shown as PNG, with E2B's chart data extracted from it or (the baseline) without."""
    with Sandbox.create(pool=False) as sandbox:
        setup = "import matplotlib.pyplot as plt"
        if not extract:
            setup += "\nget_ipython().display_formatter.formatters.pop('e2b/chart')"
        sandbox.run_code(setup)
        first = sandbox.run_code(CHART_CELL)
        assert first.error is None and first.results and (first.results[0].chart is not None) == extract, first
        return timed(lambda: sandbox.run_code(CHART_CELL), repeat)


def sandcell_throughput(sandboxes: int, runs_each: int) -> float:
    """Trivial runs per second across many sandboxes at once (asyncio, one process)."""

    async def measure() -> float:
        opened = await asyncio.gather(*(AsyncSandbox.create(pool=False) for _ in range(sandboxes)))
        try:
            for sandbox in opened:
                await sandbox.run_code("1+1")

            async def runs(sandbox: AsyncSandbox) -> None:
                for _ in range(runs_each):
                    await sandbox.run_code("1+1")

            started = time.perf_counter()
            await asyncio.gather(*(runs(sandbox) for sandbox in opened))
            return sandboxes * runs_each / (time.perf_counter() - started)
        finally:
            await asyncio.gather(*(sandbox.kill() for sandbox in opened))

    return asyncio.run(measure())


def sandcell_density(count: int) -> tuple[int, float, float]:
    """Start ``count`` sandboxes and hold them idle: how many answer, cgroup MiB each, seconds to start them all."""

    async def measure() -> tuple[int, float, float]:
        gate = asyncio.Semaphore(4)
        held: list[AsyncSandbox] = []

        async def start() -> None:
            async with gate:
                held.append(await AsyncSandbox.create(pool=False, timeout=900))

        started = time.perf_counter()
        try:
            await asyncio.gather(*(start() for _ in range(count)))
            elapsed = time.perf_counter() - started
            answering = sum([(await sandbox.run_code("1+1")).text == "2" for sandbox in held])
            charged = sum(launched(sandbox).memory_bytes() or 0 for sandbox in held) / 2**20
            return answering, charged / count, elapsed
        finally:
            await asyncio.gather(*(sandbox.kill() for sandbox in held))

    return asyncio.run(measure())


def sandcell_fork(megabytes: int, repeat: int, pool: SandboxPool | None = None) -> list[float]:
    """``Sandbox.fork()`` of a sandbox holding a DataFrame of ``megabytes`` MB (the fork's kill not timed);
    with a pool, the source and each fork come from it (its refill is waited for, untimed)."""
    with Sandbox.create(pool=pool or False) as source:
        source.run_code(f"import numpy as np, pandas as pd\nframe = pd.DataFrame(np.random.rand({megabytes * 1_000_000 // 8 // 4}, 4))")
        samples = []
        for _ in range(repeat):
            if pool is not None:
                pool.warm(timeout=120)
                time.sleep(0.5)
            started = time.perf_counter()
            child = source.fork()
            samples.append((time.perf_counter() - started) * 1000)
            assert child.run_code("frame.shape[1]").text == "4"
            assert pool is None or child.backend.policy.preload, "the fork did not come from the pool"
            child.kill()
        return samples


def sandcell_language_start(language: str, code: str, repeat: int, pool: SandboxPool | None = None) -> list[float]:
    """Context create -> first result; in a pooled sandbox each one is its spare
    (the spare's background refill is waited for, untimed)."""
    if pool is not None:
        pool.warm(timeout=120)
    with Sandbox.create(pool=pool or False) as sandbox:

        def first_result() -> None:
            context = sandbox.create_code_context(language=language)
            sandbox.run_code(code, context=context)
            sandbox.remove_code_context(context)

        samples = []
        for _ in range(repeat):
            time.sleep(1.0 if pool else 0.0)
            samples += timed(first_result, 1)
        return samples


def command_to_first_result(command: str, expected: str, repeat: int) -> list[float]:
    """A command (an interpreter's own CLI) started in a sandbox, to its output."""
    with Sandbox.create(pool=False) as sandbox:

        def once() -> None:
            assert expected in sandbox.commands.run(command, timeout=120).stdout

        return timed(once, repeat)


def pooled_create_to_first_result(pool: SandboxPool, code: str, expected: str, repeat: int) -> list[float]:
    """create -> first result, each from a full pool (the refill is waited for, untimed; the kill is not timed)."""
    samples = []
    for _ in range(repeat):
        while pool.ready() < pool.size:
            time.sleep(0.05)
        started = time.perf_counter()
        sandbox = Sandbox.create(pool=pool)
        text = sandbox.run_code(code).text
        samples.append((time.perf_counter() - started) * 1000)
        assert text == expected and sandbox.backend.policy.preload, "not from the pool"
        sandbox.kill()
    return samples


def cold_create_to_first_result(code: str, repeat: int) -> list[float]:
    def once() -> None:
        with Sandbox.create(pool=False) as sandbox:
            sandbox.run_code(code)

    return timed(once, repeat)


def pooled_idle_memory(size: int) -> dict[str, float]:
    """Median private MiB of an idle sandbox waiting in a pool, and of its parts."""
    with SandboxPool(size=size) as pool:
        while pool.ready() < size:
            time.sleep(0.1)
        time.sleep(2)  # the spares start after the sandbox is ready
        cores = list(pool._ready[next(iter(pool._ready))])
        groups = [core.process.cgroup for core in cores if core.process.cgroup]
        # Forked from a fork server, the sandbox's init is its Python zygote.
        parts = {"all": None, "zygote": "sandcell-init", "super": "sandcell-super", "node": "node"}
        figures = {part: statistics.median(private_mib(group.pids(), name) for group in groups) if groups else float("nan") for part, name in parts.items()}
        figures["cgroup"] = statistics.median((core.memory_bytes() or 0) / 2**20 for core in cores)
        return figures


def sandcell_idle_memory(count: int) -> tuple[float, float]:
    """Private MiB per idle sandbox, and the cgroup's view (processes + files)."""
    sandboxes = [Sandbox.create(pool=False) for _ in range(count)]
    try:
        for sandbox in sandboxes:
            sandbox.run_code("1+1")
        time.sleep(0.5)
        groups = [launched(sandbox).cgroup for sandbox in sandboxes]
        private = [private_mib(group.pids()) for group in groups if group]
        charged = [(sandbox.memory_usage() or 0) / 2**20 for sandbox in sandboxes]
        return statistics.median(private) if private else float("nan"), statistics.median(charged)
    finally:
        for sandbox in sandboxes:
            sandbox.kill()


# -- Jupyter baseline ----------------------------------------------------------------
def jupyter_execute(client: BlockingKernelClient, code: str) -> None:
    client.execute(code)
    while True:
        message = client.get_iopub_msg(timeout=30)
        if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
            return


def jupyter_start() -> tuple[KernelManager, BlockingKernelClient]:
    from jupyter_client.manager import KernelManager

    manager = KernelManager(kernel_name="python3", transport="ipc")
    manager.start_kernel()
    client = manager.client()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    return manager, client


def jupyter_stop(manager: KernelManager, client: BlockingKernelClient) -> None:
    client.stop_channels()
    manager.shutdown_kernel(now=True)


def jupyter_create_to_first_result() -> None:
    manager, client = jupyter_start()
    jupyter_execute(client, "1+1")
    jupyter_stop(manager, client)


def jupyter_round_trips(repeat: int) -> tuple[list[float], float]:
    manager, client = jupyter_start()
    try:
        jupyter_execute(client, "1+1")
        samples = timed(lambda: jupyter_execute(client, "1+1"), repeat)
        time.sleep(0.5)
        memory = private_mib({manager.provisioner.process.pid})  # type: ignore[union-attr]  # jupyter_client declares it None until a launch
        return samples, memory
    finally:
        jupyter_stop(manager, client)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="few repetitions: checks the suite works")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "latest.json")
    args = parser.parse_args()
    starts, trips, idle = (3, 50, 3) if args.quick else (20, 1000, 20)

    rows: list[dict[str, object]] = []

    def add(name: str, ours: list[float], base: list[float] | None, unit: str = "ms") -> None:
        row: dict[str, object] = {"figure": name, "unit": unit, "p50": percentile(ours, 0.5), "p99": percentile(ours, 0.99), "n": len(ours)}
        if base:
            row.update(
                {"baseline_p50": percentile(base, 0.5), "baseline_p99": percentile(base, 0.99), "ratio_p50": percentile(base, 0.5) / percentile(ours, 0.5)}
            )
        rows.append(row)

    sandcell_create_to_first_result(1)  # warm the page cache (and start the fork server)
    jupyter_starts = timed(jupyter_create_to_first_result, max(2, starts // 4))
    add("create -> first result of 1+1 (fork server)", sandcell_create_to_first_result(starts), jupyter_starts)
    with fork_server(False):
        add("  own bubblewrap, no fork server", sandcell_create_to_first_result(max(2, starts // 2)), jupyter_starts)
    with SandboxPool(size=2) as pool:
        add("  from the pool (kill not timed)", pooled_create_to_first_result(pool, "1+1", "2", starts), jupyter_starts)
        pandas = "import pandas; 1+1"
        add(
            "  import pandas first, pool vs cold sandbox",
            pooled_create_to_first_result(pool, pandas, "2", starts),
            cold_create_to_first_result(pandas, max(2, starts // 4)),
        )
        for language, code in (("javascript", "1+1"), ("bash", "echo 2")):
            cold = sandcell_language_start(language, code, max(3, starts // 2))
            add(f"{language} context create -> first result", cold, None)
            add("  spare (pooled sandbox) vs cold", sandcell_language_start(language, code, max(3, starts // 2), pool), cold)
            if language == "javascript":
                typed = sandcell_language_start("typescript", TYPED_CELL, max(3, starts // 2))
                add("typescript context create -> first result (vs js)", typed, cold)
                add("  from the javascript spare (pooled) vs cold", sandcell_language_start("typescript", TYPED_CELL, max(3, starts // 2), pool), typed)
    jupyter_trips, jupyter_memory = jupyter_round_trips(trips)
    add("run_code('1+1') round trip", sandcell_round_trips(trips), jupyter_trips)
    javascript_trips = sandcell_round_trips(trips // 5, UNTYPED_CELL, "javascript")
    add("typescript run_code round trip (typed cell vs js)", sandcell_round_trips(trips // 5, TYPED_CELL, "typescript"), javascript_trips)
    charts = 5 if args.quick else 30
    add("chart cell: PNG and e2b/chart data (vs PNG only)", sandcell_chart_cell(charts, extract=True), sandcell_chart_cell(charts, extract=False))
    spread = (10, 20) if args.quick else (50, 40)
    add(f"run_code('1+1') throughput across {spread[0]} sandboxes", [sandcell_throughput(*spread)], None, "/s")
    add("python context create -> first result (zygote fork)", sandcell_language_start("python", "1+1", max(3, starts // 2)), None)
    # Baselines: the interpreter's own command line, started in a sandbox, to the same first result.
    few = max(3, starts // 4)
    rscript = "Rscript -e '1 + 1'"
    add("r context create -> first result (vs Rscript)", sandcell_language_start("r", "1 + 1", few), command_to_first_result(rscript, "[1] 2", few))
    jshell = "printf '1 + 1\\n/exit\\n' | jshell -q"
    add("java context create -> first result (vs jshell)", sandcell_language_start("java", "1 + 1", few), command_to_first_result(jshell, "==> 2", few))
    for name, over_http, in_process in server.figures(timed, starts, max(20, trips // 5)):
        add(name, over_http, in_process)
    megabytes = 10 if args.quick else 100
    add(f"sbx.fork() with a {megabytes} MB DataFrame (pickled, copied)", sandcell_fork(megabytes, 2 if args.quick else 5), None)
    with SandboxPool(size=1) as pool:
        add("  the source and its fork from a pool", sandcell_fork(megabytes, 2 if args.quick else 5, pool), None)
    answering, each, elapsed = sandcell_density(10 if args.quick else 200)
    add(f"idle sandboxes held at once (all answering: {answering})", [answering], None, "")
    add(f"  cgroup memory each, of {answering} held (started in {elapsed:.0f} s)", [each], None, "MiB")
    private, charged = sandcell_idle_memory(idle)
    add("idle sandbox private memory (fork server)", [private], [jupyter_memory], "MiB")
    add("idle sandbox cgroup memory (processes + files)", [charged], None, "MiB")
    with fork_server(False):
        own_private, own_charged = sandcell_idle_memory(idle)
    add("  own bubblewrap: private memory", [own_private], [jupyter_memory], "MiB")
    add("  own bubblewrap: cgroup memory", [own_charged], None, "MiB")
    pooled = pooled_idle_memory(idle // 4 or 1)
    add("idle pooled sandbox private memory", [pooled["all"]], [private], "MiB")
    add("  of which init and zygote (preloaded)", [pooled["zygote"]], None, "MiB")
    add("  of which the supervisor", [pooled["super"]], None, "MiB")
    add("  of which the spare node context", [pooled["node"]], None, "MiB")
    add("idle pooled sandbox cgroup memory", [pooled["cgroup"]], [charged], "MiB")

    print(f"{'figure':48} {'p50':>9} {'p99':>9} {'baseline p50':>13} {'ratio':>7}")
    for row in rows:
        baseline = f"{row['baseline_p50']:.2f}" if "baseline_p50" in row else "-"
        ratio = f"{row['ratio_p50']:.1f}x" if "ratio_p50" in row else "-"
        print(f"{row['figure']:48} {row['p50']:>7.2f}{row['unit']:>2} {row['p99']:>7.2f}{row['unit']:>2} {baseline:>13} {ratio:>7}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"quick": args.quick, "cpus": os.cpu_count(), "python": sys.version.split()[0], "rows": rows}, indent=2))
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
