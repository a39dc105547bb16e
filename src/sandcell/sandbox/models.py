"""What users get back: the shapes of ``e2b_code_interpreter``'s models.

One result model serves the Python API, the native HTTP API and the
E2B-compatible API, so every field here has a plain JSON form.
"""

from __future__ import annotations

import datetime
import enum
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from sandcell.isolation.templates import DEFAULT_TEMPLATE

MIME_FIELDS = {
    "text/plain": "text",
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/pdf": "pdf",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
    "e2b/data": "data",
    "e2b/chart": "chart",
}


# -- errors ---------------------------------------------------------------------
class SandboxException(Exception):
    """Base of every error sandcell raises."""


class TimeoutException(SandboxException):
    """A request or the sandbox itself ran out of time."""


class NotFoundException(SandboxException):
    """A file, context, process or sandbox that does not exist."""


class InvalidArgumentException(SandboxException, ValueError):
    """The request itself is wrong: bad path, unknown language, bad limits, bad envs."""


class NotEnoughSpaceException(SandboxException):
    """The sandbox's writable area is full."""


class SandboxDiedException(SandboxException):
    """The sandbox stopped (killed, timed out, or crashed) while in use."""


class SandboxPausedException(SandboxException):
    """The sandbox is paused: ``resume()`` it before sending it requests."""


# -- host figures ---------------------------------------------------------------
@dataclass(frozen=True)
class HostUsage:
    """The host-side half of ``SandboxMetrics`` (the sandbox reports its disk)."""

    cpu_count: int
    cpu_used_pct: float
    mem_used: int
    mem_total: int
    mem_cache: int


# -- code execution -------------------------------------------------------------
@dataclass
class OutputMessage:
    """One chunk of stdout or stderr, as streamed to ``on_stdout``/``on_stderr``."""

    line: str
    timestamp: int
    error: bool = False

    def __str__(self) -> str:
        return self.line


def unquoted(text: str) -> str:
    """A string's repr without its quotes, as E2B's server gives the text of every result (``'a'`` -> ``a``)."""
    if (text.startswith("'") and text.endswith("'")) or (text.startswith('"') and text.endswith('"')):
        return text[1:-1]
    return text


class Result:
    """One rich output: the main result of a cell, or a ``display()``/figure.

    The fields are E2B's: ``text`` (a string's without its quotes), ``html``,
    ``png``..., ``json`` (lists and dicts too), ``data`` (a DataFrame's
    columns), ``chart`` (a figure's chart description, a dict), and ``extra``
    for any other MIME type. ``bundle`` is the MIME bundle as the kernel
    gave it (``text/plain`` with its quotes), as a notebook keeps it.
    """

    def __init__(self, bundle: dict[str, Any], is_main_result: bool = False) -> None:
        self.bundle = dict(bundle)
        self.is_main_result = is_main_result
        self.extra: dict[str, Any] = {}
        for field_name in MIME_FIELDS.values():
            setattr(self, field_name, None)
        for mime, value in self.bundle.items():
            if mime in MIME_FIELDS:
                setattr(self, MIME_FIELDS[mime], value)
            else:
                self.extra[mime] = value
        if isinstance(self.text, str):
            self.text = unquoted(self.text)

    text: str | None
    html: str | None
    markdown: str | None
    svg: str | None
    png: str | None
    jpeg: str | None
    pdf: str | None
    latex: str | None
    json: Any
    javascript: str | None
    data: dict[str, list[Any]] | None
    chart: dict[str, Any] | None

    def formats(self) -> list[str]:
        """The available representations, e.g. ``["text", "png", "chart"]``."""
        return [MIME_FIELDS.get(mime, mime) for mime in self.bundle]

    def to_dict(self) -> dict[str, Any]:
        """E2B's form: one key per field that is set, ``extra`` and ``is_main_result`` always."""
        fields = {name: getattr(self, name) for name in MIME_FIELDS.values() if getattr(self, name) is not None}
        return {**fields, "extra": self.extra, "is_main_result": self.is_main_result}

    def __repr__(self) -> str:
        return f"Result({', '.join(self.formats())}{', main' if self.is_main_result else ''})"

    def __str__(self) -> str:
        return self.text or repr(self)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return self.bundle


@dataclass
class Logs:
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)


@dataclass
class ExecutionError:
    """An error raised by the code (or a limit hit while running it)."""

    name: str
    value: str
    traceback: str

    def to_json(self) -> str:
        return json.dumps(asdict(self))


