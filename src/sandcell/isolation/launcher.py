"""The launcher: a small root-side process that owns one sandbox's lifetime.

Started by the host (``python -I -S``, so it loads nothing but stdlib and
this package), it

1. forks; the child joins the sandbox's cgroups, drops to the sandbox's
   unprivileged host uid and execs bubblewrap: nothing of the sandbox ever
   runs outside its cgroup or as root;
2. waits for either the sandbox to exit or its *lifeline* to close. The host
   holds the lifeline's write end, so when the host calls ``kill()`` *or
   dies for any reason* the launcher kills every process in the cgroup;
3. removes the cgroups and exits with the sandbox's status.

A *detachable* sandbox (the server's) outlives a host that dies without
asking for the kill (a ``k`` on the lifeline), once it has been handed out
(a ``d``; one still starting or idle in a pool dies with its host): the
launcher keeps the host's ends of the protocol pipes open and, for a grace
period, hands them over a root-only Unix socket to the next host that
attaches with a new lifeline.

Keeping this out of the host process means a host killed with SIGKILL still
leaves nothing behind.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

from sandcell.isolation.cgroups import Cgroup

PR_SET_PDEATHSIG = 1


def start_sandbox(config: dict) -> int:
    pid = os.fork()
    if pid:
        return pid
    try:
        for procs in config["cgroup_procs"]:
            with open(procs, "w") as handle:
                handle.write(str(os.getpid()))
        if config.get("uid") is not None:
            os.setgroups([])
            os.setresgid(config["gid"], config["gid"], config["gid"])
            os.setresuid(config["uid"], config["uid"], config["uid"])
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() == 1:  # the launcher died before prctl took effect
            os._exit(1)
        os.close(config["lifeline_fd"])
        # bwrap stays on as the sandbox's pid 1, whose environment the sandbox
        # can read (/proc/1/environ): it gets none of the host's.
        os.execve(shutil.which(config["argv"][0]) or config["argv"][0], config["argv"], {})
    except BaseException as exc:  # noqa: BLE001 - report anything, then die
        os.write(2, f"sandcell launcher: cannot start the sandbox: {exc}\n".encode())
    os._exit(127)


class Attachable:
    """The Unix socket a new host attaches through, and the host's pipe ends it hands over."""

    def __init__(self, config: dict) -> None:
        self.path = config["socket"]
        self.log = config["log"]
        self.host_fds = config["host_fds"]
        self.grace = float(config["grace"])
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if os.path.exists(self.path):
            os.unlink(self.path)
        self.listener.bind(self.path)
        os.chmod(self.path, 0o600)
        self.listener.listen(4)

    def hand_over(self, attached: bool) -> int | None:
        """Answer one attach request: the new host's lifeline, or ``None`` if refused."""
        connection, _ = self.listener.accept()
        with connection:
            connection.settimeout(5)
            try:
                _, fds, _, _ = socket.recv_fds(connection, 64, 1)
                if attached or len(fds) != 1:
                    for fd in fds:
                        os.close(fd)
                    connection.sendall(json.dumps({"error": "the sandbox is attached to a live host"}).encode())
                    return None
                socket.send_fds(connection, [json.dumps({"launcher": os.getpid()}).encode()], self.host_fds)
                return fds[0]
            except OSError:
                return None

    def close(self) -> None:
        self.listener.close()
        for path in (self.path, self.log):
            try:
                os.unlink(path)
            except OSError:
                pass


def main() -> None:
    config = json.loads(sys.argv[1])
    group = Cgroup(config["name"], Path(config["v2"]) if config.get("v2") else None, {k: Path(v) for k, v in config["v1"].items()})
    signal.signal(signal.SIGTERM, lambda *_: None)  # cleanup below runs either way
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    pid = start_sandbox(config)
    # Only the sandbox holds the protocol pipes: the host must see EOF when it exits.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(config["seccomp_fd"])
    attachable = Attachable(config["attach"]) if config.get("attach") else None
    lifeline: int | None = config["lifeline_fd"]
    armed = False
    orphaned_at = None
    pidfd = os.pidfd_open(pid)
    status = None
    while status is None:
        waiting = [pidfd] + ([lifeline] if lifeline is not None else []) + ([attachable.listener] if attachable else [])
        timeout = None if orphaned_at is None else max(attachable.grace - (time.monotonic() - orphaned_at), 0)  # type: ignore[union-attr]
        poller = select.poll()  # not select(): the host's fd numbers, which we keep, may pass 1024
        for waited in waiting:
            poller.register(waited, select.POLLIN)
        try:
            ready = {fd for fd, _ in poller.poll(None if timeout is None else timeout * 1000)}
        except InterruptedError:
            continue
        if not ready:
            break  # no host came back within the grace period
        if lifeline is not None and lifeline in ready:
            order = os.read(lifeline, 1)
            if order == b"d":
                armed = True  # handed out: from now on it outlives its host
            elif order == b"k" or not (attachable and armed):
                break  # the host asked for the kill, or is gone and the sandbox was not handed out
            elif not order:
                os.close(lifeline)
                lifeline, orphaned_at = None, time.monotonic()
        if attachable is not None and attachable.listener.fileno() in ready:
            taken = attachable.hand_over(attached=lifeline is not None)
            if taken is not None:
                lifeline, orphaned_at = taken, None
        exited, raw = os.waitpid(pid, os.WNOHANG)
        if exited:
            status = raw
    if attachable is not None:
        attachable.close()
    group.kill()
    if status is None:
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    group.kill()
    group.remove()
    sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)


if __name__ == "__main__":
    main()
