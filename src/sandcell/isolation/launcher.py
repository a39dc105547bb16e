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
import resource
import select
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from sandcell.isolation.cgroups import Cgroup
from sandcell.isolation.limits import PENDING_SIGNALS
from sandcell.protocol.linux import CLONE_NEWNS, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_REC

PR_SET_PDEATHSIG = 1


class ForkedChild:
    """The sandbox as our child: bubblewrap, started the cold way."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.pidfd = os.pidfd_open(pid)

    def status(self) -> int | None:
        exited, raw = os.waitpid(self.pid, os.WNOHANG)
        return os.waitstatus_to_exitcode(raw) & 0xFF if exited else None

    def kill(self) -> int:
        os.kill(self.pid, signal.SIGKILL)
        _, raw = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(raw) & 0xFF


class ForkServerChild:
    """The sandbox forked by a fork server (``sandcell.runtime.forkserver``): its pid 1, not our child.

    Its pid 1 reports the supervisor's exit status on the link before it
    ends, and ends the sandbox when ``guard``, which only we hold, closes.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        guard_read, self.guard = os.pipe()
        os.set_inheritable(self.guard, False)
        self.link = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.link.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.link.settimeout(30)
        try:
            self.link.connect(config["fork_server"]["socket"])
            socket.send_fds(self.link, [b"sandbox"], [0, 1, 2, guard_read])
        finally:
            os.close(guard_read)
        # Read by the fork server's child, after its fork: nothing of it enters the fork server.
        self.link.send(json.dumps(config["fork_server"]["setup"]).encode())
        joining = self.receive_pid()
        for procs in config["cgroup_procs"]:
            with open(procs, "w") as handle:
                handle.write(str(joining))
        self.link.send(b"go")
        self.pidfd = os.pidfd_open(self.receive_pid())

    def receive_pid(self) -> int:
        """The sender's pid, translated by the kernel into our pid namespace."""
        message, ancillary, _, _ = self.link.recvmsg(4096, socket.CMSG_SPACE(12))
        if message in (b"joining", b"running"):
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    return int.from_bytes(data[:4], sys.byteorder)
        error = json.loads(message).get("error") if message.startswith(b"{") else None
        raise RuntimeError(error or "the fork server closed the connection")

    def status(self) -> int | None:
        if not select.select([self.pidfd], [], [], 0)[0]:
            return None
        self.link.setblocking(False)
        try:
            report = self.link.recv(64)
        except OSError:
            report = b""
        return int(report.split()[1]) if report.startswith(b"exited ") else 128 + signal.SIGKILL

    def kill(self) -> int:
        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass  # already gone with the cgroup
        select.select([self.pidfd], [], [])
        return self.status() or 128 + signal.SIGKILL


def start_sandbox(config: dict[str, Any]) -> ForkedChild | ForkServerChild:
    if config.get("fork_server"):
        try:
            return ForkServerChild(config)
        except (ConnectionRefusedError, FileNotFoundError, RuntimeError) as exc:
            # Gone since the host looked, or its child could not build the sandbox.
            os.write(2, f"sandcell launcher: no sandbox from the fork server ({exc}); starting it with its own bubblewrap\n".encode())
    pid = os.fork()
    if pid:
        return ForkedChild(pid)
    try:
        for procs in config["cgroup_procs"]:
            with open(procs, "w") as handle:
                handle.write(str(os.getpid()))
        resource.setrlimit(resource.RLIMIT_SIGPENDING, (PENDING_SIGNALS, PENDING_SIGNALS))  # see PENDING_SIGNALS
        if config.get("ptys"):
            private_devpts(config["ptys"])
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


