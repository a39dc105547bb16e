"""Carry a Python context's state into another sandbox (``Sandbox.fork``), inside the sandboxes.

A sandbox's processes cannot be forked into new namespaces (they may not
create namespaces at all), so the state travels as a pickle instead (the C
pickler, with dill for what it cannot do; see ``_Pickler``):
the user's variables, functions and classes, the modules they named, and
pyplot's open figures. What cannot be pickled (open files, sockets,
generators, threads) is left behind and named, never silently lost. The
pickle is only ever loaded inside the other sandbox, never by the host.

The pickle uses protocol 5 with out-of-band buffers: the memory of numpy
arrays (and so of pandas frames) is not copied into the pickle stream but
written raw after it, and read back straight into the buffers the arrays
then use. ``dump`` writes into a FIFO that the supervisor is already
sending to the host (``begin``), so the state leaves the sandbox as it is
written and is never held twice in it. The stream is::

    MAGIC | header length (8 bytes, big-endian) | JSON header | pickle | buffer 0 | buffer 1 | ...

and arrives in the other sandbox as parts named by their offset and size
(``protocol.part_name``), which ``load`` reads in order as they arrive.
"""

from __future__ import annotations

import errno
import fcntl
import importlib
import io
import json
import mmap
import os
import pickle
import stat
import sys
import threading
import time
import types
from collections.abc import Iterable
from typing import Any

from sandcell.protocol import part_prefix

# IPython's own names in the user namespace: the new context has its own.
SHELL_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "open"})
MAGIC = b"SCFORK5\n"
PROTOCOL = 5
PIPE_SIZE = 1024 * 1024


def _shell_namespace() -> dict[str, Any]:
    from IPython import get_ipython

    namespace: dict[str, Any] = get_ipython().user_ns
    return namespace


def _user_names(namespace: dict[str, Any]) -> list[str]:
    return [name for name in namespace if not name.startswith("_") and name not in SHELL_NAMES]


def begin(path: str) -> None:
    """Make the pipe (a FIFO at ``path``) that ``dump`` will write the state into; print, as
    one JSON line, the top-level packages loading the state will import.

    The host starts reading the FIFO before ``dump`` runs, so the state flows
    out of the sandbox as it is written, and never lies in the sandbox's
    memory twice. The fork imports the packages in the new sandbox while the
    state is on its way, so that unpickling (a pandas frame imports pandas)
    finds them loaded.
    """
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.mkfifo(path, 0o600)
    namespace = _shell_namespace()
    names = set()
    for name in _user_names(namespace):
        value = namespace[name]
        module = value.__name__ if isinstance(value, types.ModuleType) else getattr(type(value), "__module__", None)
        if isinstance(module, str):
            names.add(module.partition(".")[0])
    if "matplotlib.pyplot" in sys.modules:
        names.add("matplotlib.pyplot")
    names -= {"__main__", "builtins", "sandcell"}
    print(json.dumps(sorted(name for name in names if name in sys.modules)))


def warm(names: Iterable[str], path: str | None = None, wait: float = 300.0) -> None:
    """Import ``names`` ahead of ``load`` (one that fails is ``load``'s to report); with ``path``,
    first start reading the state's parts as they arrive, on a thread, for ``load`` to take."""
    if path is not None:
        _arrivals[path] = _Reading(path, wait)
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: S110, BLE001 - any import error is ``load``'s to report
            pass


class _NeedsDill(Exception):
    """A session function or class holds objects a separate dill pickle of it would copy."""


def _plain(value: Any, depth: int = 0) -> bool:
    """An immutable value with no identity worth keeping (a copy of it is as good)."""
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return True
    if isinstance(value, (tuple, frozenset)) and depth < 4:
        return all(_plain(item, depth + 1) for item in value)
    return False


def _self_contained(obj: Any) -> bool:
    """Whether dill can pickle this session function or class on its own without copying
    anything else of the state: what it captures (defaults, closure, attributes) is plain,
    and a class has no session class among its bases or as its metaclass."""
    if isinstance(obj, types.FunctionType):
        captured = [*(obj.__defaults__ or ()), *(obj.__kwdefaults__ or {}).values(), *vars(obj).values()]
        for cell in obj.__closure__ or ():
            try:
                captured.append(cell.cell_contents)
            except ValueError:  # an empty cell
                pass
        return all(_plain(value) for value in captured)
    if type(obj).__module__ == "__main__" or any(base.__module__ == "__main__" for base in obj.__mro__[1:]):
        return False
    for name, attribute in vars(obj).items():
        value = attribute.__func__ if isinstance(attribute, (staticmethod, classmethod)) else attribute
        if isinstance(value, property):
            if not all(part is None or (isinstance(part, types.FunctionType) and _self_contained(part)) for part in (value.fget, value.fset, value.fdel)):
                return False
        elif isinstance(value, types.FunctionType):
            if not _self_contained(value):
                return False
        elif name not in ("__dict__", "__weakref__", "__slotnames__") and not _plain(value):  # (copyreg's cache of names)
            return False
    return True


