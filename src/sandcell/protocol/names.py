"""Names the host and the sandbox must agree on: who the sandbox's user is, where it lives, what it accepts."""

from __future__ import annotations

import re

# The user code runs as inside every sandbox (its host uid differs per sandbox).
SANDBOX_USER = "user"
SANDBOX_UID = 1000
HOME = "/home/user"
# The sandbox's scratch space of sandcell's own (cells, caches, state copies).
WORK_DIR = "/tmp/.sandcell"

# The environment variable names a sandbox accepts (a shell's), checked by the
# host where a request enters and by the supervisor again.
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def part_name(path: str, offset: int, size: int) -> str:
    """The part of ``path`` holding ``size`` bytes from ``offset``: how the host names the
    parts of a state copy it uploads, and the names ``runtime/state_copy.py``'s ``load`` waits for."""
    return f"{part_prefix(path, offset)}{size}"


def part_prefix(path: str, offset: int) -> str:
    """What the name of ``path``'s part from ``offset`` starts with, whatever its size."""
    return f"{path}.{offset:012d}-"
