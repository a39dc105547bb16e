"""Copying the files a cell wrote under /home/user/outputs to the person's disk.

Nothing the sandbox says is taken on trust: its listing may name any path (a
subverted supervisor can answer ``/home/user/outputs/../../x``), an entry may
be a link, a FIFO or a device, and a file may claim any size. So a path is
used only if it lies inside the folder as written (no ``..``), only regular
files are read, links never followed, at most what the sandbox's disk holds,
and on the host no link below the output folder is followed either.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path, PurePosixPath

from sandcell.sandbox import Sandbox, SandboxException
from sandcell.sandbox.models import EntryInfo, FileType

OUTPUTS_DIR = "/home/user/outputs"
LIST_DEPTH = 20


def relative_path(path: str) -> PurePosixPath | None:
    """Where ``path`` lies under ``OUTPUTS_DIR``, or ``None`` if it is not plainly inside
    (``..``, ``.``, empty or NUL parts are refused, never normalised away)."""
    prefix = OUTPUTS_DIR + "/"
    if not path.startswith(prefix):
        return None
    parts = path[len(prefix) :].split("/")
    if any(part in ("", ".", "..") or "\0" in part for part in parts):
        return None
    return PurePosixPath(*parts)


def write_inside(root: Path, relative: PurePosixPath, chunks: Iterable[bytes]) -> int:
    """Write ``chunks`` to ``root / relative``; the bytes written.

    Every directory below ``root`` is made if missing and opened without
    following a link (``O_NOFOLLOW``); the file is written under a new name
    (``O_EXCL``) and renamed over the old one, which replaces a link there
    rather than writing through it.
    """
    root.mkdir(parents=True, exist_ok=True)
    directory = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in relative.parts[:-1]:
            try:
                os.mkdir(name, 0o755, dir_fd=directory)
            except FileExistsError:
                pass
            inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
            os.close(directory)
            directory = inner
        partial = f".{relative.name}.{secrets.token_hex(6)}.part"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=directory)
        written = 0
        try:
            with open(fd, "wb") as handle:
                for chunk in chunks:
                    handle.write(chunk)
                    written += len(chunk)
            os.replace(partial, relative.name, src_dir_fd=directory, dst_dir_fd=directory)
        except BaseException:
            os.unlink(partial, dir_fd=directory)
            raise
    finally:
        os.close(directory)
    return written


class OutputCopier:
    """Copies each version of each file under ``OUTPUTS_DIR`` once; says why it left any out."""

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = output_dir
        self._seen: dict[str, tuple[int, datetime]] = {}  # path -> (size, modified time) when last looked at

    def copy_new(self, sandbox: Sandbox) -> tuple[list[Path], list[str]]:
        """The files copied since the last call, and a line for each entry that was not."""
        if not sandbox.files.exists(OUTPUTS_DIR):
            return [], []
        budget = int(sandbox.get_info().limits["disk_mb"]) * 1024 * 1024  # /home/user cannot hold more
        saved: list[Path] = []
        refused: list[str] = []
        for entry in sandbox.files.list(OUTPUTS_DIR, depth=LIST_DEPTH):
            stamp = (entry.size, entry.modified_time)
            if (entry.type is FileType.DIR and entry.symlink_target is None) or self._seen.get(entry.path) == stamp:
                continue
            self._seen[entry.path] = stamp
            reason = self._refusal(entry, budget)
            relative = relative_path(entry.path)
            if reason is None and relative is not None:
                try:
                    budget -= write_inside(self.output_dir, relative, sandbox.files.read(entry.path, format="stream", limit=budget, follow_links=False))
                    saved.append(self.output_dir.joinpath(*relative.parts))
                    continue
                except (SandboxException, OSError) as exc:
                    reason = str(exc)
            refused.append(f"{entry.path!r} was not saved: {reason or 'its path is not inside ' + OUTPUTS_DIR}")
        return saved, refused

    @staticmethod
    def _refusal(entry: EntryInfo, budget: int) -> str | None:
        if entry.symlink_target is not None:
            return f"it is a link (to {entry.symlink_target!r}), and links are not followed"
        if entry.type is not FileType.FILE:
            return f"it is a {entry.type.value.replace('_', ' ')}, not a regular file"
        if entry.size > budget:
            return f"it is {entry.size} bytes, more than the sandbox's disk holds"
        return None
