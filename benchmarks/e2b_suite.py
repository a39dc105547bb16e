"""E2B's own SDK test suite against a fresh ``sandcell serve`` on loopback.

    python benchmarks/e2b_suite.py PATH/TO/code-interpreter/python/tests [-k EXPR] [--report FILE]

E2B's suites (``e2b-dev/code-interpreter``'s ``python/tests``, ``e2b-dev/E2B``'s
``packages/python-sdk/tests``) describe E2B's behaviour; this runs one, as
E2B runs it (pytest-asyncio, two workers), with the official SDK pointed at
this tree's server, and prints how many cases pass in each file. The suite
is not shipped here: pass the path of a checkout. Its own tools (pinned SDK,
pytest-asyncio, pytest-xdist) go in a virtualenv of their own, so they
never change how sandcell's own tests run.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "server"))
from serving import start_server  # noqa: E402 - tests/server/serving.py

from sandcell.server.store import Store  # noqa: E402

TOOLS = ["e2b-code-interpreter==2.11.5", "e2b==2.63.0", "pytest==9.2.0", "pytest-asyncio==1.5.0", "pytest-xdist==3.8.0", "pytest-timeout==2.4.0"]
TOOLS_HOME = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sandcell" / "e2b-suite"
OUTCOME = re.compile(r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\s+(\S+?)::")


def tools_python() -> Path:
    python = TOOLS_HOME / "bin" / "python"
    stamp = TOOLS_HOME / "tools.txt"
    if not python.exists() or not stamp.exists() or stamp.read_text() != "\n".join(TOOLS):
        venv.create(TOOLS_HOME, with_pip=True, clear=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *TOOLS], check=True)
        stamp.write_text("\n".join(TOOLS))
    return python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tests", type=Path, help="the suite's tests directory")
    parser.add_argument("-k", default=None, help="pytest's -k expression")
    parser.add_argument("--report", type=Path, help="write pytest's whole output here")
    args = parser.parse_args()
    python = tools_python()
    with tempfile.TemporaryDirectory(prefix="sandcell-e2b-suite-") as scratch:
        server = start_server(Path(scratch) / "server.db", Path(scratch) / "server.log")
        try:
            key = Store(server.db).create_key("e2b-suite")[1]
            env = {**os.environ, "E2B_API_URL": server.url, "E2B_SANDBOX_URL": server.url, "E2B_API_KEY": key}
            command = [str(python), "-m", "pytest", str(args.tests.resolve()), "-rA", "-q", "-p", "no:cacheprovider", "--numprocesses=2"]
            command += ["-o", "addopts=--import-mode=importlib", "-o", "asyncio_mode=auto", "--timeout", "180"]
            command += ["-k", args.k] if args.k else []
            done = subprocess.run(command, cwd=args.tests.resolve().parent, env=env, capture_output=True, text=True, check=False)
        finally:
            server.stop()
    if args.report:
        args.report.write_text(done.stdout + done.stderr)
    by_file: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in done.stdout.splitlines():
        if match := OUTCOME.match(line):
            by_file[match[2]][match[1]] += 1
    for name, counts in sorted(by_file.items()):
        print(f"{counts['PASSED']:3d}/{sum(counts.values()):<3d} {name}" + ("" if counts["PASSED"] == sum(counts.values()) else f"  {dict(counts)}"))
    print(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-2000:])


if __name__ == "__main__":
    main()
