"""State copying, behind ``Sandbox.fork()``: a second, independent sandbox with a copy of the live state.

No process is forked: the state is pickled in one sandbox and unpickled in the other.

Copied: the files under ``/home/user`` (as a tar archive), and the default
Python context's variables, functions, classes, imported modules and open
pyplot figures (as a pickle made and loaded inside the sandboxes: protocol 5
with numpy's memory out of band, dill for the session's own functions and
classes; see ``runtime/state_copy.py``). Not copied: the state of JavaScript and Bash
contexts and of extra Python contexts, running commands, and files outside
``/home/user``. Afterwards the two sandboxes share nothing.

The host only moves bytes, never unpickles them, and overlaps what it can:

1. the new sandbox starts (or is taken from a pool) while the source
   archives its files and pickles its state, and as soon as it runs it
   imports the packages the state needs (pandas...) while it reads the
   state as it arrives;
2. the state streams out of the source as it is pickled (into a FIFO its
   supervisor is already reading), through the host (which holds a few
   MiB of it at most: the source waits while the new sandbox starts), into
   parts (one per chunk) in the new sandbox, written concurrently; the
   archive of the files likewise;
3. the new sandbox unpacks the files, then unpickles the state.
"""

from __future__ import annotations

import collections
import concurrent.futures
import fcntl
import json
import shlex
import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import TypeVar

from sandcell.protocol import WORK_DIR, part_name

from . import operations as ops
from .backend import SandboxBackend
from .core import SandboxCore
from .exchange import SyncExchange
from .models import SandboxException, WriteInfo

WORK = f"{WORK_DIR}/fork"
STEP_TIMEOUT = 300.0
PIPE_SIZE = 1024 * 1024  # the pipes to both supervisors, while the state moves
WRITE_WINDOW = 32  # parts (of about 1 MiB) sent to the new sandbox and not yet written: bounds its supervisor's memory

T = TypeVar("T")


def _python(sandbox: SandboxBackend, call: str) -> list[str]:
    """Run one of ``runtime/state_copy.py``'s functions silently (no history, no execution count); its stdout lines."""
    code = f"from sandcell.runtime import state_copy as __sandcell_state_copy\n__sandcell_state_copy.{call}"
    run = ops.RunCode(code, "python", None, {}, STEP_TIMEOUT, {}, sandbox.policy.kill_grace, silent=True)
    execution = SyncExchange(sandbox, run).run()
    if execution.error is not None:
        raise SandboxException(f"cannot fork the Python state: {execution.error.name}: {execution.error.value}")
    return "".join(execution.logs.stdout).splitlines()


def _run(sandbox: SandboxBackend, command: str) -> None:
    """A shell command; a non-zero exit raises ``CommandExitException``."""
    SyncExchange(sandbox, ops.RunCommand(command, None, None, False, STEP_TIMEOUT)).run()


class _Pipes:
    """Widen the pipes to a sandbox's supervisor for the copy (fewer wake-ups per MiB), and restore them after."""

    def __init__(self, sandbox: SandboxBackend) -> None:
        self._restore: list[tuple[int, int]] = []
        if not isinstance(sandbox, SandboxCore):
            return  # a server's sandbox: its pipes are the server's
        for pipe in (sandbox.process.stdin, sandbox.process.stdout):
            try:
                fd = pipe.fileno()
                size = fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
                if size < PIPE_SIZE:
                    fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
                    self._restore.append((fd, size))
            except (AttributeError, OSError, ValueError):
                continue  # not a pipe, or the limit says no: the copy is only slower

    def restore(self) -> None:
        for fd, size in self._restore:
            try:
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
            except OSError:
                pass  # still holding more than the old size: keep the wide one


def _download(sandbox: SandboxBackend, path: str, fifo: bool = False) -> Iterator[bytes]:
    """A file of the fork's own streaming out of ``sandbox`` as the host takes it (at most a
    window of it waits on the host), not through a link, and no larger than the sandbox
    can hold: its code may have put anything at the path."""
    limits = sandbox.policy.limits
    limit = (limits.memory_mb + limits.disk_mb) * 1024 * 1024  # the state is in memory (or mapped files), the archive on disk
    read = ops.ReadFile(path, "stream", STEP_TIMEOUT, limit, follow=False, fifo=fifo)
    exchange = SyncExchange(sandbox, read)
    exchange.start()
    return exchange.chunks(read)


