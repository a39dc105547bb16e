"""sandcell against a Jupyter kernel, measured in the same run.

    python benchmarks/run.py [--quick] [--json PATH]

Prints p50 / p99 of each figure and the ratio baseline / sandcell (above 1:
sandcell is faster or smaller), and writes the same figures as JSON. The
server figures compare HTTP with the same call in-process (below 1: the
cost of HTTP).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

from sandcell import Sandbox

sys.path.insert(0, str(Path(__file__).parent))
import server  # noqa: E402 - benchmarks/server.py


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def timed(function: Callable[[], object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def private_mib(pids: set[int]) -> float:
    """Private (unshared) memory of these processes, in MiB."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


# -- sandcell --------------------------------------------------------------------
def sandcell_create_to_first_result() -> None:
    with Sandbox.create() as sandbox:
        assert sandbox.run_code("1+1").text == "2"


def sandcell_round_trips(repeat: int) -> list[float]:
    with Sandbox.create() as sandbox:
        sandbox.run_code("1+1")
        return timed(lambda: sandbox.run_code("1+1"), repeat)


def sandcell_language_start(language: str, code: str, repeat: int) -> list[float]:
    with Sandbox.create() as sandbox:
        def first_result() -> None:
            context = sandbox.create_code_context(language=language)
            sandbox.run_code(code, context=context)
            sandbox.remove_code_context(context)

        return timed(first_result, repeat)


def sandcell_idle_memory(count: int) -> tuple[float, float]:
    """Private MiB per idle sandbox, and the cgroup's view (processes + files)."""
    sandboxes = [Sandbox.create() for _ in range(count)]
    try:
        for sandbox in sandboxes:
            sandbox.run_code("1+1")
        time.sleep(0.5)
        private = [private_mib(sandbox._core.process.cgroup.pids()) for sandbox in sandboxes if sandbox._core.process.cgroup]
        charged = [(sandbox.memory_usage() or 0) / 2**20 for sandbox in sandboxes]
        return statistics.median(private) if private else float("nan"), statistics.median(charged)
    finally:
        for sandbox in sandboxes:
            sandbox.kill()


# -- Jupyter baseline ----------------------------------------------------------------
def jupyter_execute(client, code: str) -> None:  # type: ignore[no-untyped-def]
    client.execute(code)
    while True:
        message = client.get_iopub_msg(timeout=30)
        if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
            return


def jupyter_start() -> tuple[object, object]:
    from jupyter_client import KernelManager

    manager = KernelManager(kernel_name="python3", transport="ipc")
    manager.start_kernel()
    client = manager.client()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    return manager, client


def jupyter_stop(manager, client) -> None:  # type: ignore[no-untyped-def]
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
        memory = private_mib({manager.provisioner.process.pid})  # type: ignore[union-attr]
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
            row.update({"baseline_p50": percentile(base, 0.5), "baseline_p99": percentile(base, 0.99), "ratio_p50": percentile(base, 0.5) / percentile(ours, 0.5)})
        rows.append(row)

    sandcell_create_to_first_result()  # warm the page cache for both sides
    add("create -> first result of 1+1", timed(sandcell_create_to_first_result, starts), timed(jupyter_create_to_first_result, max(2, starts // 4)))
    jupyter_trips, jupyter_memory = jupyter_round_trips(trips)
    add("run_code('1+1') round trip", sandcell_round_trips(trips), jupyter_trips)
    add("python context create -> first result (zygote fork)", sandcell_language_start("python", "1+1", max(3, starts // 2)), None)
    add("javascript context create -> first result", sandcell_language_start("javascript", "1+1", max(3, starts // 2)), None)
    add("bash context create -> first result", sandcell_language_start("bash", "echo 2", max(3, starts // 2)), None)
    for name, over_http, in_process in server.figures(timed, starts, max(20, trips // 5)):
        add(name, over_http, in_process)
    private, charged = sandcell_idle_memory(idle)
    add("idle sandbox private memory", [private], [jupyter_memory], "MiB")
    add("idle sandbox cgroup memory (processes + files)", [charged], None, "MiB")

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
