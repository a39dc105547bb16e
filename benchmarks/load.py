"""Many sandboxes through one ``sandcell serve`` on loopback: floods beside well-behaved clients.

    python benchmarks/load.py [--sandboxes 200] [--flooders 40] [--runs 10000] [--pause 0] [--duration 3600] [--json PATH]

Each well-behaved client (the official E2B SDK, async) runs ``print(i)`` and
``i * 2`` in its own sandbox, ``--runs`` times, and checks every output and
result arrived; each flooder, in a sandbox of its own, repeats one flood
until they are done: huge output, a storm of 1 MB results, one-byte writes,
or a client that does not read its stream. Prints the well-behaved round
trips (p50, p99), what went missing (must be nothing) and the server's
memory: when the sandboxes were up, its peak, and at the end.
``tests/server/test_load.py`` runs a short form in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from e2b_code_interpreter import AsyncSandbox

sys.path.insert(0, str(Path(__file__).parent))
import server  # benchmarks/server.py

FLOOD_TIMEOUT = 120
OUTPUT_FLOOD = "import sys\nfor _ in range(64):\n    sys.stdout.write('o' * (1 << 20))"
RESULTS_FLOOD = "from IPython.display import HTML, display\nfor _ in range(100):\n    display(HTML('r' * 1_000_000))"
TRICKLE_FLOOD = "import sys\nfor _ in range(200_000):\n    sys.stdout.write('x'); sys.stdout.flush()"


@dataclass
class Report:
    sandboxes: int
    flooders: int
    runs: int = 0
    lost: list[str] = field(default_factory=list)
    round_trips_ms: list[float] = field(default_factory=list)
    floods: dict[str, int] = field(default_factory=dict)
    server_mib_started: float = 0.0
    server_mib_peak: float = 0.0
    server_mib_end: float = 0.0
    seconds: float = 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.round_trips_ms)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")

    def summary(self) -> dict[str, Any]:
        figures = {key: value for key, value in asdict(self).items() if key != "round_trips_ms"}
        figures.update(
            p50_ms=self.percentile(0.5), p99_ms=self.percentile(0.99), mean_ms=statistics.fmean(self.round_trips_ms) if self.round_trips_ms else None
        )
        return figures


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def flood_output(sandbox: AsyncSandbox, url: str, patience: float) -> None:
    await sandbox.run_code(OUTPUT_FLOOD, timeout=FLOOD_TIMEOUT, request_timeout=FLOOD_TIMEOUT)


async def flood_results(sandbox: AsyncSandbox, url: str, patience: float) -> None:
    await sandbox.run_code(RESULTS_FLOOD, timeout=FLOOD_TIMEOUT, request_timeout=FLOOD_TIMEOUT)


async def flood_trickle(sandbox: AsyncSandbox, url: str, patience: float) -> None:
    await sandbox.run_code(TRICKLE_FLOOD, timeout=FLOOD_TIMEOUT, request_timeout=FLOOD_TIMEOUT)


async def flood_unread(sandbox: AsyncSandbox, url: str, patience: float) -> None:
    """A storm of results to a client that reads nothing for longer than the server's patience, then everything."""
    headers = {"E2b-Sandbox-Id": sandbox.sandbox_id, "E2b-Sandbox-Port": "49999", "X-Access-Token": sandbox._envd_access_token or ""}
    async with (
        httpx.AsyncClient(timeout=FLOOD_TIMEOUT) as client,
        client.stream("POST", url + "/execute", json={"code": RESULTS_FLOOD}, headers=headers) as response,
    ):
        await asyncio.sleep(patience + 2)
        await response.aread()


FLOODS: dict[str, Callable[[AsyncSandbox, str, float], Awaitable[None]]] = {
    "output": flood_output,
    "results": flood_results,
    "trickle": flood_trickle,
    "unread": flood_unread,
}


async def well_behaved(sandbox: AsyncSandbox, runs: int, pause: float, deadline: float, report: Report) -> None:
    for i in range(runs):
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(pause)
        started = time.perf_counter()
        execution = await sandbox.run_code(f"print({i})\n{i} * 2", request_timeout=FLOOD_TIMEOUT)
        report.round_trips_ms.append((time.perf_counter() - started) * 1000)
        report.runs += 1
        if execution.logs.stdout != [f"{i}\n"] or execution.text != str(2 * i) or execution.error is not None:
            report.lost.append(f"{sandbox.sandbox_id} run {i}: stdout {execution.logs.stdout!r}, text {execution.text!r}, error {execution.error}")


