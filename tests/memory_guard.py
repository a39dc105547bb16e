"""Watching a process's memory while a call runs, and stopping the call if it balloons.

A regression test of an unbounded read must not take the machine down with
it when it fails: ``bounded_call`` ends the call (``stop``, say killing the
sandbox it reads from) once the watched process grew past the bound.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MiB = 1024 * 1024


def resident(pid: int | str = "self") -> int:
    """Bytes of ``pid``'s resident memory now."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise LookupError(f"no VmRSS for {pid}")


def peak_resident(pid: int | str = "self") -> int:
    """Bytes of ``pid``'s resident memory at its highest so far (VmHWM)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise LookupError(f"no VmHWM for {pid}")


@dataclass
class Outcome:
    value: Any = None
    error: BaseException | None = None
    growth: int = 0  # bytes the watched process grew by at most while the call ran
    stopped: str | None = None  # why the call was stopped, if it was


def bounded_call(call: Callable[[], Any], stop: Callable[[], Any], limit: int = 256 * MiB, timeout: float = 60.0, pid: int | str = "self") -> Outcome:
    """``call()`` on a thread, ``pid``'s memory sampled meanwhile; past ``limit`` bytes of growth
    or ``timeout`` seconds, ``stop()`` is called (it must end the call) and the outcome says so."""
    outcome = Outcome()
    base = resident(pid)

    def run() -> None:
        try:
            outcome.value = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.error = exc

    thread = threading.Thread(target=run, name="bounded-call", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while thread.is_alive():
        outcome.growth = max(outcome.growth, resident(pid) - base)
        if outcome.growth > limit or time.monotonic() > deadline:
            outcome.stopped = f"grew by {outcome.growth // MiB} MiB" if outcome.growth > limit else f"ran over {timeout:g} s"
            stop()
            thread.join(30)
            break
        thread.join(0.02)
    return outcome


def held_open(name: str) -> list[int]:
    """Pids of the host's processes with a file whose path contains ``name`` open (needs root)."""
    holders = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        if any(name in link for link in links):
            holders.append(int(pid))
    return holders
