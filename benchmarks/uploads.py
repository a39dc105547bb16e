"""Peak memory of ``sandcell serve`` while four 256 MiB uploads stream in at once (issue 10, finding 15).

Each upload goes to a sandbox of its own through the official E2B SDK:
``multipart`` is what it sends for bytes, ``octet`` for a file object.
The server's resident memory is sampled every 10 ms from ``/proc``.

    python benchmarks/uploads.py [--mode multipart|octet|mixed] [--count 4] [--mib 256]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import server  # benchmarks/server.py

MiB = 1024 * 1024


def resident(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("multipart", "octet", "mixed"), default="multipart")
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--mib", type=int, default=256)
    args = parser.parse_args()
    from e2b_code_interpreter import Sandbox

    data = (bytes(range(256)) * (args.mib * MiB // 256))[: args.mib * MiB]
    with server.running_server(pool=0) as (url, key, process):
        os.environ.update(E2B_API_URL=url, E2B_SANDBOX_URL=url, E2B_API_KEY=key)
        sandboxes = [Sandbox.create(timeout=600) for _ in range(args.count)]
        before = resident(process.pid)
        peak = before
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, resident(process.pid))
                time.sleep(0.01)

        def upload(index: int) -> None:
            octet = args.mode == "octet" or (args.mode == "mixed" and index % 2 == 0)
            sandboxes[index].files.write("/home/user/upload.bin", io.BytesIO(data) if octet else data, request_timeout=600)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(args.count) as pool:
            list(pool.map(upload, range(args.count)))
        seconds = time.monotonic() - started
        done.set()
        sampler.join()
        for sandbox in sandboxes:
            assert sandbox.files.get_info("/home/user/upload.bin").size == len(data)
            sandbox.kill()
        print(f"{args.count} concurrent {args.mode} uploads of {args.mib} MiB in {seconds:.1f} s: ", end="")
        print(f"server resident {before / MiB:.0f} MiB before, peak {peak / MiB:.0f} MiB (+{(peak - before) / MiB:.0f} MiB)")


if __name__ == "__main__":
    main()
