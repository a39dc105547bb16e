"""``Sandbox.fork()``: a second, independent sandbox with a copy of the live state.

Copied: the files under ``/home/user`` (as a tar archive), and the default
Python context's variables, functions, classes, imported modules and open
pyplot figures (as a dill pickle made and loaded inside the sandboxes; see
``runtime/forking.py``). Not copied: the state of JavaScript and Bash
contexts and of extra Python contexts, running commands, and files outside
``/home/user``. Afterwards the two sandboxes share nothing.
"""

from __future__ import annotations

import json
import logging
import warnings
from typing import TYPE_CHECKING

from . import operations as ops
from .models import SandboxException

if TYPE_CHECKING:
    from .sync import Sandbox

log = logging.getLogger("sandcell.fork")

WORK = "/tmp/.sandcell/fork"
ARCHIVE = f"{WORK}/home.tar"
STATE = f"{WORK}/state.pkl"
STEP_TIMEOUT = 300.0


def _python(sandbox: Sandbox, call: str) -> list[str]:
    """Run one of ``runtime/forking.py``'s functions silently (no history, no execution count); its stdout lines."""
    core = sandbox._core
    code = f"from sandcell.runtime import forking as __sandcell_forking\n__sandcell_forking.{call}"
    execution = sandbox._call(ops.RunCode(code, "python", None, {}, STEP_TIMEOUT, {}, core.oom_reason, core.policy.kill_grace, core.output_limit, silent=True))
    if execution.error is not None:
        raise SandboxException(f"cannot fork the Python state: {execution.error.name}: {execution.error.value}")
    return "".join(execution.logs.stdout).splitlines()


def copy_state(source: Sandbox, target: Sandbox) -> list[str]:
    """Copy ``source``'s files and Python state into the fresh ``target``; the names that could not travel."""
    source.commands.run(f"mkdir -p {WORK} && tar -C /home/user -cf {ARCHIVE} .", timeout=STEP_TIMEOUT)
    try:
        left_behind = json.loads(_python(source, f"dump({STATE!r})")[-1])["left_behind"]
        for path in (ARCHIVE, STATE):
            target.files.write(path, bytes(source.files.read(path, format="bytes")))
    finally:
        source.commands.run(f"rm -rf {WORK}", timeout=STEP_TIMEOUT)
    target.commands.run(f"tar -C /home/user -xf {ARCHIVE} && rm -f {ARCHIVE}", timeout=STEP_TIMEOUT)
    _python(target, f"load({STATE!r})")
    if left_behind:
        warnings.warn(f"the fork left behind what cannot be copied: {', '.join(left_behind)}", stacklevel=3)
    return left_behind
