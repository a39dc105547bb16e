"""A Python code context: an IPython shell driven over a JSON-lines channel.

Runs inside the sandbox as its own process. Requests arrive on fd 3, events
leave on fd 4; the code's own stdout and stderr stay on fds 1 and 2 so that
output of C extensions and child processes is captured too. Every event is
preceded by a flush of ``sys.stdout``/``sys.stderr``, and the supervisor
drains those pipes before forwarding an event, so output and results keep
their order.

IPython supplies what users expect from a notebook: the last expression is
the main result, ``display()`` works, and objects' rich representations
(``_repr_png_``, ``_repr_html_``...) are formatted by IPython's display
formatter. matplotlib uses the inline backend, whose post-execute hook turns
open figures into ``image/png`` results.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from . import wire_json

REQUESTS_FD = 3
EVENTS_FD = 4
TAKEN_WAIT = 5.0


class Channel:
    """The kernel's end of its JSON-lines channel (fds 3 and 4).

    Created unattached in a zygote, which builds the shell around it before
    any context exists; each forked context then attaches to its own fds.

    Output and events travel on different pipes, so their order is kept by
    a handshake: after an event that output may follow, the kernel waits
    for the supervisor's acknowledgement (an empty line on the request
    pipe). The supervisor drains the output pipes before it reads an event
    and acknowledges once it has read it, forwarding no output until the
    event is forwarded, so output printed before an event arrives before
    it, and output printed after, after.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._incoming = b""
        self.owner = -1

    def attach(self) -> None:
        self._events = os.fdopen(EVENTS_FD, "w", buffering=1, encoding="utf-8")
        self.owner = os.getpid()

    @property
    def forked(self) -> bool:
        """True in a child that the cell's code forked (``os.fork()``)."""
        return os.getpid() != self.owner

    def send(self, event: dict[str, Any]) -> None:
        if self.forked:
            return  # only the kernel itself speaks for the context
        line = wire_json.dumps(event) + "\n"
        with self._lock:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:  # noqa: S110, BLE001 - user code may have replaced or closed them, and theirs may raise anything
                    pass
            self._events.write(line)
            self._events.flush()
            if event["type"] not in ("ready", "done"):  # nothing of this cell can follow those
                self._await_acknowledgement()

    def _await_acknowledgement(self) -> None:
        deadline = time.monotonic() + TAKEN_WAIT
        while not self._incoming.startswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([REQUESTS_FD], [], [], left)[0]:
                return  # a stalled supervisor: give up on ordering rather than hang
            chunk = os.read(REQUESTS_FD, 65536)
            if not chunk:
                return
            self._incoming += chunk
        self._incoming = self._incoming[1:]

    def receive(self) -> dict[str, Any] | None:
        """The next request; acknowledgements that came too late to be waited for are skipped."""
        while True:
            line, newline, rest = self._incoming.partition(b"\n")
            if newline:
                self._incoming = rest
                if line.strip():
                    request: dict[str, Any] = json.loads(line)
                    return request
                continue
            chunk = os.read(REQUESTS_FD, 65536)
            if not chunk:
                return None
            self._incoming += chunk


def _jsonable(format_dict: dict[str, Any]) -> dict[str, Any]:
    data = {}
    for mime, value in format_dict.items():
        if isinstance(value, bytes):  # IPython gives raw bytes for some image types
            import base64

            data[mime] = base64.b64encode(value).decode()
        else:
            data[mime] = value
    return data


def build_shell(channel: Channel) -> Any:
    from IPython.core.displayhook import DisplayHook
    from IPython.core.displaypub import DisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets import Type
    from traitlets.config import Config

    from . import formatters, pil_images

    class ChannelDisplayHook(DisplayHook):
        """Sends the value of the cell's last expression as the main result."""

        def write_output_prompt(self) -> None:
            pass

        def write_format_data(self, format_dict: dict[str, Any], md_dict: Any = None) -> None:
            channel.send({"type": "result", "data": _jsonable(format_dict), "main": True})

        def finish_displayhook(self) -> None:
            pass

    class ChannelDisplayPublisher(DisplayPublisher):
        """Sends ``display()`` calls and inline figures as extra results."""

        def publish(
            self, data: dict[str, Any], metadata: Any = None, source: Any = None, *, transient: Any = None, update: bool = False, **kwargs: Any
        ) -> None:
            channel.send({"type": "result", "data": _jsonable(data), "main": False})

        def clear_output(self, wait: bool = False) -> None:
            pass

    class SandboxShell(InteractiveShell):
        displayhook_class = Type(ChannelDisplayHook)
        display_pub_class = Type(ChannelDisplayPublisher)

        def _showtraceback(self, etype: Any, evalue: Any, stb: list[str]) -> None:
            channel.send(
                {
                    "type": "error",
                    "name": getattr(etype, "__name__", str(etype)),
                    "value": str(evalue),
                    "traceback": "\n".join(stb),
                }
            )

        def enable_gui(self, gui: Any = None) -> None:
            pass

        def system(self, cmd: str) -> None:
            """``!cmd``: a plain pipe, not IPython's pty (which turns \\n into \\r\\n)."""
            import subprocess

            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            command = self.var_expand(cmd, depth=1)  # type: ignore[no-untyped-call]  # unannotated in IPython
            status = subprocess.call(command, shell=True, executable="/bin/bash")  # noqa: S602 - ``!cmd`` is a shell line by definition
            self.user_ns["_exit_code"] = status

    # No history database: it would start a saving thread, and a zygote must
    # hold no thread when it forks. Long lists are shown whole, as E2B's
    # kernel config has it.
    config = Config({"HistoryManager": {"enabled": False, "hist_file": ":memory:"}, "PlainTextFormatter": {"max_seq_length": 0}})
    shell = SandboxShell.instance(config=config, colors="nocolor", history_length=0)
    formatters.register(shell)
    pil_images.install()
    return shell