class _Pickler(pickle.Pickler):
    """The C pickler, with what it would get wrong handed to dill.

    The stdlib pickles functions and classes by name, which is right for
    library ones but not for those defined in the session (``__main__``):
    the new context does not have them yet, so dill pickles those by value
    (their globals by reference to ``__main__``, so in the new context they
    see its globals), each on its own. Everything else, numpy's buffers
    included, goes at C speed. A session function or class that holds other
    objects (a default, a closure, a class attribute, a session base class)
    would have them copied by its own dill pickle, no longer shared with the
    rest of the state: then the whole state goes by dill instead.
    """

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (types.FunctionType, type)) and getattr(obj, "__module__", None) == "__main__":
            if not _self_contained(obj):
                raise _NeedsDill(obj.__qualname__)
            import dill

            return dill.loads, (dill.dumps(obj, protocol=PROTOCOL),)
        return NotImplemented


def _dill_pickler() -> Any:
    import dill

    class Pickler(dill.Pickler):  # type: ignore[misc]  # dill has no stubs: its Pickler is Any here
        """dill, but numpy arrays reduced with protocol 5, so their memory goes out of band
        (dill's own numpy hook pickles it into the stream)."""

        def reducer_override(self, obj: Any) -> Any:
            numpy = sys.modules.get("numpy")
            if numpy is not None and type(obj) is numpy.ndarray:
                return obj.__reduce_ex__(PROTOCOL)
            return NotImplemented

    return Pickler


def _pickle(state: Any, probe: bool = False) -> tuple[str, bytes, list[Any]]:
    """``state`` pickled (by which unpickler to load it, the pickle, its out-of-band buffers as zero-copy views).

    The C pickler first; dill for the whole state when that fails (objects
    the stdlib cannot pickle at all, such as lambdas from libraries).
    ``probe``: only find out whether it can be pickled (buffers not kept).
    """
    buffers: list[Any] = []
    keep = (lambda buffer: None) if probe else buffers.append
    file = io.BytesIO()
    try:
        _Pickler(file, protocol=PROTOCOL, buffer_callback=keep).dump(state)
        return "pickle", file.getvalue(), buffers
    except Exception:  # noqa: BLE001 - dill may still manage
        buffers.clear()
        file = io.BytesIO()
        _dill_pickler()(file, protocol=PROTOCOL, buffer_callback=keep).dump(state)
        return "dill", file.getvalue(), buffers


def _picklable(value: Any) -> bool:
    try:
        _pickle(value, probe=True)
        return True
    except Exception:  # noqa: BLE001
        return False


def dump(path: str) -> None:
    """Write the state to ``path`` (the FIFO ``begin`` made, or a file); print, as one JSON line, what was left behind."""
    namespace = _shell_namespace()
    modules: dict[str, str] = {}
    values: dict[str, Any] = {}
    for name in _user_names(namespace):
        value = namespace[name]
        if isinstance(value, types.ModuleType):
            modules[name] = value.__name__
        else:
            values[name] = value
    figures: dict[str, Any] = {}
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        figures = {f"figure {number}": pyplot.figure(number) for number in pyplot.get_fignums()}
    left_behind = []
    try:
        try:
            pickler, blob, buffers = _pickle({"values": values, "figures": list(figures.values())})  # at once, so shared objects stay shared
        except Exception:  # noqa: BLE001 - find what cannot travel, carry the rest
            for name in list(values):
                if not _picklable(values[name]):
                    left_behind.append(name)
                    del values[name]
            for name in list(figures):
                if not _picklable(figures[name]):
                    left_behind.append(name)
                    del figures[name]
            pickler, blob, buffers = _pickle({"values": values, "figures": list(figures.values())})
        views = [buffer.raw() for buffer in buffers]
        header = json.dumps({"modules": modules, "pickler": pickler, "pickle": len(blob), "buffers": [view.nbytes for view in views]}).encode()
    except BaseException:
        try:
            release(path)  # the host's read ends (empty) instead of waiting for a writer
        except OSError:
            pass
        raise
    with _open_writer(path) as handle:
        for piece in (MAGIC, len(header).to_bytes(8, "big"), header, blob, *views):
            _write_all(handle, piece)
    print(json.dumps({"left_behind": left_behind}))


def release(path: str) -> None:
    """End a read of the FIFO ``path`` that no ``dump`` will write (the fork failed before it)."""
    with _open_writer(path):
        pass


def _open_writer(path: str, wait: float = 30.0) -> Any:
    """``path`` opened for writing; a FIFO only once its reader is there (not forever: a host gone leaves none)."""
    if not os.path.exists(path) or not stat.S_ISFIFO(os.stat(path).st_mode):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        return open(path, "wb", buffering=0)
    deadline = time.monotonic() + wait
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                raise
            time.sleep(0.001)
            continue
        break
    os.set_blocking(fd, True)
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)  # fewer wake-ups of the reader per MiB
    except OSError:
        pass
    return open(fd, "wb", buffering=0)


def _write_all(handle: Any, data: Any) -> None:
    view = memoryview(data).cast("B")
    while view.nbytes:
        view = view[handle.write(view) :]


