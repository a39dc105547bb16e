"""Fork servers on the host side: find, or start, the one a policy's sandboxes are forked from.

A fork server (``sandcell.runtime.forkserver``) is a warm interpreter that
serves every host process of the machine that runs as root: its socket in
``/run/sandcell`` is reachable by root only. There is one per runtime image,
preloaded modules and seccomp filter, and it ends itself after ten minutes
without a sandbox. (A *template*, in sandcell as in E2B, is only ever the
name a sandbox is created from.)

Starting one takes a root helper (``spawn_main``, a separate process because
the host has threads): it creates the fork server's user namespace and maps
into it a range of host uids no one else uses (a slot, reserved by a lock
that the fork server and each of its sandboxes hold: a fork server that died
leaves its range to no other while its sandboxes live), so every sandbox of
the fork server gets a host uid of its own, then runs bubblewrap in it.

The namespace is created by an unprivileged uid of the slot's own (not by
root): the kernel charges what sandboxes of the fork server use of per-user
budgets (inotify instances, pending signals, namespaces) to the creator of
each enclosing user namespace, and host root's budgets must stay host root's.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sandcell.protocol import WORK_DIR
from sandcell.protocol.linux import CLONE_NEWUSER

from .image import Image
from .policy import Policy, base_env, filesystem_argv, runtime_command
from .root_helper import root_helper_command
from .run_dir import attach_dir
from .seccomp import compiled_filter

UID_BASE = 1 << 26  # far above the cold sandboxes' 600000 + 2**20
UID_SPAN = 1 << 20
UID_SLOTS = 256
FORK_SERVER_TMP_BYTES = 64 << 20
IDLE_EXIT = 600.0
START_TIMEOUT = 120.0


class ForkServerUnavailable(RuntimeError):
    """No fork server could be started; the caller starts its sandbox the cold way."""


@dataclass(frozen=True)
class RunningForkServer:
    """A fork server to fork from: its socket, and the host uid its namespace's uid 0 maps to."""

    socket: Path
    uid_base: int

    @property
    def uid_locks(self) -> Path:
        """Where the host reserves the uids of the fork server's sandboxes (see ``uids``)."""
        return self.socket.with_name(f"uids-{self.uid_base}.lock")


def owner_uid(uid_base: int) -> int:
    """The unprivileged host uid that creates the fork server's user namespace: one per slot, below every range."""
    return UID_BASE - 1 - (uid_base - UID_BASE) // UID_SPAN


_lock = threading.Lock()


