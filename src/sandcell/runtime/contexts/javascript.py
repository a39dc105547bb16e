"""JavaScript and TypeScript contexts: Node.js running ``node_kernel.js`` (cells parsed with acorn, run in a ``vm`` context).

A TypeScript context is the same kernel told where amaro is (``SANDCELL_AMARO``): it strips
each cell's types first (``typescript.js``). A JavaScript spare can therefore become one.
"""

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
        env = {**super().process_env(), "SANDCELL_ACORN": self.runtime.acorn}
        if self.language == "typescript":
            env["SANDCELL_AMARO"] = self.runtime.amaro
        return env

    def setup_request(self) -> bytes:
        return (json.dumps({"setup": {"cwd": self.cwd, "env": self.process_env()}}) + "\n").encode()


class TypeScriptContext(JavaScriptContext):
    language = "typescript"