class _Arriving:
    """A file arriving as parts (``protocol.part_name``), written concurrently while it is read:
    ``readinto`` waits for the part holding the next byte until it is complete, and
    removes each part once read (so the file is never held whole on /tmp as well)."""

    def __init__(self, path: str, wait: float) -> None:
        self._directory, self._prefix = os.path.split(path)
        self._path = path
        self._wait = wait
        self._deadline = time.monotonic() + wait
        self._offset = 0
        self._handle: Any = None
        self._left = 0  # bytes of the open part not read yet
        self._size = 0  # of the part read last
        self._part = ""

    def _open_next(self) -> None:
        start = part_prefix(self._prefix, self._offset)
        while True:
            # Parts are mostly the size of the one before: look for that name
            # first, and list the directory only when it is not there.
            found = self._whole(start, self._size)
            if found is None:
                try:
                    names = os.listdir(self._directory)
                except FileNotFoundError:  # nothing arrived yet
                    names = []
                for name in names:
                    if name.startswith(start):
                        found = self._whole(start, int(name[len(start) :]))
            if found is not None:
                self._handle, self._left, self._part = open(found, "rb", buffering=0), self._size, found  # noqa: SIM115 - read part by part, closed in readinto/close
                self._deadline = time.monotonic() + self._wait
                return
            if time.monotonic() > self._deadline:
                raise TimeoutError(f"the fork's state stopped arriving at byte {self._offset}")
            time.sleep(0.001)

    def _whole(self, start: str, size: int) -> str | None:
        """The part named ``start`` + ``size`` if it is there and written whole (then ``size`` is kept)."""
        path = os.path.join(self._directory, f"{start}{size}")
        try:
            if os.stat(path).st_size < size:
                return None
        except FileNotFoundError:
            return None
        self._size = size
        return path

    def readinto(self, buffer: Any) -> None:
        """Fill ``buffer`` exactly."""
        view = memoryview(buffer).cast("B")
        while view.nbytes:
            if self._handle is None:
                self._open_next()
            count = self._handle.readinto(view[: self._left])
            if not count:
                raise EOFError(f"the fork's state part {self._part} is short")
            view, self._left, self._offset = view[count:], self._left - count, self._offset + count
            if not self._left:
                self._handle.close()
                os.unlink(self._part)
                self._handle = None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
        for name in os.listdir(self._directory) if os.path.isdir(self._directory) else ():
            if name.startswith(self._prefix + "."):
                os.unlink(os.path.join(self._directory, name))


def _buffer(size: int) -> Any:
    """Writable memory for one out-of-band buffer: large ones anonymous pages, populated at once
    (faster than a page fault each as the data is read in, and done while it is still arriving)."""
    if size >= 1 << 16:
        return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0))
    return bytearray(size)


def _read(path: str, wait: float) -> tuple[dict[str, Any], bytearray, list[Any]]:
    """The header, the pickle and the out-of-band buffers of the state arriving at ``path``."""
    stream = _Arriving(path, wait)
    try:
        prefix = bytearray(len(MAGIC) + 8)
        stream.readinto(prefix)
        if bytes(prefix[: len(MAGIC)]) != MAGIC:
            raise ValueError("not a sandcell fork state")
        header = bytearray(int.from_bytes(prefix[len(MAGIC) :], "big"))
        stream.readinto(header)
        meta = json.loads(header)
        blob = bytearray(meta["pickle"])
        stream.readinto(blob)
        buffers = []
        for size in meta["buffers"]:
            buffers.append(_buffer(size))
            stream.readinto(buffers[-1])
        return meta, blob, buffers
    finally:
        stream.close()


class _Reading:
    """``_read`` on a thread (started by ``warm``, so reading overlaps the imports)."""

    def __init__(self, path: str, wait: float) -> None:
        self._outcome: tuple[dict[str, Any], bytearray, list[Any]] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(path, wait), name="sandcell-fork-load", daemon=True)
        self._thread.start()

    def _run(self, path: str, wait: float) -> None:
        try:
            self._outcome = _read(path, wait)
        except BaseException as exc:  # noqa: BLE001 - handed to load
            self._error = exc

    def result(self) -> tuple[dict[str, Any], bytearray, list[Any]]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._outcome is not None  # _run set one of the two
        return self._outcome


_arrivals: dict[str, _Reading] = {}


def load(path: str, wait: float = 300.0) -> None:
    """Restore the state ``dump`` wrote, as its parts arrive at ``path`` (see ``protocol.part_name``), or as
    ``warm`` has been reading them; give up if the next part takes over ``wait`` seconds."""
    reading = _arrivals.pop(path, None)
    meta, blob, buffers = reading.result() if reading is not None else _read(path, wait)
    try:
        os.rmdir(os.path.dirname(path))  # empty by now (the files were unpacked first)
    except OSError:
        pass
    namespace = _shell_namespace()
    for name, module in meta["modules"].items():
        namespace[name] = importlib.import_module(module)
    # a pyplot figure registers itself with pyplot again as it is unpickled
    if meta["pickler"] == "pickle":
        state = pickle.loads(blob, buffers=buffers)
    else:
        import dill

        state = dill.loads(bytes(blob), buffers=buffers)
    namespace.update(state["values"])
