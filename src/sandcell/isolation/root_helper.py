"""Root-side helper processes of the host: how they are started, and the launcher server (``launcher.serve``)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from typing import Any

from .image import PACKAGE_DIR


def root_helper_command(module: str, call: str) -> list[str]:
    """This host's Python running ``sandcell.isolation.<module>.<call>``, for a root-side helper.

    A helper (the launcher server, a fork server's starter) runs as root with
    ``-I -S``: nothing from site-packages, the user's site or ``PYTHONPATH``,
    only the stdlib and this package's own files. So bare packages stand in
    for ``sandcell/__init__.py`` and ``isolation/__init__.py``, and a helper
    loads only its module and what that imports: the real ones import the
    host API (``sandcell.sandbox``, which needs httpx from site-packages: it
    would not even import) and every isolation module (``launch`` and its
    imports), ~90 modules and ~110 ms more per start.
    """
    boot = (
        "import sys, types\n"
        f"for name, path in (('sandcell', {str(PACKAGE_DIR)!r}), ('sandcell.isolation', {str(PACKAGE_DIR / 'isolation')!r})):\n"
        "    sys.modules[name] = types.ModuleType(name); sys.modules[name].__path__ = [path]\n"
        f"import sandcell.isolation.{module} as helper; helper.{call}"
    )
    return [sys.executable, "-I", "-S", "-c", boot]


class LauncherServer:
    """The host's launcher server (``launcher.serve``), which forks one launcher per sandbox; started on first use."""

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
