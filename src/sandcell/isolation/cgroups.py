"""Per-sandbox control groups, on cgroup v2 or v1.

Most machines run cgroup v2 (one hierarchy at /sys/fs/cgroup); some, like
this project's CI, mount v1 controllers separately. A sandbox gets one group
per hierarchy, named ``sandcell/<sandbox id>``. The group is created by the
host (as root) and joined by the launcher before it drops privileges, so
nothing in the sandbox ever starts outside it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .limits import Limits

ROOT = Path("/sys/fs/cgroup")
PARENT = "sandcell"
CPU_PERIOD_US = 100_000


def _write(path: Path, value: str) -> bool:
    try:
        path.write_text(value)
        return True
    except OSError:
        return False


def _read_int(path: Path, key: str | None = None) -> int | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    if key is None:
        text = text.strip()
        return int(text) if text.isdigit() else None
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return None


def _poll(done: Callable[[], bool], polls: int = 500, interval: float = 0.002) -> bool:
    """Wait up to ``polls * interval`` seconds for ``done()``."""
    for _ in range(polls):
        if done():
            return True
        time.sleep(interval)
    return done()


def _is_v2_root(path: Path) -> bool:
    return (path / "cgroup.controllers").exists()


@dataclass
class Cgroup:
    """The groups of one sandbox: at most one per hierarchy."""

    name: str
    v2: Path | None = None
    v1: dict[str, Path] = field(default_factory=dict)

    @property
    def dirs(self) -> list[Path]:
        return ([self.v2] if self.v2 else []) + list(self.v1.values())

    @property
    def procs_files(self) -> list[str]:
        return [str(path / "cgroup.procs") for path in self.dirs]

    @property
    def limits_memory(self) -> bool:
        return "memory" in self.v1 or (self.v2 is not None and (self.v2 / "memory.max").exists())

    def pids(self) -> set[int]:
        found: set[int] = set()
        for path in self.dirs:
            try:
                found.update(int(line) for line in (path / "cgroup.procs").read_text().split())
            except OSError:
                pass
        return found

    def oom_kills(self) -> int:
        """How many processes the kernel killed for breaking the memory limit."""
        if "memory" in self.v1:
            return _read_int(self.v1["memory"] / "memory.oom_control", "oom_kill") or 0
        if self.v2 is not None:
            return _read_int(self.v2 / "memory.events", "oom_kill") or 0
        return 0

    def memory_bytes(self) -> int | None:
        if "memory" in self.v1:
            return _read_int(self.v1["memory"] / "memory.usage_in_bytes")
        if self.v2 is not None:
            return _read_int(self.v2 / "memory.current")
        return None

    def cpu_seconds(self) -> float | None:
        """CPU time the sandbox's processes used since the group was made."""
        if self.v2 is not None and (usec := _read_int(self.v2 / "cpu.stat", "usage_usec")) is not None:
            return usec / 1e6
        if "cpu" in self.v1 and (nsec := _read_int(self.v1["cpu"] / "cpuacct.usage")) is not None:
            return nsec / 1e9  # a combined cpu,cpuacct hierarchy
        return None

    def memory_cache_bytes(self) -> int | None:
        """The page cache part of ``memory_bytes`` (files in the sandbox's tmpfs count here)."""
        if "memory" in self.v1:
            return _read_int(self.v1["memory"] / "memory.stat", "cache")
        if self.v2 is not None:
            return _read_int(self.v2 / "memory.stat", "file")
        return None

    def freeze(self, frozen: bool) -> bool:
        """Stop (or restart) every process of the group; ``False`` if this host cannot.

        Returns once the kernel reports the group frozen, so nothing runs after
        this returns. cgroup v2's ``cgroup.freeze`` is preferred over v1's
        freezer: a v2 freeze still lets SIGKILL through, so killing a paused
        sandbox needs no thaw first.
        """
        v2 = self.v2
        if v2 is not None and (v2 / "cgroup.freeze").exists():
            return _write(v2 / "cgroup.freeze", str(int(frozen))) and _poll(lambda: _read_int(v2 / "cgroup.events", "frozen") == int(frozen))
        if "freezer" in self.v1:
            state, wanted = self.v1["freezer"] / "freezer.state", "FROZEN" if frozen else "THAWED"
            return _write(state, wanted) and _poll(lambda: state.read_text().strip() == wanted)
        return False

    def frozen(self) -> bool:
        """Whether the group is frozen now (a paused sandbox)."""
        if self.v2 is not None and (self.v2 / "cgroup.freeze").exists():
            return _read_int(self.v2 / "cgroup.events", "frozen") == 1
        if "freezer" in self.v1:
            return (self.v1["freezer"] / "freezer.state").read_text().strip() == "FROZEN"
        return False

    def kill(self) -> None:
        """SIGKILL every process in the group, including ones forking right now."""
        if self.v2 is not None and _write(self.v2 / "cgroup.kill", "1"):
            pass
        frozen = "freezer" in self.v1 and _write(self.v1["freezer"] / "freezer.state", "FROZEN")
        for _ in range(100):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if frozen:
                _write(self.v1["freezer"] / "freezer.state", "THAWED")  # SIGKILL lands on thaw
                frozen = False
            time.sleep(0.005)

    def remove(self) -> None:
        for path in self.dirs:
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)  # the last exiting process is still being torn down

    def exists(self) -> bool:
        return any(path.exists() for path in self.dirs)


