"""Bash contexts: a plain bash sourcing each cell from a file (``BASH_DRIVER``), keeping its state across cells."""

from __future__ import annotations

import os
import shlex
from typing import Any

from .base import Context

# A cell is sourced by a function that leaves the cell's status in
# __sandcell_status and returns 0. `set -e` in a cell stops that cell rather
# than exiting the shell (and losing its state): the ERR trap turns errexit
# off, returns from `source` with the failing status, and the loop turns
# errexit back on for the next cell. An interrupt returns 130 the same way.
BASH_DRIVER = r"""
__sandcell_pause_errexit() { if [[ $- == *e* ]]; then __sandcell_errexit=1; set +e; fi; }
__sandcell_run() {
  trap 'trap : INT; __sandcell_pause_errexit; return 130' INT
  trap '__sandcell_status=$?; if [[ $- == *e* ]]; then trap - ERR; __sandcell_pause_errexit; return $__sandcell_status; fi' ERR
  source "$1"
  __sandcell_status=$?
  return 0
}
trap : INT
while IFS= read -r -u 3 __sandcell_line; do
  eval "$__sandcell_line"
  trap - ERR
  trap : INT
  if [[ -n $__sandcell_errexit ]]; then __sandcell_errexit=; set -e; fi
  printf '%s\n' "$__sandcell_status" >&4
done
"""


class BashContext(Context):
    language = "bash"

    def command(self) -> list[str]:
        return ["/bin/bash", "--noprofile", "--norc", "-c", BASH_DRIVER]

    async def _await_ready(self) -> None:
        return  # bash reads fd 3 as soon as it starts; there is no handshake

    def setup_request(self) -> bytes:
        """``cd`` and the change from the environment it started with, ending
        in ``ready``; OLDPWD goes back to what a new bash has (exported, unset)."""
        env = self.process_env()
        gone = [name for name in self.launched_env if name not in env]
        changed = [f"{name}={shlex.quote(value)}" for name, value in env.items() if self.launched_env.get(name) != value]
        steps = [f"builtin cd -- {shlex.quote(self.cwd)}", "unset OLDPWD", "declare -x OLDPWD"]
        steps += [f"unset -v {' '.join(gone)}"] if gone else []
        steps += [f"export {' '.join(changed)}"] if changed else []
        return ("; ".join([*steps, "__sandcell_status=ready"]) + "\n").encode()

    def encode_request(self, code: str, env: dict[str, str], silent: bool = False) -> bytes:
        cell = os.path.join(self.runtime.work_dir, f"cell-{self.id}-{self.execution_count + 1}.sh")
        with open(cell, "w", encoding="utf-8") as handle:
            handle.write(code + "\n")
        assignments = " ".join(f"{name}={shlex.quote(value)}" for name, value in env.items())
        return f"{assignments} __sandcell_run {shlex.quote(cell)}\n".encode()

    def decode_event(self, line: bytes) -> dict[str, Any]:
        if line.strip() == b"ready":
            return {"type": "ready"}
        return {"type": "exit", "status": int(line.strip() or 0)}

    async def _handle_event(self, event: dict[str, Any], size: int) -> None:
        run = self.run
        if event["type"] == "ready" or run is None:
            await super()._handle_event(event, size)
            return
        status = event["status"]
        if status == 130 and run.interrupt_reason:
            await run.output.event(self._error(run, {"name": "KeyboardInterrupt", "value": "", "traceback": ""}), 0)
        elif status:
            await run.output.event({"type": "error", "name": "ExitStatusError", "value": f"exit status {status}", "traceback": ""}, 0)
        self.execution_count += 1
        if not run.finished.done():
            run.finished.set_result({"execution_count": self.execution_count, "exit_code": status})