def _upload(download: Iterator[bytes], target: SandboxBackend, path: str) -> None:
    """Write ``download`` into ``target`` as parts named by offset and size (``protocol.part_name``),
    one per chunk as it arrives: sent back to back, written concurrently, never joined on the host."""
    writing: collections.deque[SyncExchange[WriteInfo]] = collections.deque()
    offset = 0
    try:
        for chunk in download:
            if len(writing) >= WRITE_WINDOW:
                writing.popleft().run()
            writing.append(SyncExchange(target, ops.write_part(part_name(path, offset, len(chunk)), chunk, True, STEP_TIMEOUT)))
            offset += len(chunk)
        while writing:
            writing.popleft().run()
    finally:
        for exchange in writing:  # after an error: the writes still under way
            exchange.close()


def copy_state(source: SandboxBackend, start: Callable[[], T], backend_of: Callable[[T], SandboxBackend], discard: Callable[[T, str], None]) -> T:
    """A new sandbox (``start()``) carrying a copy of ``source``'s files and Python state.

    ``start`` makes the new sandbox (blocking); it runs while the source
    packs its state. If the copy fails, the new sandbox goes to ``discard``
    and the error is raised. What could not be copied is named in a warning.
    """
    work = f"{WORK}-{uuid.uuid4().hex[:12]}"
    archive, state = f"{work}/home.tar", f"{work}/state"
    with concurrent.futures.ThreadPoolExecutor(10, thread_name_prefix="sandcell-fork") as threads:
        starting = threads.submit(start)
        pipes = [_Pipes(source)]
        try:
            names = json.loads(_python(source, f"begin({state!r})")[-1])  # makes the FIFO the state goes through

            def warm() -> None:
                # and start reading the state's parts as they arrive, while importing
                _python(backend_of(starting.result()), f"warm({names!r}, {state!r}, {STEP_TIMEOUT!r})")

            warming = threads.submit(warm)
            state_download = _download(source, state, fifo=True)  # reading the FIFO before anything writes it
            dumping = threads.submit(lambda: json.loads(_python(source, f"dump({state!r})")[-1])["left_behind"])

            def archive_download() -> Iterator[bytes]:
                _run(source, f"tar -C /home/user -cf {archive} .")
                return _download(source, archive)

            archiving = threads.submit(archive_download)
            target = backend_of(starting.result())  # what arrived meanwhile waits on the host
            pipes.append(_Pipes(target))

            def unpack() -> None:
                _upload(archiving.result(), target, archive)
                _run(target, f"cat {archive}.* | tar -C /home/user -xf - && rm -f {archive}.*")

            unpacking = threads.submit(unpack)

            def load() -> None:  # the files first (the state may import modules from them)
                warming.result()
                unpacking.result()
                _python(target, f"load({state!r}, {STEP_TIMEOUT!r})")

            loading = threads.submit(load)
            _upload(state_download, target, state)
            left_behind = dumping.result()
            unpacking.result()
            for pipe in pipes:
                pipe.restore()
            cleaning = threads.submit(_run, source, f"rm -rf {work}")
            loading.result()
            cleaning.result()
        except BaseException as exc:
            for pipe in pipes:
                pipe.restore()
            # A read of the FIFO that nothing will write would wait for ever: end it (if it still waits), then clean up.
            release = f"import os; os.close(os.open({state!r}, os.O_WRONLY | os.O_NONBLOCK))"
            threads.submit(_run, source, f"python -c {shlex.quote(release)} 2>/dev/null; rm -rf {work}")
            try:
                started = starting.result()
            except BaseException:  # noqa: BLE001 - the first error is the one to report
                raise exc from None
            discard(started, str(exc) or type(exc).__name__)  # also ends a load waiting for parts
            raise
    if left_behind:
        warnings.warn(f"the fork left behind what cannot be copied: {', '.join(left_behind)}", stacklevel=4)
    return starting.result()
