"""JavaScript contexts: Node.js running ``node_kernel.js`` (cells parsed with acorn, run in a ``vm`` context)."""

from __future__ import annotations

import json
import os

from .base import Context


class JavaScriptContext(Context):
    language = "javascript"

    def command(self) -> list[str]:
        kernel = os.path.join(self.runtime.stage, "sandcell", "runtime", "node_kernel.js")
        return ["node", "--max-old-space-size=4096", kernel]

    def process_env(self) -> dict[str, str]:
        return {**super().process_env(), "SANDCELL_ACORN": self.runtime.acorn}

    def setup_request(self) -> bytes:
        return (json.dumps({"setup": {"cwd": self.cwd, "env": self.process_env()}}) + "\n").encode()
