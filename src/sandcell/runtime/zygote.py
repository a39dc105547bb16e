"""The supervisor's side of the Python zygote: new Python contexts are forks.

A zygote (``python_kernel.zygote_main``) is an interpreter with IPython
imported and a shell built but no user state. Forking it gives a context in
a few milliseconds instead of a fresh start, and the context shares the
zygote's pages copy-on-write. The zygote is the forked contexts' parent, so
it reports their exit statuses; a pidfd per context notices the exit even if
the zygote itself is gone.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import json
import os
import signal
import socket
from typing import Any

FORK_TIMEOUT = 15.0
STATUS_WAIT = 0.5


class ForkedProcess:
    """What ``Context`` needs of a process (pid, returncode, wait) for a forked one."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.reported: int | None = None
        self._exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._settling: asyncio.Task[None] | None = None  # held: the loop keeps only a weak reference to a task
        self._watch()

    def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            pidfd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            loop.call_soon(self._start_settling)
            return

        def on_exit() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            self._start_settling()

        loop.add_reader(pidfd, on_exit)

    def _start_settling(self) -> None:
        self._settling = asyncio.ensure_future(self._settle())

    async def _settle(self) -> None:
        """The process is gone: take the zygote's report of how it ended."""
        for _ in range(int(STATUS_WAIT / 0.01)):
            if self.reported is not None:
                break
            await asyncio.sleep(0.01)
        self._finish(self.reported if self.reported is not None else -signal.SIGKILL)

    def _finish(self, status: int) -> None:
        if not self._exited.done():
            self.returncode = status
            self._exited.set_result(status)

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)


class PythonZygote:
    def __init__(self, command: list[str], env: dict[str, str], cwd: str) -> None:
        self.command = command
        self.env = env
        self.cwd = cwd
        self.alive = False
        self._link: socket.socket | None = None
        self._pending: collections.deque[asyncio.Future[int]] = collections.deque()
        self._children: dict[int, ForkedProcess] = {}
        self._early: dict[int, int] = {}
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)

        def wire_fd() -> None:
            os.dup2(fcntl.fcntl(theirs.fileno(), fcntl.F_DUPFD, 10), 3)

        await asyncio.create_subprocess_exec(
            *self.command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            env=self.env,
            cwd=self.cwd,
            pass_fds=(3,),
            preexec_fn=wire_fd,
            start_new_session=True,
        )
        theirs.close()
        self.adopt(ours)

    def adopt(self, link: socket.socket) -> None:
        """Take a zygote already running at the other end of ``link`` (a sandbox forked from a fork server)."""
        link.setblocking(False)
        self._link = link
        self.alive = True
        asyncio.get_running_loop().add_reader(link.fileno(), self._receive)

    def _receive(self) -> None:
        assert self._link is not None
        while True:
            try:
                message = self._link.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                message = b""
            if not message:
                self._lost()
                return
            self._handle(json.loads(message))

    def _handle(self, message: dict[str, Any]) -> None:
        if "pid" in message or "error" in message:
            if self._pending:
                answer = self._pending.popleft()
                if "pid" in message:
                    answer.set_result(message["pid"])
                else:
                    answer.set_exception(OSError(f"the Python zygote cannot fork: {message['error']}"))
        elif "exited" in message:
            child = self._children.pop(message["exited"], None)
            if child is None:
                self._early[message["exited"]] = message["status"]
            else:
                child.reported = message["status"]

    def _lost(self) -> None:
        self.alive = False
        assert self._link is not None
        asyncio.get_running_loop().remove_reader(self._link.fileno())
        self._link.close()
        while self._pending:
            self._pending.popleft().set_exception(RuntimeError("the Python zygote exited"))

    async def fork(self, fds: list[int], cwd: str, env: dict[str, str], site_dirs: tuple[str, ...] = ()) -> ForkedProcess:
        """A new context process on ``fds`` (requests, events, stdout, stderr), with ``site_dirs`` on its ``sys.path``."""
        async with self._lock:
            if not self.alive or self._link is None:
                raise RuntimeError("the Python zygote is not running")
            answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self._pending.append(answer)
            socket.send_fds(self._link, [json.dumps({"cwd": cwd, "env": env, "site_dirs": list(site_dirs)}).encode()], fds)
            try:
                pid = await asyncio.wait_for(answer, FORK_TIMEOUT)
            except TimeoutError:
                self.stop()  # a stuck zygote: contexts start the slow way from now on
                raise RuntimeError("the Python zygote did not answer") from None
        child = ForkedProcess(pid)
        if pid in self._early:
            child.reported = self._early.pop(pid)
        else:
            self._children[pid] = child
        return child

    def stop(self) -> None:
        if self._link is not None and self.alive:
            self._lost()
