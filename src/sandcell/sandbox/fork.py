"""``Sandbox.fork()``: a second, independent sandbox with a copy of the live state.

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
import logging
import shlex
import uuid
import warnings
from typing import TYPE_CHECKING, Callable, Iterator, TypeVar

from sandcell.protocol import WORK_DIR, part_name

from . import operations as ops
from .connection import SyncStream, wait_answer
from .models import SandboxException

if TYPE_CHECKING:
    from .sync import Sandbox

log = logging.getLogger("sandcell.fork")

WORK = f"{WORK_DIR}/fork"
STEP_TIMEOUT = 300.0
PIPE_SIZE = 1024 * 1024  # the pipes to both supervisors, while the state moves
WRITE_WINDOW = 32  # parts (of about 1 MiB) sent to the new sandbox and not yet written: bounds its supervisor's memory

T = TypeVar("T")


def _python(sandbox: Sandbox, call: str) -> list[str]:
    """Run one of ``runtime/state_copy.py``'s functions silently (no history, no execution count); its stdout lines."""
    core = sandbox._core
    code = f"from sandcell.runtime import state_copy as __sandcell_state_copy\n__sandcell_state_copy.{call}"
    execution = sandbox._call(ops.RunCode(code, "python", None, {}, STEP_TIMEOUT, {}, core.oom_reason, core.policy.kill_grace, silent=True))
    if execution.error is not None:
        raise SandboxException(f"cannot fork the Python state: {execution.error.name}: {execution.error.value}")
    return "".join(execution.logs.stdout).splitlines()


def _run(sandbox: Sandbox, command: str) -> None:
    result = sandbox.commands.run(command, timeout=STEP_TIMEOUT)
    if result.exit_code:
        raise SandboxException(f"cannot fork the files: {command!r} failed: {result.stderr.strip()}")


class _Pipes:
    """Widen the pipes to a sandbox's supervisor for the copy (fewer wake-ups per MiB), and restore them after."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._restore: list[tuple[int, int]] = []
        process = sandbox._core.process
        for pipe in (getattr(process, "stdin", None), getattr(process, "stdout", None)):
            try:
                fd = pipe.fileno()  # type: ignore[union-attr]
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


def _download(sandbox: Sandbox, path: str, fifo: bool = False) -> Iterator[bytes]:
    """A file of the fork's own streaming out of ``sandbox`` as the host takes it (at most a
    window of it waits on the host), not through a link, and no larger than the sandbox
    can hold: its code may have put anything at the path."""
    limits = sandbox._core.policy.limits
    limit = (limits.memory_mb + limits.disk_mb) * 1024 * 1024  # the state is in memory (or mapped files), the archive on disk
    return sandbox._read_stream(ops.ReadFile(path, "stream", STEP_TIMEOUT, limit, follow=False, fifo=fifo))


def _upload(download: Iterator[bytes], target: Sandbox, path: str) -> None:
    """Write ``download`` into ``target`` as parts named by offset and size (``protocol.part_name``),
    one per chunk as it arrives: sent back to back, written concurrently, never joined on the host."""
    core = target._core
    core.ensure_running()
    writing: collections.deque[tuple[str, SyncStream, int]] = collections.deque()

    def written() -> None:
        part, stream, request_id = writing.popleft()
        wait_answer(core.connection, request_id, stream, STEP_TIMEOUT, f"cannot fork: writing {part}")

    offset = 0
    for chunk in download:
        if len(writing) >= WRITE_WINDOW:
            written()
        part = part_name(path, offset, len(chunk))
        offset += len(chunk)
        stream = SyncStream()
        writing.append((part, stream, core.connection.open({"op": "files.write", "path": part, "append": False}, chunk, stream)))
    while writing:
        written()


def fork_sandbox(source: Sandbox, start: Callable[[], T], sandbox_of: Callable[[T], Sandbox], discard: Callable[[T, str], None]) -> T:
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
                _python(sandbox_of(starting.result()), f"warm({names!r}, {state!r}, {STEP_TIMEOUT!r})")

            warming = threads.submit(warm)
            state_download = _download(source, state, fifo=True)  # reading the FIFO before anything writes it
            dumping = threads.submit(lambda: json.loads(_python(source, f"dump({state!r})")[-1])["left_behind"])

            def archive_download() -> Iterator[bytes]:
                _run(source, f"tar -C /home/user -cf {archive} .")
                return _download(source, archive)

            archiving = threads.submit(archive_download)
            target = sandbox_of(starting.result())  # what arrived meanwhile waits on the host
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
