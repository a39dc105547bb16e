"""What the operator lets clients have: the largest sandbox one may ask for,
and what one team and the whole server may hold at once.

Defaults come from the machine; ``sandcell serve`` options override them.
Memory is counted as the sandboxes' memory limits (processes and in-memory
files), not their use: the server never hands out more limits than its
budget, whatever the sandboxes then do with them.
"""

from __future__ import annotations

import os
from dataclasses import fields

from sandcell.isolation import Limits

from .errors import ApiError

# The `sandcell serve` option that sets each maximum of one sandbox.
OPTIONS = {
    "memory_mb": "--max-memory-mb",
    "cpus": "--max-cpus",
    "pids": "--max-pids",
    "disk_mb": "--max-disk-mb",
    "open_files": "--max-open-files",
    "output_mb": "--max-output-mb",
}


def machine_memory_mb() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)


def machine_maxima() -> Limits:
    """The largest sandbox by default: half the machine's memory (its files included), all its CPUs."""
    half = max(machine_memory_mb() // 2, 64)
    return Limits(memory_mb=half, cpus=float(os.cpu_count() or 1), pids=4096, disk_mb=half, open_files=65536, output_mb=256)


def default_team_memory_mb() -> int:
    """One team's sandboxes together: the machine's memory (sandboxes rarely fill their limits)."""
    return machine_memory_mb()


def default_server_memory_mb() -> int:
    """All sandboxes together, pooled ones included: twice the machine's memory."""
    return 2 * machine_memory_mb()


def check_limits(limits: Limits, maxima: Limits) -> None:
    """Refuse (400) limits above the operator's maxima, naming the one exceeded."""
    for field in fields(Limits):
        asked, most = getattr(limits, field.name), getattr(maxima, field.name)
        if asked > most:
            raise ApiError(400, f"limits.{field.name} = {asked} is above this server's maximum of {most} (set by sandcell serve {OPTIONS[field.name]})")


def check_maxima(default: Limits, maxima: Limits) -> None:
    """The server's own default sandbox must fit its maxima (checked at start)."""
    try:
        check_limits(default, maxima)
    except ApiError as exc:
        raise ValueError(f"the default sandbox limits do not fit: {exc.message}") from None
