"""This tree against an earlier revision, measured in the same run.

    python benchmarks/compare.py [--base REV] [--rounds 6] [--creates 5]

A busy machine moves every figure by tens of percent from one minute to the
next, so two benchmark runs taken apart cannot show a regression of a few
percent. This checks the base revision out beside this tree and measures
both in alternation (base, this, base, this...), each in a fresh process,
for sandboxes forked from the fork server and for sandboxes with a
bubblewrap of their own: create -> first result of ``1+1``, and the median
``run_code('1+1')`` round trip. It prints medians and the ratio this / base
(below 1: this tree is faster).

Only the public API is used, so any revision with ``Sandbox.create`` and
``run_code`` can be the base. The runtime image is shared; each tree's
in-sandbox code is staged apart.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROUND_TRIPS = 200
# The switch that turns the fork server off, under each name it has had.
OWN_BUBBLEWRAP = {"SANDCELL_FORK_SERVER": "0", "SANDCELL_TEMPLATES": "0"}
MODES = {"fork server": {}, "own bubblewrap": OWN_BUBBLEWRAP}


def probe(creates: int) -> None:
    """In a child process, on the tree its PYTHONPATH names: one JSON line of samples in ms."""
    from sandcell import Sandbox

    Sandbox.create(pool=False).kill()  # starts the fork server, warms the page cache
    samples: dict[str, list[float]] = {"create -> first result": [], "round trip": []}
    for _ in range(creates):
        started = time.perf_counter()
        sandbox = Sandbox.create(pool=False)
        sandbox.run_code("1+1")
        samples["create -> first result"].append((time.perf_counter() - started) * 1000)
        trips = []
        for _ in range(ROUND_TRIPS):
            started = time.perf_counter()
            sandbox.run_code("1+1")
            trips.append((time.perf_counter() - started) * 1000)
        samples["round trip"].append(statistics.median(trips))
        sandbox.kill()
    print(json.dumps(samples))


def measure(tree: Path, env: dict[str, str], creates: int) -> dict[str, list[float]]:
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"), "PYTHONPATH": str(tree / "src"), **env}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--probe", str(creates)],
        env=clean,
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"measuring {tree} failed:\n{done.stderr[-2000:]}")
    samples: dict[str, list[float]] = json.loads(done.stdout.strip().splitlines()[-1])
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="HEAD~1", help="the revision to compare with (default: HEAD~1)")
    parser.add_argument("--rounds", type=int, default=6, help="alternations of base and this tree")
    parser.add_argument("--creates", type=int, default=5, help="sandboxes created per tree, mode and round")
    parser.add_argument("--probe", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe is not None:
        probe(args.probe)
        return
    revision = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.base], capture_output=True, text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="sandcell-base-") as scratch:
        base = Path(scratch) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(base), revision], check=True)
        try:
            trees = {f"base {revision}": base, "this tree": ROOT}
            samples: dict[tuple[str, str], dict[str, list[float]]] = {}
            for round_number in range(args.rounds):
                print(f"round {round_number + 1}/{args.rounds}", file=sys.stderr)
                for mode, env in MODES.items():
                    for name, tree in trees.items():
                        for figure, values in measure(tree, env, args.creates).items():
                            samples.setdefault((mode, figure), {}).setdefault(name, []).extend(values)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
    base_name, this_name = trees
    print(f"{'figure (median ms)':44} {base_name:>12} {this_name:>12} {'this/base':>10}")
    for (mode, figure), by_tree in samples.items():
        before, after = statistics.median(by_tree[base_name]), statistics.median(by_tree[this_name])
        print(f"{mode + ': ' + figure:44} {before:12.3f} {after:12.3f} {after / before:10.2f}")


if __name__ == "__main__":
    main()
