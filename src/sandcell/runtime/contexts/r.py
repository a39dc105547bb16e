"""R contexts: Debian's R (``r-base-core``) running ``r_kernel.R``."""

from __future__ import annotations

import os

from .programs import find_program
from .tagged import TaggedContext


class RContext(TaggedContext):
    language = "r"
    acknowledges_events = True

    def interpreter(self) -> str:
        return find_program("R", self.process_env().get("PATH", ""), "R", "r-base-core")

    def command(self) -> list[str]:
        kernel = os.path.join(self.runtime.stage, "sandcell", "runtime", "r_kernel.R")
        return [self.interpreter(), "--no-echo", "--no-restore", "--no-save", f"--file={kernel}"]