def _ignore(signum: int, frame: Any) -> None:
    """Between cells SIGINT does nothing (a handler, not SIG_IGN, which children would inherit)."""


class Interrupts:
    """SIGINT interrupts the running cell only; between cells it is ignored.

    While a cell runs the handler is Python's own C-level one, so the
    KeyboardInterrupt traceback ends in the user's code, not in sandcell's.
    """

    def __init__(self) -> None:
        signal.signal(signal.SIGINT, _ignore)

    @property
    def running(self) -> bool:
        return signal.getsignal(signal.SIGINT) is signal.default_int_handler

    @running.setter
    def running(self, value: bool) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler if value else _ignore)


def run_cell(shell: Any, channel: Channel, interrupts: Interrupts, request: dict[str, Any]) -> None:
    # The cell's environment (the run's ``env`` and whatever the code sets)
    # is undone afterwards. Compared as os.environ's own bytes mapping (a C
    # dict copy), so a cell that leaves it alone costs no putenv at all.
    environ = os.environ
    saved_env = environ._data.copy()  # type: ignore[attr-defined]  # CPython's private bytes mapping, not in typeshed
    if request.get("env"):
        environ.update(request["env"])
    status = "ok"
    try:
        interrupts.running = True
        try:
            silent = bool(request.get("silent"))
            outcome = shell.run_cell(request["code"], store_history=not silent, silent=silent)
        finally:
            interrupts.running = False
        if not outcome.success:
            status = "error"
    except KeyboardInterrupt:  # arrived between IPython's own handlers
        status = "error"
        channel.send({"type": "error", "name": "KeyboardInterrupt", "value": "", "traceback": "KeyboardInterrupt"})
    finally:
        if environ._data != saved_env:  # type: ignore[attr-defined]  # (as above)
            decode_key, decode_value = environ.decodekey, environ.decodevalue
            environ.clear()
            environ.update({decode_key(key): decode_value(value) for key, value in saved_env.items()})
    channel.send({"type": "done", "status": status, "execution_count": shell.execution_count - 1})


def line_buffered_output() -> None:
    # Whole lines, not one write per print() argument: ``print("x")`` is one
    # chunk of output. Every event flushes first, so nothing waits past a cell.
    for stream in (sys.stdout, sys.stderr):
        assert isinstance(stream, io.TextIOWrapper)  # the interpreter's own: no cell has run yet
        stream.reconfigure(line_buffering=True, write_through=False)


def serve(shell: Any, channel: Channel) -> None:
    """Run cells until the supervisor closes the channel."""
    line_buffered_output()
    interrupts = Interrupts()
    channel.send({"type": "ready"})
    while True:
        request = channel.receive()
        if request is None:
            return
        run_cell(shell, channel, interrupts, request)
        if channel.forked:
            # A child forked by the cell's code finished the cell instead of
            # exiting: it must not become a second kernel reading requests.
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:  # noqa: S110, BLE001 - the cell's streams, whatever they raise, must not keep this child alive
                    pass
            os._exit(0)


def main(site_dirs: list[str] | None = None) -> None:
    add_site_dirs(site_dirs or [])
    channel = Channel()
    channel.attach()
    serve(build_shell(channel), channel)


ZYGOTE_FD = 3


def _become_context(fds: list[int], request: dict[str, Any]) -> None:
    """In a freshly forked child: take the context's fds, cwd and environment."""
    requests, events, stdout, stderr = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in fds)
    devnull = os.open(os.devnull, os.O_RDONLY)
    for source, target in ((devnull, 0), (stdout, 1), (stderr, 2), (requests, REQUESTS_FD), (events, EVENTS_FD)):
        os.dup2(source, target)
    os.closerange(EVENTS_FD + 1, os.sysconf("SC_OPEN_MAX"))
    os.setsid()
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    add_site_dirs(request.get("site_dirs") or [])


def add_site_dirs(paths: list[str]) -> None:
    """Put a template's packages on ``sys.path``, after the image's: a context forked from a
    zygote of the base image gets them here, at its start, as a cold one does."""
    import site

    for path in paths:
        if path not in sys.path:
            site.addsitedir(path)


