"""The fork server: one warm interpreter per runtime image that new sandboxes are forked from.

Starting a sandbox the cold way costs a bubblewrap, a fresh Python and its
imports: ~200 ms and ~23 MiB of private memory each. The fork server does that
once. It runs inside a bubblewrap of its own (read-only root, the image, its
own pid namespace), as root of a user namespace that maps a range of unused
host uids, with IPython's shell built and the policy's modules imported, and
no thread. For each new sandbox it forks a child that, before any sandboxed
code runs, builds what bubblewrap builds for a cold sandbox:

0. what it is to be, from the launcher, after the fork (its uid, disk size,
   rlimits); the supervisor's config (envs included) comes on the
   supervisor's own stdin from the host. Nothing of one sandbox ever passes
   through the fork server, whose memory every later sandbox gets a copy of;
1. the unprivileged uid the host reserved for it in the fork server's range (so
   a distinct host uid per sandbox, drawn at random) and a user namespace in
   which that uid is 1000, with per-namespace maxima for what the kernel
   counts per user (inotify, fanotify, namespaces) and a pending-signals
   rlimit, so that no sandbox can use up a budget it shares with others;
2. a stop while the launcher (root, on the host) moves it into the sandbox's
   cgroups, then its own mount, pid, ipc, uts, cgroup and (without network)
   net namespaces, fresh tmpfs for ``/tmp``, ``/home/user``, ``/dev/shm``, and
   empty read-only ones over the packages of templates other than its own;
3. pid 1 of the new pid namespace: a fresh ``/proc`` and ``/dev/pts``, no
   more user namespaces, no capabilities, ``no_new_privs`` and the same
   seccomp filter. It forks the supervisor and is then the sandbox's Python
   zygote (contexts are its forks, so no second warm interpreter per
   sandbox) and its init: it reaps orphans, and ends the sandbox when the
   launcher goes away.

Everything the child inherits copy-on-write is the fork server's: the
interpreter, the imported modules, the shell. That memory holds no host
secret (the fork server is started with an empty environment) and is shared by
all sandboxes of the fork server until one of them writes to it; what is shared
also means the same address layout and the same ``str`` hash seed in every
sandbox of one fork server. ``random`` reseeds itself on fork, and contexts
reseed ``numpy.random``.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import resource
import select
import signal
import socket
import struct
import sys
from typing import Any

from sandcell.protocol import SANDBOX_UID
from sandcell.protocol.linux import (
    CLONE_NEWCGROUP,
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
)

from .hardening import set_command_line, set_dumpable, set_name

PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 24, 38, 47
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
PR_CAP_AMBIENT_CLEAR_ALL = 4
LINUX_CAPABILITY_VERSION_3 = 0x20080522
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
# What the kernel counts per user in each user namespace, capped in every
# sandbox's own: creating namespaces is no sandbox's business, and inotify and
# fanotify objects are charged to the fork server's owner too, shared by all.
NAMESPACE_MAXIMA = {
    "user_namespaces": 0,
    "mnt_namespaces": 0,
    "pid_namespaces": 0,
    "net_namespaces": 0,
    "ipc_namespaces": 0,
    "uts_namespaces": 0,
    "cgroup_namespaces": 0,
    "time_namespaces": 0,
    "inotify_instances": 32,
    "inotify_watches": 65536,
    "fanotify_groups": 16,
    "fanotify_marks": 8192,
}
# Parts of a fresh /proc that bubblewrap makes read-only too.
PROC_READ_ONLY = ("sys", "sysrq-trigger", "irq", "bus")

libc = ctypes.CDLL(None, use_errno=True)


def check(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    encoded = data.encode() if data is not None else None
    check(libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags, encoded), f"mount {target}")


def write_file(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def send_credentials(link: socket.socket, message: bytes) -> None:
    """Send ``message`` with our pid: the kernel translates it into the launcher's pid namespace."""
    credentials = struct.pack("3i", os.getpid(), os.getuid(), os.getgid())
    link.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, credentials)])


