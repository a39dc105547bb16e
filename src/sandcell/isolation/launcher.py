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
import sys
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


def main() -> None:
    config = json.loads(sys.argv[1])
    group = Cgroup(config["name"], Path(config["v2"]) if config.get("v2") else None, {k: Path(v) for k, v in config["v1"].items()})
    signal.signal(signal.SIGTERM, lambda *_: None)  # cleanup below runs either way
    pid = start_sandbox(config)
    # Only the sandbox holds the protocol pipes: the host must see EOF when it exits.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(config["seccomp_fd"])
    lifeline = config["lifeline_fd"]
    pidfd = os.pidfd_open(pid)
    status = None
    while status is None:
        try:
            ready, _, _ = select.select([pidfd, lifeline], [], [])
        except InterruptedError:
            continue
        if lifeline in ready:
            break  # host asked to kill, or the host is gone
        exited, raw = os.waitpid(pid, os.WNOHANG)
        if exited:
            status = raw
    group.kill()
    if status is None:
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    group.kill()
    group.remove()
    sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)


if __name__ == "__main__":
    main()
