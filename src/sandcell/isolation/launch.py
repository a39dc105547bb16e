"""Start a sandbox (``launch``), or take over a detachable one an earlier host started (``attach``).

``launch(policy)`` turns a ``Policy`` into bubblewrap arguments, a cgroup, a
seccomp filter and an unprivileged host uid, starts the in-sandbox supervisor
through the root-side launcher (forked from the policy's fork server when
there is one), and returns a ``SandboxProcess`` whose stdin and stdout speak
``sandcell.protocol``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from typing import Any

from sandcell import protocol
from sandcell.protocol import HOME

from .cgroups import CgroupManager
from .forkserver import UID_SPAN, ForkServerUnavailable, RunningForkServer, fork_server, hidden_templates
from .image import Image
from .limits import PTYS
from .policy import Policy, bwrap_argv, supervisor_config
from .process import SandboxProcess
from .root_helper import launcher_server
from .run_dir import attach_dir
from .seccomp import filter_fd
from .uids import reserve_uid

HOST_UID_BASE = 600_000
HOST_UID_SPAN = 1 << 20


_manager: CgroupManager | None = None
_manager_lock = threading.Lock()


def cgroup_manager() -> CgroupManager:
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = CgroupManager()
            _manager.sweep()
        return _manager


def fork_servers_enabled() -> bool:
    """Sandboxes fork from a fork server unless ``SANDCELL_FORK_SERVER=0`` (then each starts its own bubblewrap)."""
    return os.environ.get("SANDCELL_FORK_SERVER", "1") != "0"


FORK_SERVER_RETRY = 600.0
_fork_server_failed_at: float | None = None


def fork_server_for(image: Image, policy: Policy) -> RunningForkServer | None:
    """The fork server to fork ``policy``'s sandbox from, or ``None`` to start it cold.

    A fork server that cannot start is not tried again for ten minutes: each
    try costs a failed start.
    """
    global _fork_server_failed_at
    if not fork_servers_enabled() or (_fork_server_failed_at is not None and time.monotonic() - _fork_server_failed_at < FORK_SERVER_RETRY):
        return None
    try:
        return fork_server(image, policy)
    except (ForkServerUnavailable, OSError) as exc:
        _fork_server_failed_at = time.monotonic()
        print(f"sandcell: sandboxes start without a fork server for now ({exc})", file=sys.stderr)
        return None


def launch(policy: Policy, name: str, image: Image | None = None, detachable: bool = False, orphan_grace: float = 600.0) -> SandboxProcess:
    """Start a sandbox; a ``detachable`` one survives this process for ``orphan_grace`` seconds, waiting for ``attach``."""
    image = image or Image()
    image.check()
    image.check_template(policy.template)
    manager = cgroup_manager()
    cgroup = manager.create(name, policy.limits) if manager.available else None
    root = os.geteuid() == 0
    server = fork_server_for(image, policy) if root and cgroup is not None else None
    host_uid: int | None
    if server is not None:
        host_uid, uid_lock = reserve_uid(server.uid_locks, server.uid_base, 1, UID_SPAN - 2)  # 0 is the fork server, the last its probe
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
    # The launcher starts the sandbox its own way (with the same uid) if the fork server has just gone.
    config.update(argv=bwrap_argv(image, policy, seccomp_fd, own_ptys=root), uid=host_uid, gid=host_uid, ptys=PTYS if root else None)
    if server is not None and host_uid is not None:
        # What the fork server's child learns after its fork, from the launcher: the
        # fork server itself never holds anything of one sandbox, for its later
        # children to find in their copy of its memory.
        setup = {
            "uid": host_uid - server.uid_base,
            "ptys": PTYS,
            "disk_bytes": policy.limits.disk_mb << 20,
            "home": HOME,
            "rlimits": supervisor["rlimits"],
            "hidden": hidden_templates(image, policy.template),
        }
        config["fork_server"] = {"socket": str(server.socket), "setup": setup}
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
