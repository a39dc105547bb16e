"""Start a process tree inside namespaces, with limits, as an unprivileged uid.

``launch(policy)`` turns a ``Policy`` into bubblewrap arguments, a cgroup, a
seccomp filter and an unprivileged host uid, starts the in-sandbox supervisor
through the root-side launcher, and returns a ``SandboxProcess`` whose stdin
and stdout speak ``sandcell.protocol``.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from sandcell import protocol

from .cgroups import Cgroup, CgroupManager
from .image import PACKAGE_DIR, SANDBOX_UID, Image, ImageMissing
from .limits import PENDING_SIGNALS, PTYS, Limits
from .seccomp import filter_fd
from .template import UID_SPAN, RunningTemplate, TemplateUnavailable, template_socket
from .uids import reserve_uid

__all__ = ["Limits", "Policy", "SandboxProcess", "attach", "launch", "ImageMissing"]

HOME = "/home/user"
WORK_DIR = "/tmp/.sandcell"
HOST_UID_BASE = 600_000
HOST_UID_SPAN = 1 << 20
ETC_FROM_HOST = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime", "timezone", "fonts", "ssl", "mime.types", "protocols", "services")


@dataclass(frozen=True)
class Policy:
    """Everything that decides what one sandbox can do.

    ``preload`` (modules the Python zygote imports) and ``spares`` (languages
    of which a started context is kept ready) trade memory for speed; they
    change nothing of what the code may do.
    """

    limits: Limits = field(default_factory=Limits)
    envs: dict[str, str] = field(default_factory=dict)
    network: bool = False
    prestart: tuple[str, ...] = ("python",)
    kill_grace: float = 3.0
    preload: tuple[str, ...] = ()
    spares: tuple[str, ...] = ()


def base_env(image: Image, envs: dict[str, str]) -> dict[str, str]:
    env = {
        "PATH": f"{image.python.parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": HOME,
        "USER": "user",
        "LOGNAME": "user",
        "SHELL": "/bin/bash",
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "MPLCONFIGDIR": f"{WORK_DIR}/matplotlib",
        "XDG_CACHE_HOME": f"{WORK_DIR}/cache",
    }
    env.update(envs)
    return env


def filesystem_argv(image: Image, disk_bytes: int) -> list[str]:
    """The sandbox's file system as bubblewrap arguments: read-only system and image, writable tmpfs."""
    binds = [("--ro-bind", "/usr", "/usr")]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            binds.append(("--symlink", os.readlink(path), str(path)))
        elif path.is_dir():
            binds.append(("--ro-bind", str(path), str(path)))
    binds += [("--ro-bind-try", f"/etc/{name}", f"/etc/{name}") for name in ETC_FROM_HOST]
    binds += [("--ro-bind", str(path), f"/etc/{path.name}") for path in sorted(image.etc.iterdir())]
    binds += [("--ro-bind", str(path), str(path)) for path in (image.home / "runtime", image.home / "node", image.mpl_cache, image.stage)]
    # bwrap makes the skeleton's directories (/etc, /opt...) 0700: fine for a
    # cold sandbox, which owns them, not for a template's children, which don't.
    parents = {str(parent) for _, _, destination in binds for parent in Path(destination).parents} - {"/"}
    argv = [arg for parent in sorted(parents, key=lambda path: path.count("/")) for arg in ("--perms", "0755", "--dir", parent)]
    argv += [arg for bind in binds for arg in bind]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    for writable, perms in (("/tmp", "1777"), (HOME, "0755"), ("/dev/shm", "1777")):
        argv += ["--size", str(disk_bytes), "--perms", perms, "--tmpfs", writable]
    # The skeleton bwrap builds (/, /etc, /opt, /dev...) is a tmpfs of its own,
    # writable by the sandbox's uid and outside disk_mb: freeze it. Only the
    # mounts above stay writable (the remount is not recursive).
    argv += ["--remount-ro", "/dev", "--remount-ro", "/"]
    return argv