def private_devpts(ptys: int) -> None:
    """A devpts instance of this sandbox's own, at most ``ptys`` terminals, where bubblewrap binds it from.

    bubblewrap's ``--dev`` mounts one without ``max=``. This one is mounted
    over ``/dev/pts`` in a mount namespace of our own (so never seen by the
    host, gone with the sandbox, and not allowed the host's reserve of ptys).
    """
    libc = ctypes.CDLL(None, use_errno=True)

    def check(result: int, what: str) -> None:
        if result != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"{what}: {os.strerror(error)}")

    check(libc.unshare(CLONE_NEWNS), "unshare the mount namespace")
    check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    options = f"newinstance,ptmxmode=0666,mode=620,max={ptys}".encode()
    check(libc.mount(b"devpts", b"/dev/pts", b"devpts", MS_NOSUID | MS_NOEXEC, options), "mount devpts")


class Attachable:
    """The Unix socket a new host attaches through, and the host's pipe ends it hands over."""

    def __init__(self, config: dict[str, Any]) -> None:
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


def serve(link_fd: int) -> None:
    """A warm launcher that forks one launcher per sandbox.

    A fresh interpreter per sandbox would cost ~20 ms of start and ~8 MiB
    of private memory; a fork shares this one's pages. The host sends the
    launcher's config with its fds (stdin, stdout, stderr, lifeline, seccomp
    filter, then the host's pipe ends a detachable one keeps) and gets its
    pid. Launchers are on their own once forked: this server ends with its
    host, they end as their lifelines say.
    """
    link = socket.socket(fileno=link_fd)
    signal.signal(signal.SIGCHLD, lambda *_: reap_children())
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(link, 1 << 20, 64)
        except InterruptedError:
            continue
        if not message:
            os._exit(0)
        try:
            pid = os.fork()
        except OSError as exc:
            pid = -1
            link.send(json.dumps({"error": str(exc)}).encode())
        if pid == 0:
            link.close()
            launch_forked(json.loads(message), fds)
        for fd in fds:
            os.close(fd)
        if pid > 0:
            link.send(json.dumps({"pid": pid}).encode())


def reap_children() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not pid:
            return


def launch_forked(config: dict[str, Any], fds: list[int]) -> None:
    """In a child of the server: become the launcher ``config`` describes."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()
        # uid_lock holds the sandbox's host uid (see ``uids``) for as long as we live.
        stdin, stdout, stderr, lifeline, seccomp, uid_lock, *host_fds = fds
        os.set_inheritable(uid_lock, False)
        for source, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
            os.dup2(source, target)
            os.close(source)
        config.update(lifeline_fd=lifeline, seccomp_fd=seccomp)
        os.set_inheritable(seccomp, True)  # for bubblewrap, which the host told of its own number for it
        config["argv"][config["argv"].index("--seccomp") + 1] = str(seccomp)
        if config.get("attach"):
            config["attach"]["host_fds"] = host_fds
        main(config)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # noqa: BLE001 - report anything, then die
        os.write(2, f"sandcell launcher: {exc!r}\n".encode())
    os._exit(code)


def main(config: dict[str, Any]) -> None:
    group = Cgroup(config["name"], Path(config["v2"]) if config.get("v2") else None, {k: Path(v) for k, v in config["v1"].items()})
    signal.signal(signal.SIGTERM, lambda *_: None)  # cleanup below runs either way
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    child = start_sandbox(config)
    # Only the sandbox holds the protocol pipes: the host must see EOF when it exits.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(config["seccomp_fd"])
    attachable = Attachable(config["attach"]) if config.get("attach") else None
    lifeline: int | None = config["lifeline_fd"]
    armed = False
    orphaned_at: float | None = None
    status = None
    while status is None:
        waiting = [child.pidfd] + ([lifeline] if lifeline is not None else []) + ([attachable.listener] if attachable else [])
        timeout = None if orphaned_at is None or attachable is None else max(attachable.grace - (time.monotonic() - orphaned_at), 0)
        poller = select.poll()  # not select(): no limit at fd 1024
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
        status = child.status()
    if attachable is not None:
        attachable.close()
    group.kill()
    if status is None:
        status = child.kill()
    group.kill()
    group.remove()
    sys.exit(status)
