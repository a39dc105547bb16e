"""What one sandbox may do (``Policy``), and what follows from it: bubblewrap's arguments and the supervisor's config."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandcell.protocol import HOME, SANDBOX_UID, WORK_DIR

from .image import Image
from .limits import PENDING_SIGNALS, Limits
from .templates import DEFAULT_TEMPLATE, check_template

ETC_FROM_HOST = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime", "timezone", "fonts", "ssl", "mime.types", "protocols", "services")
# What Debian's R and JDK read from /etc (ldpaths, Renviron; java.security, jvm.cfg), when they are installed.
ETC_OF_LANGUAGES = ("R", "java-*-openjdk")


@dataclass(frozen=True)
class Policy:
    """Everything that decides what one sandbox can do.

    ``template`` (see ``templates``) is what the sandbox has installed.
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
    template: str = DEFAULT_TEMPLATE

    def __post_init__(self) -> None:
        check_template(self.template)


def site_dirs(image: Image, template: str) -> list[str]:
    """What a sandbox of ``template`` has on its Python path besides the base image's."""
    return [] if image.template_packages(template) is None else [str(image.template_mount(template))]


def base_env(image: Image, envs: dict[str, str], template: str | None = None) -> dict[str, str]:
    """The sandbox's environment; ``template`` puts its packages on ``PYTHONPATH`` (after the caller's own) and its scripts on ``PATH``."""
    extra = site_dirs(image, template) if template else []
    env = {
        "PATH": ":".join([str(image.python.parent), *(f"{path}/bin" for path in extra), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]),
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
    if extra:
        env["PYTHONPATH"] = ":".join([path for path in env.get("PYTHONPATH", "").split(":") if path] + extra)
    return env


def filesystem_argv(image: Image, disk_bytes: int, templates: tuple[str, ...]) -> list[str]:
    """The sandbox's file system as bubblewrap arguments: read-only system, image and ``templates``' packages, writable tmpfs."""
    binds = [("--ro-bind", "/usr", "/usr")]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            binds.append(("--symlink", os.readlink(path), str(path)))
        elif path.is_dir():
            binds.append(("--ro-bind", str(path), str(path)))
    binds += [("--ro-bind-try", f"/etc/{name}", f"/etc/{name}") for name in ETC_FROM_HOST]
    binds += [("--ro-bind", str(path), str(path)) for pattern in ETC_OF_LANGUAGES for path in sorted(Path("/etc").glob(pattern))]
    binds += [("--ro-bind", str(path), f"/etc/{path.name}") for path in sorted(image.etc.iterdir())]
    binds += [("--ro-bind", str(path), str(path)) for path in (image.home / "runtime", image.home / "node", image.mpl_cache, image.stage)]
    binds += [("--ro-bind", str(packages), str(image.template_mount(name))) for name in templates if (packages := image.template_packages(name)) is not None]
    # bwrap makes the skeleton's directories (/etc, /opt...) 0700: fine for a
    # cold sandbox, which owns them, not for a fork server's children, which don't.
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
        "amaro": str(image.amaro),
        "home": HOME,
        "work_dir": WORK_DIR,
        "mpl_cache": str(image.mpl_cache),
        "env": base_env(image, policy.envs, policy.template),
        "site_dirs": site_dirs(image, policy.template),
        "output_limit": limits.output_mb * 1024 * 1024,
        "memory_mb": limits.memory_mb,
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
    argv += filesystem_argv(image, policy.limits.disk_mb * 1024 * 1024, (policy.template,))
    if own_ptys:
        argv += ["--dev-bind", "/dev/pts", "/dev/pts"]  # over bubblewrap's own, which has no max=
    argv += ["--chdir", HOME, "--seccomp", str(seccomp_fd)]
    # The supervisor's config (envs included) is its first frame on stdin, never
    # in an argv or environment every host user can read in ps or /proc.
    argv += ["--", *runtime_command(image, "supervisor")]
    return argv


# What a cold sandbox's supervisor is kept from importing: asyncio and shutil import them
# only if they can, 1.7 MiB and 14 ms per sandbox (its Python contexts are another process).
SKIPPED_MODULES = ("ssl", "bz2", "lzma")


def runtime_command(image: Image, module: str, skipped: tuple[str, ...] = SKIPPED_MODULES) -> list[str]:
    """The image's Python running ``sandcell.runtime.<module>.main()``, kept from importing ``skipped``."""
    boot = (
        f"import sys; sys.modules.update(dict.fromkeys({skipped!r}))\n"
        f"sys.path.insert(0, {str(image.stage)!r}); from sandcell.runtime.{module} import main; main()"
    )
    return [str(image.python), "-E", "-s", "-c", boot]