async def flooding(kind: str, sandbox: AsyncSandbox, url: str, patience: float, report: Report, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await FLOODS[kind](sandbox, url, patience)
        report.floods[kind] = report.floods.get(kind, 0) + 1


async def sample_memory(pid: int, report: Report) -> None:
    while True:
        report.server_mib_peak = max(report.server_mib_peak, rss_mib(pid))
        await asyncio.sleep(0.2)


async def load(
    url: str, key: str, server_pid: int, sandboxes: int, flooders: int, runs: int, pause: float, duration: float, kinds: list[str], patience: float
) -> Report:
    """``sandboxes`` sandboxes on the server at ``url``, ``flooders`` of them flooding (``kinds`` in turn);
    the others run ``runs`` times each, ``pause`` seconds apart, for ``duration`` seconds at most."""
    report = Report(sandboxes, flooders)
    gate = asyncio.Semaphore(8)

    async def create() -> AsyncSandbox:
        async with gate:
            return await AsyncSandbox.create(timeout=int(duration) + 600, api_url=url, sandbox_url=url, api_key=key)

    opened = await asyncio.gather(*(create() for _ in range(sandboxes)))
    try:
        report.server_mib_started = report.server_mib_peak = rss_mib(server_pid)
        sampler = asyncio.ensure_future(sample_memory(server_pid, report))
        stop = asyncio.Event()
        floods = [asyncio.ensure_future(flooding(kinds[n % len(kinds)], sandbox, url, patience, report, stop)) for n, sandbox in enumerate(opened[:flooders])]
        started = time.monotonic()
        await asyncio.gather(*(well_behaved(sandbox, runs, pause, started + duration, report) for sandbox in opened[flooders:]))
        report.seconds = time.monotonic() - started
        # Each flood finishes the one it is in (on a busy machine a results flood outlasts the
        # well-behaved runs); one that does not within FLOOD_TIMEOUT is stuck, and counts no finish.
        stop.set()
        await asyncio.wait(floods, timeout=FLOOD_TIMEOUT)
        for task in (*floods, sampler):
            task.cancel()
        await asyncio.gather(*floods, sampler, return_exceptions=True)
        report.server_mib_end = rss_mib(server_pid)
    finally:
        await asyncio.gather(*(sandbox.kill() for sandbox in opened), return_exceptions=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sandboxes", type=int, default=200)
    parser.add_argument("--flooders", type=int, default=40, help="how many of the sandboxes flood")
    parser.add_argument("--runs", type=int, default=10_000, help="runs of each well-behaved client")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds a well-behaved client waits before each run")
    parser.add_argument("--duration", type=float, default=3600, help="seconds after which the well-behaved clients stop, runs done or not")
    parser.add_argument("--kinds", default=",".join(FLOODS), help=f"floods, taken in turn: {', '.join(FLOODS)}")
    parser.add_argument("--patience", type=float, default=None, help="the server's --client-patience (default: its own)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    if unknown := set(kinds) - set(FLOODS):
        parser.error(f"unknown floods: {', '.join(sorted(unknown))}")
    extra = ["--max-sandboxes", str(args.sandboxes + 10)]
    if args.patience is not None:
        extra += ["--client-patience", str(args.patience)]
    with server.running_server(pool=0, extra=extra) as (url, key, process):
        pid = process.pid
        report = asyncio.run(load(url, key, pid, args.sandboxes, args.flooders, args.runs, args.pause, args.duration, kinds, args.patience or 30.0))
    figures = report.summary()
    print(f"{report.runs} well-behaved runs in {report.seconds:.0f} s beside {report.flooders} flooders ({report.floods})")
    print(f"round trip p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms; lost: {len(report.lost)}")
    print(
        f"server memory: {report.server_mib_started:.0f} MiB with the sandboxes up, peak {report.server_mib_peak:.0f} MiB, end {report.server_mib_end:.0f} MiB"
    )
    for line in report.lost[:10]:
        print("  lost:", line)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    sys.exit(1 if report.lost else 0)


if __name__ == "__main__":
    main()
