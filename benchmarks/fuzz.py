"""The long fuzz run: ``tests/server/test_fuzz.py`` and ``test_data_plane_fuzz.py`` with many more examples.

    python benchmarks/fuzz.py --examples 200

Every operation of the server's ``/openapi.json`` gets that many cases that
fit its schema and as many that do not, and E2B's data plane (envd, the
code interpreter) 25 times that many random requests, against a real
``sandcell serve`` on loopback; it fails on the first 5xx, hang or non-JSON
error, with what reproduces it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100, help="cases per operation and mode (the test suite runs 6)")
    examples = parser.parse_args().examples
    started = time.monotonic()
    env = {**os.environ, "SANDCELL_FUZZ_EXAMPLES": str(examples)}
    code = subprocess.call(
        [sys.executable, "-m", "pytest", "tests/server/test_fuzz.py", "tests/server/test_data_plane_fuzz.py", "-x", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=env,
    )
    verdict = "no 5xx, no hang, every error JSON" if code == 0 else "FAILED (see above)"
    print(f"fuzz: {examples} examples per operation and mode in {time.monotonic() - started:.0f} s: {verdict}")
    return code


if __name__ == "__main__":
    sys.exit(main())
