"""Start a process tree inside namespaces, with limits, as an unprivileged uid.

``launch(policy)`` turns a ``Policy`` into bubblewrap arguments, a cgroup, a
seccomp filter and an unprivileged host uid, starts the in-sandbox supervisor
through the root-side launcher, and returns a ``SandboxProcess`` whose stdin
and stdout speak ``sandcell.protocol``.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .cgroups import Cgroup, CgroupManager
from .image import PACKAGE_DIR, SANDBOX_UID, Image, ImageMissing
from .limits import Limits
from .seccomp import filter_fd

__all__ = ["Limits", "Policy", "SandboxProcess", "launch", "ImageMissing"]

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


def bwrap_argv(image: Image, policy: Policy, seccomp_fd: int) -> list[str]:
    disk = str(policy.limits.disk_mb * 1024 * 1024)
    argv = ["bwrap", "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if not policy.network:
        argv.append("--unshare-net")
    argv += ["--disable-userns", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", "sandbox"]
    argv += ["--die-with-parent", "--new-session", "--clearenv", "--cap-drop", "ALL"]
    argv += ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            argv += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            argv += ["--ro-bind", str(path), str(path)]
    for name in ETC_FROM_HOST:
        argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    for path in sorted(image.etc.iterdir()):
        argv += ["--ro-bind", str(path), f"/etc/{path.name}"]
    for path in (image.home / "runtime", image.home / "node", image.mpl_cache, image.stage):
        argv += ["--ro-bind", str(path), str(path)]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    for writable, perms in (("/tmp", "1777"), (HOME, "0755"), ("/dev/shm", "1777")):
        argv += ["--size", disk, "--perms", perms, "--tmpfs", writable]
    # The skeleton bwrap builds (/, /etc, /opt, /dev...) is a tmpfs of its own,
    # writable by the sandbox's uid and outside disk_mb: freeze it. Only the
    # mounts above stay writable (the remount is not recursive).
    argv += ["--remount-ro", "/dev", "--remount-ro", "/"]
    argv += ["--chdir", HOME, "--seccomp", str(seccomp_fd)]
    limits = policy.limits
    config = {
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
        "rlimits": {"core": 0, "nofile": limits.open_files, "fsize": limits.disk_mb * 1024 * 1024, "nproc": limits.pids},
    }
    argv += ["--setenv", "SANDCELL_CONFIG", json.dumps(config)]
    boot = f"import sys; sys.path.insert(0, {str(image.stage)!r}); from sandcell.runtime.supervisor import main; main()"
    argv += ["--", str(image.python), "-E", "-s", "-c", boot]
    return argv


class SandboxProcess:
    """One running sandbox as the host sees it: pipes, cgroup, launcher."""

    def __init__(self, process: subprocess.Popen[bytes], lifeline: int, cgroup: Cgroup | None, host_uid: int | None) -> None:
        self.process = process
        self.cgroup = cgroup
        self.host_uid = host_uid
        self._lifeline = lifeline
        self._lock = threading.Lock()
        self.diagnostics: list[str] = []
        self._stderr_reader = threading.Thread(target=self._read_stderr, name="sandcell-diagnostics", daemon=True)
        self._stderr_reader.start()

    @property
    def stdin(self):  # type: ignore[no-untyped-def]
        return self.process.stdin

    @property
    def stdout(self):  # type: ignore[no-untyped-def]
        return self.process.stdout

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.diagnostics.append(line.decode(errors="replace").rstrip())
            del self.diagnostics[:-50]

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

    def kill(self, timeout: float = 10.0) -> None:
        """Kill every process of the sandbox and remove its cgroup."""
        with self._lock:
            if self._lifeline >= 0:
                os.close(self._lifeline)
                self._lifeline = -1
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.cgroup is not None and self.cgroup.exists():
            self.cgroup.kill()
            self.cgroup.remove()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


_manager: CgroupManager | None = None
_manager_lock = threading.Lock()


def cgroup_manager() -> CgroupManager:
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = CgroupManager()
            _manager.sweep()
        return _manager


def launch(policy: Policy, name: str, image: Image | None = None) -> SandboxProcess:
    image = image or Image()
    image.check()
    manager = cgroup_manager()
    cgroup = manager.create(name, policy.limits) if manager.available else None
    root = os.geteuid() == 0
    host_uid = HOST_UID_BASE + secrets.randbelow(HOST_UID_SPAN) if root else None
    seccomp_fd = filter_fd()
    lifeline_read, lifeline_write = os.pipe()
    os.set_inheritable(lifeline_write, False)
    config = {
        "name": name,
        "argv": bwrap_argv(image, policy, seccomp_fd),
        "cgroup_procs": cgroup.procs_files if cgroup else [],
        "v2": str(cgroup.v2) if cgroup and cgroup.v2 else None,
        "v1": {k: str(v) for k, v in cgroup.v1.items()} if cgroup else {},
        "uid": host_uid,
        "gid": host_uid,
        "lifeline_fd": lifeline_read,
        "seccomp_fd": seccomp_fd,
    }
    # The launcher runs per sandbox and must start fast: bare packages stand in
    # for sandcell/__init__.py and isolation/__init__.py, so it loads only
    # launcher.py and cgroups.py, not the host API (40 ms saved).
    boot = (
        "import sys, types\n"
        f"for name, path in (('sandcell', {str(PACKAGE_DIR)!r}), ('sandcell.isolation', {str(PACKAGE_DIR / 'isolation')!r})):\n"
        "    sys.modules[name] = types.ModuleType(name); sys.modules[name].__path__ = [path]\n"
        "from sandcell.isolation.launcher import main; main()"
    )
    try:
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", boot, json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(lifeline_read, seccomp_fd),
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            cwd="/",
            start_new_session=True,
        )
    except BaseException:
        os.close(lifeline_write)
        if cgroup:
            cgroup.remove()
        raise
    finally:
        os.close(lifeline_read)
        os.close(seccomp_fd)
    return SandboxProcess(process, lifeline_write, cgroup, host_uid)