class ForkServer:
    def __init__(self, config: dict[str, Any]) -> None:
        self.listener = socket.socket(fileno=config["listener_fd"])
        self.uids = int(config["uids"])
        self.uid_lock = int(config["uid_lock_fd"])
        self.seccomp = bytes.fromhex(config["seccomp"])
        self.idle_exit = float(config.get("idle_exit", 600))
        from sandcell.runtime import python_kernel, supervisor
        from sandcell.runtime.contexts.python import python_env

        os.environ.update(python_env(config["env"], config["work_dir"]))
        supervisor.seed_matplotlib_cache(config.get("mpl_cache"), config["env"].get("MPLCONFIGDIR"))
        self.supervisor = supervisor
        self.kernel = python_kernel
        self.channel, self.shell = python_kernel.warm_up(config["preload"])
        # What the fork server holds is never freed: the collector need not visit
        # it, and a child's collections then leave those pages shared.
        gc.collect()
        gc.freeze()

    def check_namespaces(self) -> None:
        """Fail now, not per sandbox, where a child may not build a sandbox's namespaces.

        Some systems forbid unprivileged user namespaces (Ubuntu's AppArmor
        restriction, for one); the host then starts sandboxes the cold way.
        """
        pid = os.fork()
        if pid == 0:
            try:
                probe_uid = self.uids - 1
                os.setresgid(probe_uid, probe_uid, probe_uid)
                os.setresuid(probe_uid, probe_uid, probe_uid)
                check(libc.unshare(CLONE_NEWUSER), "unshare the user namespace")
                os._exit(0)
            except BaseException as exc:  # noqa: BLE001 - report anything, then die
                os.write(2, f"sandcell fork server: sandboxes cannot be forked here: {exc}\n".encode())
            os._exit(1)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(1)

    def serve(self, ready_fd: int) -> None:
        self.check_namespaces()
        signal.signal(signal.SIGCHLD, lambda *_: self.kernel.reap_children())
        os.write(ready_fd, b"r")
        os.close(ready_fd)
        while True:
            waiting = select.poll()
            waiting.register(self.listener, select.POLLIN)
            try:
                if not waiting.poll(self.idle_exit * 1000) and self.idle():
                    os._exit(0)
            except InterruptedError:
                continue
            try:
                connection, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                continue
            with connection:
                connection.settimeout(5)  # only root's launchers reach us, but none may stall the others
                try:
                    message, fds, _, _ = socket.recv_fds(connection, 16, 4)
                except OSError:
                    continue
                if message != b"sandbox" or len(fds) != 4:
                    for fd in fds:
                        os.close(fd)
                    continue
                connection.settimeout(None)  # the sandbox's setup waits on the launcher as long as it takes
                self.fork_sandbox(connection, fds)

    def idle(self) -> bool:
        """No sandbox lives: nothing in our pid namespace but bubblewrap's init and us."""
        return all(name in ("1", str(os.getpid())) for name in os.listdir("/proc") if name.isdigit())

    def fork_sandbox(self, connection: socket.socket, fds: list[int]) -> None:
        try:
            pid = os.fork()
        except OSError as exc:
            connection.send(json.dumps({"error": f"the fork server cannot fork: {exc}"}).encode())
            pid = -1
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            try:
                Sandbox(self, connection, fds).build()
            except BaseException as exc:  # noqa: BLE001 - report anything, then die
                try:
                    connection.send(json.dumps({"error": f"the sandbox cannot start: {exc}"}).encode())
                except OSError:
                    pass
            os._exit(127)
        for fd in fds:
            os.close(fd)