class CgroupManager:
    """Finds the hierarchies this machine has and creates sandboxes' groups."""

    def __init__(self, root: Path = ROOT) -> None:
        self.root = root
        self.v2_root: Path | None = None
        self.v1_roots: dict[str, Path] = {}
        if os.geteuid() != 0:
            return  # unprivileged hosts run without cgroup limits (see README)
        if _is_v2_root(root):
            self.v2_root = root
        else:
            for controller in ("memory", "pids", "cpu", "freezer"):
                path = root / controller
                if path.is_dir() and (path / "cgroup.procs").exists():
                    self.v1_roots[controller] = path
            unified = root / "unified"
            if _is_v2_root(unified):
                self.v2_root = unified  # no controllers here, but cgroup.kill

    @property
    def available(self) -> bool:
        return bool(self.v2_root or self.v1_roots)

    def existing(self, name: str) -> Cgroup | None:
        """The groups a sandbox started by an earlier host process still has."""
        group = Cgroup(name, v1={controller: root / PARENT / name for controller, root in self.v1_roots.items() if (root / PARENT / name).is_dir()})
        if self.v2_root is not None and (self.v2_root / PARENT / name).is_dir():
            group.v2 = self.v2_root / PARENT / name
        return group if group.dirs else None

    def create(self, name: str, limits: Limits) -> Cgroup:
        group = Cgroup(name)
        if self.v2_root is not None:
            parent = self.v2_root / PARENT
            parent.mkdir(exist_ok=True)
            controllers = (self.v2_root / "cgroup.controllers").read_text().split()
            wanted = [c for c in ("memory", "pids", "cpu") if c in controllers and c not in self.v1_roots]
            if wanted:
                _write(self.v2_root / "cgroup.subtree_control", " ".join("+" + c for c in wanted))
                _write(parent / "cgroup.subtree_control", " ".join("+" + c for c in wanted))
            group.v2 = parent / name
            group.v2.mkdir()
            memory = str(limits.memory_mb * 1024 * 1024)
            _write(group.v2 / "memory.max", memory)
            _write(group.v2 / "memory.swap.max", "0")
            _write(group.v2 / "memory.oom.group", "0")
            _write(group.v2 / "pids.max", str(limits.pids))
            _write(group.v2 / "cpu.max", f"{int(limits.cpus * CPU_PERIOD_US)} {CPU_PERIOD_US}")
        for controller, root in self.v1_roots.items():
            path = root / PARENT / name
            path.mkdir(parents=True)
            group.v1[controller] = path
        if "memory" in group.v1:
            memory = str(limits.memory_mb * 1024 * 1024)
            _write(group.v1["memory"] / "memory.limit_in_bytes", memory)
            _write(group.v1["memory"] / "memory.memsw.limit_in_bytes", memory)
        if "pids" in group.v1:
            _write(group.v1["pids"] / "pids.max", str(limits.pids))
        if "cpu" in group.v1:
            _write(group.v1["cpu"] / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(group.v1["cpu"] / "cpu.cfs_quota_us", str(int(limits.cpus * CPU_PERIOD_US)))
        return group

    def sweep(self, min_age: float = 60.0) -> None:
        """Remove groups left by hosts that died before cleaning up.

        Only empty groups older than ``min_age`` go: a fresh empty one may
        belong to a sandbox whose launcher has not joined it yet.
        """
        parents = [root / PARENT for root in self.v1_roots.values()]
        if self.v2_root:
            parents.append(self.v2_root / PARENT)
        for parent in parents:
            if not parent.is_dir():
                continue
            for path in parent.iterdir():
                if path.is_dir() and time.time() - path.stat().st_mtime > min_age and not (path / "cgroup.procs").read_text().strip():
                    try:
                        path.rmdir()
                    except OSError:
                        pass
