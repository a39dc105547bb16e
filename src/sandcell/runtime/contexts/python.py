"""Python contexts: an IPython kernel (``python_kernel``), forked from the sandbox's Python zygote when it can be."""

from __future__ import annotations

import os
from typing import Any

from sandcell.runtime.zygote import PythonZygote

from .base import Context, Runtime


class PythonContext(Context):
    language = "python"
    acknowledges_events = True

    def command(self) -> list[str]:
        boot = (
            f"import sys; sys.path.insert(0, {self.runtime.stage!r}); from sandcell.runtime.python_kernel import main; main({list(self.runtime.site_dirs)!r})"
        )
        return [self.runtime.python, "-E", "-s", "-c", boot]

    def process_env(self) -> dict[str, str]:
        return python_env(super().process_env(), self.runtime.work_dir)

    async def _launch(self, fds: list[int], env: dict[str, str]) -> Any:
        zygote = self.runtime.zygote
        if zygote is not None and zygote.alive:
            try:
                return await zygote.fork(fds, self.cwd, env, self.runtime.site_dirs)
            except (RuntimeError, OSError):
                pass  # start it the slow way
        return await super()._launch(fds, env)


def python_env(env: dict[str, str], work_dir: str) -> dict[str, str]:
    """``env`` with what Python contexts, and the zygotes and fork servers they fork from, need by default."""
    return {"MPLBACKEND": "module://matplotlib_inline.backend_inline", "IPYTHONDIR": os.path.join(work_dir, "ipython"), **env}


def python_zygote(runtime: Runtime, home: str) -> PythonZygote:
    boot = f"import sys; sys.path.insert(0, {runtime.stage!r}); from sandcell.runtime.python_kernel import zygote_main; zygote_main({list(runtime.preload)!r})"
    env = PythonContext(runtime, home, {}).process_env()
    return PythonZygote([runtime.python, "-E", "-s", "-c", boot], env, home)
