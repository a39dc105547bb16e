"""Resource limits of one sandbox."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

# RLIMIT_SIGPENDING of every sandbox, set before its user namespace is made (the
# namespace takes it as the bound for all it holds): pending signals and POSIX
# timers are charged up the chain of user namespaces, and must stay well below
# what the host's own users may queue (tens of thousands).
PENDING_SIGNALS = 1024
# Pseudo-terminals per sandbox (devpts ``max=``): the kernel has 3,072 for all
# non-initial devpts instances together, and one sandbox must not take them all.
PTYS = 128


@dataclass(frozen=True)
class Limits:
    """What one sandbox may use.

    ``memory_mb`` covers every process in the sandbox *and* the files in its
    writable areas (they live in memory-backed tmpfs). ``disk_mb`` caps each
    writable area (``/home/user`` and ``/tmp``) separately. ``output_mb``
    caps what one run or command may print before it is cut with a marker.
    """

    memory_mb: int = 1024
    cpus: float = 1.0
    pids: int = 256
    disk_mb: int = 1024
    open_files: int = 4096
    output_mb: int = 16

    def __post_init__(self) -> None:
        for name in ("memory_mb", "pids", "disk_mb", "open_files", "output_mb"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"Limits.{name} must be a positive integer, not {value!r}")
        if isinstance(self.cpus, bool) or not isinstance(self.cpus, (int, float)) or not math.isfinite(self.cpus) or self.cpus <= 0:
            raise ValueError(f"Limits.cpus must be a positive number, not {self.cpus!r}")
        if self.memory_mb < 64:
            raise ValueError("Limits.memory_mb below 64 cannot start an interpreter")
        if self.pids < 16:
            raise ValueError("Limits.pids below 16 cannot start the sandbox's own processes")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)