def supervisor_config(image: Image, policy: Policy) -> dict[str, Any]:
    """What the in-sandbox supervisor is told: paths, environment, limits it applies itself."""
    limits = policy.limits
    return {
        "python": str(image.python),
        "stage": str(image.stage),
        "acorn": str(image.acorn),
        "home": HOME,
        "work_dir": WORK_DIR,
        "mpl_cache": str(image.mpl_cache),
        "env": base_env(image, policy.envs),
        "output_limit": limits.output_mb * 1024 * 1024,
        "kill_grace": policy.kill_grace,
        "prestart": list(policy.prestart),
        "preload": list(policy.preload),
        "spares": list(policy.spares),
        "rlimits": {"core": 0, "nofile": limits.open_files, "fsize": limits.disk_mb * 1024 * 1024, "nproc": limits.pids, "sigpending": PENDING_SIGNALS},
    }


def bwrap_argv(image: Image, policy: Policy, seccomp_fd: int, own_ptys: bool) -> list[str]:
    """bubblewrap for a sandbox of its own; ``own_ptys``: the launcher mounts it a devpts with ``max=`` (see ``launcher``)."""
    # A network namespace of its own even with ``network``: never the host's (its
    # loopback, abstract sockets, /proc/net). Egress is not built yet.
    argv = ["bwrap", "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--unshare-net"]
    argv += ["--disable-userns", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", "sandbox"]
    argv += ["--die-with-parent", "--new-session", "--clearenv", "--cap-drop", "ALL"]
    argv += filesystem_argv(image, policy.limits.disk_mb * 1024 * 1024)
    if own_ptys:
        argv += ["--dev-bind", "/dev/pts", "/dev/pts"]  # over bubblewrap's own, which has no max=
    argv += ["--chdir", HOME, "--seccomp", str(seccomp_fd)]
    # The supervisor's config (envs included) is its first frame on stdin, never
    # in an argv or environment every host user can read in ps or /proc.
    argv += ["--", *runtime_command(image, "supervisor")]
    return argv


def runtime_command(image: Image, module: str) -> list[str]:
    """The image's Python running ``sandcell.runtime.<module>.main()``."""
    # asyncio and shutil import ssl, bz2 and lzma only if they can; the
    # supervisor needs none of them (1.7 MiB and 14 ms per sandbox).
    boot = (
        "import sys; sys.modules.update(dict.fromkeys(('ssl', 'bz2', 'lzma')))\n"
        f"sys.path.insert(0, {str(image.stage)!r}); from sandcell.runtime.{module} import main; main()"
    )
    return [str(image.python), "-E", "-s", "-c", boot]


def root_helper_command(module: str, call: str) -> list[str]:
    """This host's Python running ``sandcell.isolation.<module>.<call>``, for a root-side helper.

    Helpers (the launcher server, a template's starter) must start fast: bare
    packages stand in for sandcell/__init__.py and isolation/__init__.py, so
    they load only their own module and what it imports, not the host API.
    """
    boot = (
        "import sys, types\n"
        f"for name, path in (('sandcell', {str(PACKAGE_DIR)!r}), ('sandcell.isolation', {str(PACKAGE_DIR / 'isolation')!r})):\n"
        "    sys.modules[name] = types.ModuleType(name); sys.modules[name].__path__ = [path]\n"
        f"import sandcell.isolation.{module} as helper; helper.{call}"
    )
    return [sys.executable, "-I", "-S", "-c", boot]


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


_manager: CgroupManager | None = None
_manager_lock = threading.Lock()


def cgroup_manager() -> CgroupManager:
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = CgroupManager()
            _manager.sweep()
        return _manager


def attach_dir() -> Path:
    """Where detachable sandboxes' launchers listen: only this host user can reach it."""
    base = Path("/run") if os.geteuid() == 0 else Path(os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/sandcell-{os.geteuid()}")
    directory = base / "sandcell"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    return directory


def templates_enabled() -> bool:
    """Sandboxes fork from a template unless ``SANDCELL_TEMPLATES=0`` (then each starts its own bubblewrap)."""
    return os.environ.get("SANDCELL_TEMPLATES", "1") != "0"


TEMPLATE_RETRY = 600.0
_template_failed_at: float | None = None


def template_for(image: Image, policy: Policy) -> RunningTemplate | None:
    """The template to fork ``policy``'s sandbox from, or ``None`` to start it cold.

    A template that cannot start is not tried again for ten minutes: each
    try costs a failed start.
    """
    global _template_failed_at
    if not templates_enabled() or (_template_failed_at is not None and time.monotonic() - _template_failed_at < TEMPLATE_RETRY):
        return None
    try:
        return template_socket(image, policy)
    except (TemplateUnavailable, OSError) as exc:
        _template_failed_at = time.monotonic()
        print(f"sandcell: sandboxes start without a template for now ({exc})", file=sys.stderr)
        return None


def launch(policy: Policy, name: str, image: Image | None = None, detachable: bool = False, orphan_grace: float = 600.0) -> SandboxProcess:
    """Start a sandbox; a ``detachable`` one survives this process for ``orphan_grace`` seconds, waiting for ``attach``."""
    image = image or Image()
    image.check()
    manager = cgroup_manager()
    cgroup = manager.create(name, policy.limits) if manager.available else None
    root = os.geteuid() == 0
    template = template_for(image, policy) if root and cgroup is not None else None
    host_uid: int | None
    if template is not None:
        host_uid, uid_lock = reserve_uid(template.uid_locks, template.uid_base, 1, UID_SPAN - 2)  # 0 is the template, the last its probe
    elif root:
        host_uid, uid_lock = reserve_uid(attach_dir() / "uids-cold.lock", HOST_UID_BASE, 0, HOST_UID_SPAN)
    else:
        host_uid, uid_lock = None, os.open(os.devnull, os.O_RDONLY)  # no reservation to hold
    seccomp_fd = filter_fd()
    lifeline_read, lifeline_write = os.pipe()
    os.set_inheritable(lifeline_write, False)
    requests_read, requests_write = os.pipe()
    events_read, events_write = os.pipe()
    config: dict[str, Any] = {
        "name": name,
        "cgroup_procs": cgroup.procs_files if cgroup else [],
        "v2": str(cgroup.v2) if cgroup and cgroup.v2 else None,
        "v1": {k: str(v) for k, v in cgroup.v1.items()} if cgroup else {},
        "lifeline_fd": lifeline_read,
        "seccomp_fd": seccomp_fd,
    }
    supervisor = supervisor_config(image, policy)
    # The launcher starts the sandbox its own way (with the same uid) if the template has just gone.
    config.update(argv=bwrap_argv(image, policy, seccomp_fd, own_ptys=root), uid=host_uid, gid=host_uid, ptys=PTYS if root else None)
    if template is not None and host_uid is not None:
        # What the template's child learns after its fork, from the launcher: the
        # template itself never holds anything of one sandbox, for its later
        # children to find in their copy of its memory.
        setup = {"uid": host_uid - template.uid_base, "ptys": PTYS, "disk_bytes": policy.limits.disk_mb << 20, "home": HOME, "rlimits": supervisor["rlimits"]}
        config["template"] = {"socket": str(template.socket), "setup": setup}
    kept: tuple[int, ...] = ()
    stderr_read = None
    if detachable:
        # The launcher keeps the host's pipe ends to hand to the next host; its
        # stderr is a file, since a pipe to a dead host would break.
        kept = (requests_write, events_read)
        stderr_log = attach_dir() / f"{name}.log"
        config["attach"] = {"socket": str(attach_dir() / f"{name}.sock"), "log": str(stderr_log), "grace": orphan_grace}
        stderr_write = os.open(stderr_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    else:
        stderr_log = None
        stderr_read, stderr_write = os.pipe()
    try:
        launcher_pid = launcher_server().fork(config, [requests_read, events_write, stderr_write, lifeline_read, seccomp_fd, uid_lock, *kept])
    except BaseException:
        for fd in (lifeline_write, requests_write, events_read, *([] if stderr_read is None else [stderr_read])):
            os.close(fd)
        if cgroup:
            cgroup.remove()
        raise
    finally:
        for fd in (lifeline_read, seccomp_fd, requests_read, events_write, stderr_write, uid_lock):
            os.close(fd)
    requests, events = os.fdopen(requests_write, "wb"), os.fdopen(events_read, "rb")
    try:
        requests.write(protocol.encode({"op": "config", "config": supervisor}))
        requests.flush()
    except OSError:
        pass  # the sandbox died at once: the connection reports why
    stderr = os.fdopen(stderr_read, "rb") if stderr_read is not None else None
    return SandboxProcess(requests, events, launcher_pid, lifeline_write, cgroup, host_uid, stderr=stderr, stderr_log=stderr_log)


class LauncherServer:
    """The host's fork server of launchers (``launcher.serve``), started on first use."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.process = subprocess.Popen(
                root_helper_command("launcher", f"serve({theirs.fileno()})"),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                cwd="/",
                start_new_session=True,
            )
        finally:
            theirs.close()
        self.link = ours
        self.owner = os.getpid()
        self.lock = threading.Lock()

    @property
    def usable(self) -> bool:
        return self.owner == os.getpid() and self.process.poll() is None

    def fork(self, config: dict[str, Any], fds: list[int]) -> int:
        """Fork a launcher for ``config`` on ``fds``; its pid."""
        with self.lock:
            socket.send_fds(self.link, [json.dumps(config).encode()], fds)
            answer = json.loads(self.link.recv(4096) or b'{"error": "the launcher server exited"}')
        if "pid" not in answer:
            raise OSError(f"cannot start a launcher: {answer.get('error')}")
        return int(answer["pid"])


_launcher_server: LauncherServer | None = None
_launcher_server_lock = threading.Lock()


def launcher_server() -> LauncherServer:
    global _launcher_server
    with _launcher_server_lock:
        if _launcher_server is None or not _launcher_server.usable:
            _launcher_server = LauncherServer()
        return _launcher_server


def attach(name: str) -> SandboxProcess:
    """Take over a detachable sandbox whose host has gone: its pipes, and a new lifeline.

    Raises ``OSError`` when the sandbox is gone, or still has a live host.
    """
    lifeline_read, lifeline_write = os.pipe()
    os.set_inheritable(lifeline_write, False)
    path = attach_dir() / f"{name}.sock"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(10)
            try:
                connection.connect(str(path))
            except ConnectionRefusedError:
                # Its launcher was killed outright: nothing listens, and nothing will.
                path.unlink(missing_ok=True)
                path.with_suffix(".log").unlink(missing_ok=True)
                raise
            socket.send_fds(connection, [b"attach"], [lifeline_read])
            message, fds, _, _ = socket.recv_fds(connection, 4096, 2)
    except BaseException:
        os.close(lifeline_write)
        raise
    finally:
        os.close(lifeline_read)
    answer = json.loads(message or b"{}")
    if len(fds) != 2:
        for fd in fds:
            os.close(fd)
        os.close(lifeline_write)
        raise OSError(answer.get("error") or "the launcher handed over no pipes")
    manager = cgroup_manager()
    cgroup = manager.existing(name) if manager.available else None
    requests, events = os.fdopen(fds[0], "wb"), os.fdopen(fds[1], "rb")
    return SandboxProcess(requests, events, answer["launcher"], lifeline_write, cgroup, None, stderr_log=attach_dir() / f"{name}.log")