def fork_server(image: Image, policy: Policy) -> RunningForkServer:
    """The running fork server for ``policy``, started if need be."""
    argv = fork_server_argv(image)
    # Whatever shapes the fork server is in its key: a change starts a new one.
    key = hashlib.sha256(json.dumps([argv, list(policy.preload), fork_server_config(image, policy)]).encode()).hexdigest()[:16]
    directory = attach_dir()
    path = directory / f"forkserver-{key}.sock"
    if not reachable(path):
        with _lock, open(directory / f"forkserver-{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one starter per machine, not only per process
            if not reachable(path):
                sweep(directory)
                start(argv, fork_server_config(image, policy), path, directory / f"forkserver-{key}.log")
    try:
        return RunningForkServer(path, int(path.with_suffix(".uids").read_text()))
    except (OSError, ValueError) as exc:
        raise ForkServerUnavailable(f"the fork server's uid range is not recorded: {exc}") from None


def sweep(directory: Path, min_age: float = 3600.0) -> None:
    """Remove the socket and log of fork servers that ended an hour ago or more (their locks stay: they are in use)."""
    for socket_path in directory.glob("forkserver-*.sock"):
        try:
            if time.time() - socket_path.stat().st_mtime > min_age and not reachable(socket_path):
                socket_path.unlink()
                socket_path.with_suffix(".log").unlink(missing_ok=True)
                socket_path.with_suffix(".uids").unlink(missing_ok=True)
        except OSError:
            continue


def reachable(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as probe:
        try:
            probe.connect(str(path))
            return True
        except OSError:
            return False


def take_uid_slot(directory: Path) -> tuple[int, int]:
    """A range of host uids for a new fork server: (base uid, fd of the lock that reserves it)."""
    for slot in range(UID_SLOTS):
        # Named as before fork servers were: a fork server that older code started holds these too.
        fd = os.open(directory / f"template-uids-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return UID_BASE + slot * UID_SPAN, fd
        except OSError:
            os.close(fd)
    raise ForkServerUnavailable(f"all {UID_SLOTS} fork server uid ranges are in use")


def fork_server_argv(image: Image) -> list[str]:
    """bubblewrap around the fork server: the sandboxes' file system, its own pid namespace, capabilities kept.

    Every installed template's packages are there: each sandbox covers those
    of the other templates (``hidden_templates``) before any of its code runs.
    """
    argv = ["bwrap", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--hostname", "sandbox", "--new-session", "--clearenv", "--cap-add", "ALL"]
    argv += filesystem_argv(image, FORK_SERVER_TMP_BYTES, tuple(image.installed_templates()))
    # Nothing skipped: every module it imports is the user's code's too (asyncio, http.client,
    # pandas decide at their import whether ssl, bz2 and lzma exist), and it imports them once.
    return [*argv, "--chdir", "/", "--", *runtime_command(image, "forkserver", skipped=())]


def hidden_templates(image: Image, template: str) -> list[str]:
    """What a sandbox of ``template`` forked from the fork server must not see: the other templates' packages."""
    return [str(image.template_mount(name)) for name in image.installed_templates() if name != template]


def fork_server_config(image: Image, policy: Policy) -> dict[str, object]:
    return {
        "uids": UID_SPAN,
        "seccomp": compiled_filter().hex(),
        "env": base_env(image, {}),
        "work_dir": WORK_DIR,
        "mpl_cache": str(image.mpl_cache),
        "preload": list(policy.preload),
        "idle_exit": IDLE_EXIT,
    }


def start(argv: list[str], config: dict[str, object], path: Path, log_path: Path) -> None:
    base, slot_fd = take_uid_slot(path.parent)
    path.with_suffix(".uids").write_text(str(base))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    path.unlink(missing_ok=True)
    listener.bind(str(path))
    os.chmod(path, 0o600)
    listener.listen(128)
    ready_read, ready_write = os.pipe()
    argv = [*argv, json.dumps({**config, "listener_fd": listener.fileno(), "ready_fd": ready_write, "uid_lock_fd": slot_fd})]
    try:
        with open(log_path, "ab") as log:
            helper = subprocess.Popen(
                [
                    *root_helper_command("forkserver", "spawn_main()"),
                    json.dumps({"argv": argv, "uid_base": base, "uid_span": UID_SPAN, "owner": owner_uid(base)}),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                pass_fds=(listener.fileno(), ready_write, slot_fd),
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                cwd="/",
                start_new_session=True,
            )
    finally:
        for fd in (ready_write, slot_fd):
            os.close(fd)
        listener.close()
    try:
        helper.wait(30)
        waiting = select.poll()
        waiting.register(ready_read, select.POLLIN)
        started = bool(waiting.poll(START_TIMEOUT * 1000)) and os.read(ready_read, 1) == b"r"
    finally:
        os.close(ready_read)
    if not started:
        tail = log_path.read_text(errors="replace").splitlines()[-5:] if log_path.exists() else []
        raise ForkServerUnavailable("the fork server did not start: " + " | ".join(tail))


def spawn_main() -> None:
    """The root helper: a user namespace mapping the uid range, created by the slot's owner uid, and bubblewrap in it."""
    config = json.loads(sys.argv[1])
    libc = ctypes.CDLL(None, use_errno=True)
    unshared_read, unshared_write = os.pipe()
    mapped_read, mapped_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(unshared_read)
            os.close(mapped_write)
            os.setgroups([])
            os.setresgid(config["owner"], config["owner"], config["owner"])
            os.setresuid(config["owner"], config["owner"], config["owner"])
            if libc.unshare(CLONE_NEWUSER) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUSER)")
            os.write(unshared_write, b"u")
            if os.read(mapped_read, 1) != b"m":
                os._exit(1)
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
            os.execvpe(config["argv"][0], config["argv"], {"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        except BaseException as exc:  # noqa: BLE001 - report anything, then die
            os.write(2, f"sandcell fork server: cannot start: {exc}\n".encode())
        os._exit(127)
    os.close(unshared_write)
    os.close(mapped_read)
    if os.read(unshared_read, 1) != b"u":
        sys.exit(1)
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{name}", "w") as handle:
            handle.write(f"0 {config['uid_base']} {config['uid_span']}\n")
    os.write(mapped_write, b"m")
