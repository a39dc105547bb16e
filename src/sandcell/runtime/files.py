"""File operations, done from inside the sandbox.

The supervisor shares the sandbox's mount namespace and uid, so a symlink the
sandboxed code plants (``/home/user/x -> /etc/shadow``) resolves to what the
sandbox itself can see and nothing more: the host never touches a path inside
a sandbox.
"""

from __future__ import annotations

import datetime
import grp
import os
import pwd
import shutil
import stat
from typing import Any, Iterator

CHUNK = 1024 * 1024


def resolve(path: str, home: str) -> str:
    if not path:
        raise ValueError("path is empty")
    return os.path.normpath(os.path.join(home, os.path.expanduser(path) if path.startswith("~") else path))


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def entry(path: str) -> dict[str, Any]:
    info = os.lstat(path)
    target = None
    if stat.S_ISLNK(info.st_mode):
        target = os.readlink(path)
        try:
            info = os.stat(path)
        except OSError:
            pass  # dangling link: describe the link itself
    kind = "dir" if stat.S_ISDIR(info.st_mode) else "file"
    return {
        "name": os.path.basename(path) or path,
        "path": path,
        "type": kind,
        "size": info.st_size,
        "mode": stat.S_IMODE(info.st_mode),
        "permissions": stat.filemode(info.st_mode),
        "owner": _owner(info.st_uid),
        "group": _group(info.st_gid),
        "modified_time": datetime.datetime.fromtimestamp(info.st_mtime, datetime.timezone.utc).isoformat(),
        "symlink_target": target,
    }


def read_chunks(path: str) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


def write(path: str, data: bytes, append: bool) -> dict[str, Any]:
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory")
    os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
    with open(path, "ab" if append else "wb") as handle:
        handle.write(data)
    return {"name": os.path.basename(path), "path": path, "type": "file"}


def list_dir(path: str, depth: int) -> list[dict[str, Any]]:
    if depth < 1:
        raise ValueError("depth must be at least 1")
    if not os.path.exists(path):  # missing, or a link to nothing the sandbox has
        raise FileNotFoundError(f"{path} does not exist")
    if not os.path.isdir(path):
        raise NotADirectoryError(f"{path} is not a directory")
    entries = []
    with os.scandir(path) as scan:
        children = sorted(scan, key=lambda item: item.name)
    for child in children:
        entries.append(entry(child.path))
        if depth > 1 and child.is_dir(follow_symlinks=False):
            entries.extend(list_dir(child.path, depth - 1))
    return entries


def remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.remove(path)


def make_dir(path: str) -> bool:
    if os.path.isdir(path):
        return False
    os.makedirs(path)
    return True


def rename(source: str, destination: str) -> dict[str, Any]:
    os.makedirs(os.path.dirname(destination) or "/", exist_ok=True)
    os.rename(source, destination)
    return entry(destination)