def preload_modules(names: list[str]) -> None:
    """Import ``names`` into the zygote, so a context's first ``import pandas`` is a lookup.

    After the shell is built: matplotlib's inline backend hooks into the shell
    it finds. One that fails to import is left to fail in the user's code.
    """
    import importlib

    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - a broken package must not take the zygote down
            print(f"sandcell zygote: cannot preload {name}: {exc}", file=sys.stderr)


def warm_up(preload: list[str]) -> tuple[Channel, Any]:
    """What every zygote holds before it forks: an unattached channel, a shell around it, ``preload`` imported."""
    channel = Channel()
    shell = build_shell(channel)
    preload_modules(list(FIRST_CELL_IMPORTS) + preload)
    return channel, shell


# What IPython imports lazily on a shell's first cell and first traceback:
# imported once in the zygote, not again (and privately) in every context.
FIRST_CELL_IMPORTS = ("IPython.core.logger", "stack_data", "pygments.formatters.terminal256", "bdb", "decimal", "hashlib", "html")


def zygote_main(preload: list[str] | None = None) -> None:
    """Keep a warm interpreter (IPython imported, a shell built, ``preload`` imported) and fork contexts from it."""
    from .hardening import set_dumpable, set_name

    set_dumpable(False)
    set_name("sandcell-zygote")
    channel, shell = warm_up(preload or [])
    serve_forks(ZYGOTE_FD, channel, shell)
    os._exit(0)


def serve_forks(link_fd: int, channel: Channel, shell: Any, watched: int | None = None, reaped: Callable[[int, int], None] | None = None) -> bool:
    """Fork contexts on request, for as long as the supervisor holds the link.

    The supervisor sends, over a SOCK_SEQPACKET socket, a JSON request
    (cwd, env) with the new context's four fds; the answer is the child's pid.
    As the children's parent, we reap them and report how they ended (every
    child we reap goes to ``reaped`` too). A child is ready in milliseconds
    and shares our pages copy-on-write.

    Returns ``True`` once the supervisor has closed the link, ``False`` as
    soon as ``watched`` is readable.
    """
    import socket

    link = socket.socket(fileno=link_fd)
    contexts: set[int] = set()
    wakeup_read, wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wakeup_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # only so that it writes to the wake-up pipe
    waiting = select.poll()
    for fd in (link.fileno(), wakeup_read, watched):
        if fd is not None:
            waiting.register(fd, select.POLLIN)
    while True:
        ready = {fd for fd, _ in waiting.poll()}
        if wakeup_read in ready:
            os.read(wakeup_read, 512)
            for pid, status in reap_children():
                if pid in contexts:
                    contexts.discard(pid)
                    _send(link, {"exited": pid, "status": status})
                if reaped is not None:
                    reaped(pid, status)
        if watched is not None and watched in ready:
            return False
        if link.fileno() in ready and not _fork_context(link, channel, shell, contexts):
            return True


def reap_children() -> list[tuple[int, int]]:
    """Every child that has ended, with its exit code; none is waited for."""
    ended: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return ended
        if not pid:
            return ended
        ended.append((pid, os.waitstatus_to_exitcode(status)))


def _send(link: Any, message: dict[str, Any]) -> None:
    try:
        link.send(json.dumps(message).encode())
    except OSError:
        pass  # the supervisor is gone; its end of the link tells us soon


def _fork_context(link: Any, channel: Channel, shell: Any, contexts: set[int]) -> bool:
    """Answer one request of the supervisor; ``False`` once it has closed the link."""
    import socket

    from .hardening import set_command_line, set_dumpable, set_name

    try:
        message, fds, _, _ = socket.recv_fds(link, 65536, 4)
    except OSError:
        return False
    if not message:
        return False
    try:
        pid = os.fork()
    except OSError as exc:  # e.g. the sandbox's pids limit: refuse this one, stay alive
        for fd in fds:
            os.close(fd)
        _send(link, {"error": str(exc)})
        return True
    if pid == 0:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        try:
            link.close()
            set_dumpable(True)
            set_name(os.path.basename(sys.executable))
            set_command_line(sys.executable)
            _become_context(fds, json.loads(message))
            reseed_numpy()
            channel.attach()
            serve(shell, channel)
        finally:
            os._exit(0)
    for fd in fds:
        os.close(fd)
    contexts.add(pid)
    _send(link, {"pid": pid})
    return True


def reseed_numpy() -> None:
    """Give a forked context its own ``numpy.random`` stream.

    numpy seeds its global generator once, at import; every context forked
    from the same zygote (or fork server) would otherwise draw the same numbers.
    ``random`` reseeds itself after a fork.
    """
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        try:
            numpy.random.seed()
        except Exception:  # noqa: S110, BLE001 - a broken numpy is the user's to find
            pass


if __name__ == "__main__":
    main()