class Sandbox:
    """A child of the fork server turning itself into a sandbox (see the module's docstring)."""

    def __init__(self, server: ForkServer, link: socket.socket, fds: list[int]) -> None:
        self.server = server
        self.link = link
        self.requests, self.events, stderr, self.guard = fds
        os.dup2(stderr, 2)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        self.uid_lock = server.uid_lock
        kept = {0, 1, 2, link.fileno(), self.requests, self.events, self.guard, self.uid_lock}
        for fd in map(int, os.listdir("/proc/self/fd")):
            if fd not in kept:
                try:
                    os.close(fd)  # the fork server's own: its listener
                except OSError:
                    pass
        self.setup: dict[str, Any] = json.loads(link.recv(1 << 16))
        self.uid = int(self.setup["uid"])
        if not 0 < self.uid < server.uids - 1:
            raise ValueError(f"uid {self.uid} is outside the fork server's range")

    def build(self) -> None:
        pending = self.setup["rlimits"]["sigpending"]
        resource.setrlimit(resource.RLIMIT_SIGPENDING, (pending, pending))  # before the namespace, which takes it as its bound
        os.setgroups([])
        os.setresgid(self.uid, self.uid, self.uid)
        os.setresuid(self.uid, self.uid, self.uid)
        set_dumpable(True)  # a uid change made us undumpable, and so unable to write our own uid_map
        check(libc.unshare(CLONE_NEWUSER), "unshare the user namespace")
        write_file("/proc/self/setgroups", "deny")
        write_file("/proc/self/uid_map", f"{SANDBOX_UID} {self.uid} 1\n")
        write_file("/proc/self/gid_map", f"{SANDBOX_UID} {self.uid} 1\n")
        send_credentials(self.link, b"joining")
        if self.link.recv(16) != b"go":  # the launcher has put us in the sandbox's cgroups
            os._exit(1)
        # A network namespace of its own in every case: with network, too, the
        # sandbox must never see the host's loopback, sockets or /proc/net.
        check(libc.unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP | CLONE_NEWNET), "unshare the namespaces")
        mount("none", "/", None, MS_REC | MS_PRIVATE)
        size = int(self.setup["disk_bytes"])
        for path, mode in (("/tmp", "1777"), (self.setup["home"], "0755"), ("/dev/shm", "1777")):
            mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode={mode}")
        for path in self.setup["hidden"]:  # other templates' packages: an empty, read-only cover that the sandbox cannot unmount
            mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0755")
        check(libc.sethostname(b"sandbox", 7), "hostname")
        loopback_up()
        if os.fork():
            os._exit(0)  # the new pid namespace starts with our child
        self.init()

    def init(self) -> None:
        """Pid 1 of the sandbox: finish its view of the system, lock it down, start the supervisor, reap."""
        set_name("sandcell-init")
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        for name, value in NAMESPACE_MAXIMA.items():
            if os.path.exists(f"/proc/sys/user/max_{name}"):  # older kernels lack some
                write_file(f"/proc/sys/user/max_{name}", str(value))
        for name in PROC_READ_ONLY:
            path = f"/proc/{name}"
            if os.path.exists(path):
                mount(path, path, None, MS_BIND | MS_REC)
                mount(path, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
        mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, f"newinstance,ptmxmode=0666,mode=620,max={int(self.setup['ptys'])}")
        os.setsid()
        set_dumpable(False)
        drop_capabilities()
        check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        load_seccomp(self.server.seccomp)
        # Contexts are forks of this process: they must have the limits the supervisor has.
        self.server.supervisor.apply_rlimits(self.setup["rlimits"])
        os.chdir(self.setup["home"])
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        supervisor = os.fork()
        if supervisor == 0:
            theirs.close()
            self.supervise(ours)
        ours.close()
        set_command_line("sandcell-init")  # after the fork: the supervisor keeps the interpreter's
        os.close(self.requests)
        os.close(self.events)
        send_credentials(self.link, b"running")
        # Pid 1 is also the sandbox's Python zygote: contexts are its forks.
        ended: dict[int, int] = {}
        closed = self.server.kernel.serve_forks(theirs.detach(), self.server.channel, self.server.shell, watched=self.guard, reaped=ended.setdefault)
        if not closed:
            os._exit(137)  # the launcher is gone: so is the sandbox
        if supervisor not in ended:
            _, raw = os.waitpid(supervisor, 0)
            ended[supervisor] = os.waitstatus_to_exitcode(raw)
        code = ended[supervisor]
        try:
            self.link.send(f"exited {code}".encode())
        except OSError:
            pass
        os._exit(code & 0xFF if code >= 0 else 128 - code)

    def supervise(self, zygote_link: socket.socket) -> None:
        try:
            os.close(self.uid_lock)  # pid 1 holds it for the sandbox
            os.close(self.guard)
            self.link.close()
            os.dup2(self.requests, 0)
            os.dup2(self.events, 1)
            os.close(self.requests)
            os.close(self.events)
            os.environ.clear()
            self.server.supervisor.run(zygote_link)
        finally:
            os._exit(1)


def loopback_up() -> None:
    """What bubblewrap does in a new network namespace: bring ``lo`` up."""
    import fcntl

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(probe, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(probe, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def drop_capabilities() -> None:
    for capability in range(64):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            break  # past the last capability this kernel knows
    check(libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient capabilities")
    header = struct.pack("Ii", LINUX_CAPABILITY_VERSION_3, 0)
    check(libc.capset(header, bytes(24)), "capset")


def load_seccomp(program: bytes) -> None:
    """Load the sandbox's filter (the classic BPF that ``bwrap --seccomp`` would load)."""
    filters = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("HxxxxxxP", len(program) // 8, ctypes.addressof(filters))
    check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, fprog, 0, 0), "seccomp")


def main() -> None:
    config = json.loads(sys.argv[1])
    set_command_line(sys.executable)  # what contexts forked from us show
    set_name("sandcell-forksv")
    server = ForkServer(config)
    server.serve(config["ready_fd"])


if __name__ == "__main__":
    main()