@dataclass
class Execution:
    results: list[Result] = field(default_factory=list)
    logs: Logs = field(default_factory=Logs)
    error: ExecutionError | None = None
    execution_count: int | None = None

    @property
    def text(self) -> str | None:
        """The text of the main result (the value of the last expression)."""
        for result in self.results:
            if result.is_main_result:
                return result.text
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "results": [result.to_dict() for result in self.results],
            "logs": asdict(self.logs),
            "error": asdict(self.error) if self.error else None,
            "execution_count": self.execution_count,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


@dataclass(frozen=True)
class Context:
    """A code context: its own interpreter state, language and working dir."""

    id: str
    language: str
    cwd: str

    @property
    def context_id(self) -> str:
        return self.id


# -- commands ---------------------------------------------------------------------
@dataclass
class CommandResult:
    stdout: str
    stderr: str
    exit_code: int
    error: str | None = None


class CommandExitException(SandboxException, CommandResult):
    """A command exited with a non-zero status; carries its output."""

    def __init__(self, result: CommandResult) -> None:
        CommandResult.__init__(self, result.stdout, result.stderr, result.exit_code, result.error)
        SandboxException.__init__(
            self,
            f"command exited with code {result.exit_code}"
            + (f" ({result.error})" if result.error else "")
            + (f": {result.stderr.strip()[-500:]}" if result.stderr.strip() else ""),
        )


@dataclass(frozen=True)
class ProcessInfo:
    """A running command, as E2B's ``commands.list()`` describes it.

    ``cmd`` and ``args`` are the program as started (``/bin/bash``,
    ``["-l", "-c", "<the command>"]``); ``envs`` holds only the variables the
    caller asked for, not the sandbox's whole environment.
    """

    pid: int
    tag: str | None
    cmd: str
    args: list[str]
    envs: dict[str, str]
    cwd: str | None


# -- files ------------------------------------------------------------------------
class FileType(str, enum.Enum):  # noqa: UP042 - str() stays ``FileType.DIR``, as E2B's enum gives
    """What an entry is; a link is described as what it points to (``symlink_target`` is set),
    as ``SYMLINK`` only when that is nothing. E2B knows only files and directories."""

    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    FIFO = "fifo"
    SOCKET = "socket"
    CHAR_DEVICE = "char_device"
    BLOCK_DEVICE = "block_device"


@dataclass(frozen=True)
class WriteInfo:
    name: str
    type: FileType
    path: str


@dataclass(frozen=True)
class EntryInfo:
    name: str
    type: FileType
    path: str
    size: int
    mode: int
    permissions: str
    owner: str
    group: str
    modified_time: datetime.datetime
    symlink_target: str | None = None

    @classmethod
    def from_wire(cls, raw: dict[str, Any]) -> EntryInfo:
        return cls(
            name=raw["name"],
            type=FileType(raw["type"]),
            path=raw["path"],
            size=raw["size"],
            mode=raw["mode"],
            permissions=raw["permissions"],
            owner=raw["owner"],
            group=raw["group"],
            modified_time=datetime.datetime.fromisoformat(raw["modified_time"]),
            symlink_target=raw.get("symlink_target"),
        )


class FilesystemEventType(str, enum.Enum):  # noqa: UP042 - str() stays ``FilesystemEventType.CREATE``, as E2B's enum gives
    """What happened to a path in a watched directory (envd's kinds, from inotify)."""

    CHMOD = "chmod"
    CREATE = "create"
    REMOVE = "remove"
    RENAME = "rename"
    WRITE = "write"


@dataclass(frozen=True)
class FilesystemEvent:
    """One event of ``files.watch_dir``; ``name`` is relative to the watched directory."""

    name: str
    type: FilesystemEventType


@dataclass(frozen=True)
class SandboxInfo:
    sandbox_id: str
    started_at: datetime.datetime
    end_at: datetime.datetime | None
    envs: dict[str, str]
    metadata: dict[str, str]
    limits: dict[str, Any]
    state: str = "running"
    """``running`` or ``paused``; while paused, ``end_at`` is when the sandbox would end if resumed now."""
    template: str = DEFAULT_TEMPLATE


@dataclass(frozen=True)
class SandboxMetrics:
    """E2B's SandboxMetrics: one sample of what the sandbox uses.

    ``cpu_used_pct`` is the share of the sandbox's CPU allowance used since
    the previous sample (or since start); memory counts the sandbox's
    processes and its in-memory files; disk is ``/home/user``.
    """

    cpu_count: int
    cpu_used_pct: float
    mem_used: int
    mem_total: int
    mem_cache: int
    disk_used: int
    disk_total: int
    timestamp: datetime.datetime
