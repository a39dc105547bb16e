"""A running sandbox as the host sees it (``SandboxProcess``)."""

from __future__ import annotations

import os
import select
import signal
import threading
from pathlib import Path
from typing import BinaryIO

from .cgroups import Cgroup


class SandboxProcess:
    """One running sandbox as the host sees it: protocol pipes, cgroup, and the launcher that owns its lifetime.

    The launcher is a child of our launcher server when we launched it, or
    any process when we attached to a detachable sandbox an earlier host
    started: either way it is watched through a pidfd.
    """

    def __init__(
        self,
        requests: BinaryIO,
        events: BinaryIO,
        launcher_pid: int,
        lifeline: int,
        cgroup: Cgroup | None,
        host_uid: int | None,
        stderr: BinaryIO | None = None,
        stderr_log: Path | None = None,
    ) -> None:
        self.stdin = requests
        self.stdout = events
        self.cgroup = cgroup
        self._host_uid = host_uid
        self.launcher_pid = launcher_pid
        self._pidfd = os.pidfd_open(launcher_pid)
        self._stderr_log = stderr_log
        self._lifeline = lifeline
        self._lock = threading.Lock()
        self._lines: list[str] = []
        if stderr is not None:
            threading.Thread(target=self._read_stderr, args=(stderr,), name="sandcell-diagnostics", daemon=True).start()

    @property
    def host_uid(self) -> int | None:
        """The unprivileged host uid every process of the sandbox runs as (``None`` when not started by root)."""
        if self._host_uid is None and self.cgroup is not None:
            for pid in sorted(self.cgroup.pids()):
                try:
                    with open(f"/proc/{pid}/status") as status:
                        self._host_uid = next(int(line.split()[1]) for line in status if line.startswith("Uid:"))
                    break
                except (OSError, StopIteration):
                    continue
        return self._host_uid

    def _read_stderr(self, stderr: BinaryIO) -> None:
        for line in stderr:
            self._lines.append(line.decode(errors="replace").rstrip())
            del self._lines[:-50]

    @property
    def diagnostics(self) -> list[str]:
        """The last lines the launcher, bubblewrap and the supervisor wrote to stderr."""
        if self._stderr_log is None:
            return self._lines
        try:
            return self._stderr_log.read_text(errors="replace").splitlines()[-50:]
        except OSError:
            return []

    def oom_kills(self) -> int:
        return self.cgroup.oom_kills() if self.cgroup else 0

    def memory_bytes(self) -> int | None:
        return self.cgroup.memory_bytes() if self.cgroup else None

    def memory_cache_bytes(self) -> int | None:
        return self.cgroup.memory_cache_bytes() if self.cgroup else None

    def cpu_seconds(self) -> float | None:
        return self.cgroup.cpu_seconds() if self.cgroup else None

    def freeze(self, frozen: bool) -> bool:
        """Pause or resume every process of the sandbox; ``False`` without a cgroup freezer."""
        return self.cgroup.freeze(frozen) if self.cgroup else False

    def wait(self, timeout: float) -> bool:
        """Wait for the launcher (and so the sandbox) to end; ``True`` if it has."""
        waiting = select.poll()  # not select(): a host with many sandboxes has fds past 1024
        waiting.register(self._pidfd, select.POLLIN)
        return bool(waiting.poll(timeout * 1000))

    @property
    def alive(self) -> bool:
        return not self.wait(0)

    def _release(self, order: bytes) -> None:
        with self._lock:
            if self._lifeline >= 0:
                try:
                    os.write(self._lifeline, order)
                except OSError:
                    pass
                os.close(self._lifeline)
                self._lifeline = -1

    def kill(self, timeout: float = 10.0) -> None:
        """Kill every process of the sandbox and remove its cgroup."""
        self._release(b"k")
        if not self.wait(timeout):
            os.kill(self.launcher_pid, signal.SIGKILL)
            self.wait(timeout)
        if self.cgroup is not None and self.cgroup.exists():
            self.cgroup.kill()
            self.cgroup.remove()
        self._close_pipes()

    def arm(self) -> None:
        """From now on this detachable sandbox outlives its host (see the launcher)."""
        with self._lock:
            if self._lifeline >= 0:
                try:
                    os.write(self._lifeline, b"d")
                except OSError:
                    pass

    def detach(self) -> None:
        """Let go of a detachable sandbox without killing it: another host may attach to it.

        The pipes stay open: the connection's reader thread is blocked on
        them, and they close with this process.
        """
        self._release(b"")

    def _close_pipes(self) -> None:
        for pipe in (self.stdin, self.stdout):
            try:
                pipe.close()
            except OSError:
                pass
