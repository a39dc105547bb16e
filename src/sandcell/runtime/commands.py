"""Shell commands inside the sandbox: started, streamed, fed stdin, signalled.

A command is ``/bin/bash -l -c CMD`` (what E2B's envd runs) leading its own
process group, so killing it kills what it started too.

Its output goes to every *subscriber*: the request that started it, and any
``command.connect`` request that attached later (E2B's Process/Connect). A
subscriber that leaves stops getting output; the command runs on.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

from sandcell.protocol import ENV_NAME

from .output import Emit, RunOutput

SHELL = ("/bin/bash", "-l", "-c")


class Command:
    def __init__(self, cmd: str, cwd: str, env: dict[str, str], requested_env: dict[str, str], tag: str | None) -> None:
        self.cmd = cmd
        self.cwd = cwd
        self.env = env
        self.requested_env = requested_env
        self.tag = tag
        self.process: asyncio.subprocess.Process | None = None
        self.started_at = time.time()
        self.subscribers: list[Emit] = []
        self.finished: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def describe(self) -> dict[str, Any]:
        """E2B's ProcessInfo: the program and its arguments as started, and the envs asked for."""
        return {
            "pid": self.pid,
            "cmd": SHELL[0],
            "args": [*SHELL[1:], self.cmd],
            "envs": self.requested_env,
            "cwd": self.cwd,
            "tag": self.tag,
            "started_at": self.started_at,
        }

    async def publish(self, header: dict[str, Any], data: bytes) -> None:
        for emit in list(self.subscribers):
            await emit(header, data)

    def signal_group(self, signum: int) -> None:
        """Signal what is left of the command's process group, even after bash exited.

        The group's id stays reserved while any member lives, so this cannot
        reach an unrelated process.
        """
        if self.process is None:
            return
        try:
            os.killpg(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def signal(self, signum: int) -> bool:
        if self.process is None or self.process.returncode is not None:
            return False
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            return False
        return True


class Commands:
    def __init__(self, base_env: dict[str, str], output_limit: int) -> None:
        self.base_env = base_env
        self.output_limit = output_limit
        self.running: dict[int, Command] = {}

    async def run(self, request: dict[str, Any], emit: Emit) -> dict[str, Any]:
        requested_env = dict(request.get("env") or {})
        env = {**self.base_env, **requested_env}
        for name in env:
            if not ENV_NAME.match(name):
                raise ValueError(f"invalid environment variable name {name!r}")
        cwd = request.get("cwd") or env.get("HOME", "/")
        command = Command(request["cmd"], cwd, env, requested_env, request.get("tag"))
        if not os.path.isdir(cwd):
            raise FileNotFoundError(f"working directory {cwd} does not exist")
        command.process = await asyncio.create_subprocess_exec(
            *SHELL,
            command.cmd,
            stdin=asyncio.subprocess.PIPE if request.get("stdin") else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        self.running[command.pid] = command
        command.subscribers.append(emit)
        await emit({"type": "started", "pid": command.pid}, b"")
        output = RunOutput(self.output_limit, command.publish)
        try:
            pumps = [
                asyncio.ensure_future(self._pump(command.process.stdout, "stdout", output)),
                asyncio.ensure_future(self._pump(command.process.stderr, "stderr", output)),
            ]
            timeout = request.get("timeout")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout if timeout else None
            try:
                exit_code = await asyncio.wait_for(command.process.wait(), timeout or None)
                timed_out = False
            except TimeoutError:
                command.signal(signal.SIGKILL)
                exit_code = await command.process.wait()
                timed_out = True
            # The timeout covers the output too: a process the command left
            # behind (`sleep 99 &`) keeps its stdout open after bash exits.
            _, pending = await asyncio.wait(pumps, timeout=None if deadline is None else max(deadline - loop.time(), 0.0))
            if pending:
                command.signal_group(signal.SIGKILL)
                _, pending = await asyncio.wait(pending, timeout=1.0)
                for pump in pending:  # held by a process outside the group (setsid)
                    pump.cancel()
                transport = getattr(command.process, "_transport", None)
                if transport is not None:
                    transport.close()
                timed_out = True
            await output.flush()
        except asyncio.CancelledError:
            command.signal(signal.SIGKILL)
            command.finished.cancel()  # connected subscribers end with "Cancelled"
            raise
        finally:
            self.running.pop(command.pid, None)
        result: dict[str, Any] = {"exit_code": exit_code, "timed_out": timed_out}
        if exit_code < 0:
            result["exit_code"] = 128 - exit_code
            result["error"] = f"killed by {signal.Signals(-exit_code).name}" if -exit_code in signal.valid_signals() else "killed"
        command.finished.set_result(result)
        return result

    async def connect(self, pid: int, timeout: float | None, emit: Emit) -> dict[str, Any]:
        """Stream a running command's output from now on; answer its exit like ``run``.

        The timeout bounds only this subscription: the command keeps running.
        """
        command = self.find(pid)
        command.subscribers.append(emit)
        try:
            await emit({"type": "started", "pid": pid}, b"")
            result = await asyncio.wait_for(asyncio.shield(command.finished), timeout)
        except TimeoutError:
            raise TimeoutError(f"stopped following command {pid} after {timeout:g} s; it is still running") from None
        finally:
            command.subscribers.remove(emit)
        return {**result, "timed_out": False}  # its own time limit was the starter's business

    async def _pump(self, stream: asyncio.StreamReader | None, kind: str, output: RunOutput) -> None:
        assert stream is not None
        while True:
            data = await stream.read(65536)
            if not data:
                return
            await output.write(kind, data)

    def find(self, pid: int) -> Command:
        try:
            return self.running[pid]
        except KeyError:
            raise ProcessLookupError(f"no running command with pid {pid}") from None

    async def send_stdin(self, pid: int, data: bytes, close: bool) -> None:
        process = self.find(pid).process
        assert process is not None
        if process.stdin is None:
            raise ValueError(f"command {pid} was started without stdin")
        if data:
            process.stdin.write(data)
            await process.stdin.drain()
        if close:
            process.stdin.close()

    def kill(self, pid: int, signum: int = signal.SIGKILL) -> bool:
        command = self.running.get(pid)
        return bool(command and command.signal(signum))

    def list(self) -> list[dict[str, Any]]:
        return [command.describe() for command in self.running.values()]

    async def stop_all(self) -> None:
        for command in list(self.running.values()):
            command.signal(signal.SIGKILL)
