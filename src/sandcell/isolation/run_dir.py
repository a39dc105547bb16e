"""The host's root-only (or user-only) run directory: launchers' and fork servers' sockets, uid locks, logs."""

from __future__ import annotations

import os
from pathlib import Path


def attach_dir() -> Path:
    """Where detachable sandboxes' launchers listen: only this host user can reach it."""
    base = Path("/run") if os.geteuid() == 0 else Path(os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/sandcell-{os.geteuid()}")
    directory = base / "sandcell"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    return directory
