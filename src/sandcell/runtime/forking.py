"""Carry a Python context's state into another sandbox (``Sandbox.fork``), inside the sandboxes.

A sandbox's processes cannot be forked into new namespaces (they may not
create namespaces at all), so the state travels as a dill pickle instead:
the user's variables, functions and classes, the modules they named, and
pyplot's open figures. What cannot be pickled (open files, sockets,
generators, threads) is left behind and named, never silently lost. The
pickle is only ever loaded inside the other sandbox, never by the host.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import types
from typing import Any

# IPython's own names in the user namespace: the new context has its own.
SHELL_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "open"})


def _shell_namespace() -> dict[str, Any]:
    from IPython import get_ipython

    return get_ipython().user_ns  # type: ignore[union-attr]


def _user_names(namespace: dict[str, Any]) -> list[str]:
    return [name for name in namespace if not name.startswith("_") and name not in SHELL_NAMES]


def dump(path: str) -> None:
    """Write the state to ``path``; print, as one JSON line, what was left behind."""
    import dill

    namespace = _shell_namespace()
    modules: dict[str, str] = {}
    values: dict[str, Any] = {}
    for name in _user_names(namespace):
        value = namespace[name]
        if isinstance(value, types.ModuleType):
            modules[name] = value.__name__
        else:
            values[name] = value
    # Functions defined in the session refer to __main__'s namespace by
    # reference (dill's default), so in the new context they see its globals.
    left_behind = []
    try:
        blob = dill.dumps(values)  # at once, so shared objects stay shared
    except Exception:  # noqa: BLE001 - find which names cannot travel, carry the rest
        for name in list(values):
            try:
                dill.dumps(values[name])
            except Exception:  # noqa: BLE001
                left_behind.append(name)
                del values[name]
        blob = dill.dumps(values)
    figures = []
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        for number in pyplot.get_fignums():
            try:
                figures.append(dill.dumps(pyplot.figure(number)))
            except Exception:  # noqa: BLE001
                left_behind.append(f"figure {number}")
    with open(path, "wb") as handle:
        dill.dump({"values": blob, "modules": modules, "figures": figures}, handle)
    print(json.dumps({"left_behind": left_behind}))


def load(path: str) -> None:
    """Restore the state ``dump`` wrote, then remove the file."""
    import dill

    with open(path, "rb") as handle:
        state = dill.load(handle)
    os.unlink(path)
    namespace = _shell_namespace()
    for name, module in state["modules"].items():
        namespace[name] = importlib.import_module(module)
    namespace.update(dill.loads(state["values"]))
    for figure in state["figures"]:
        dill.loads(figure)  # a pyplot figure registers itself with pyplot again
