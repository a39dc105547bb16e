"""TypeScript contexts: a JavaScript context whose kernel first strips each cell's types (``typescript.js``, with amaro)."""

from __future__ import annotations

from .javascript import JavaScriptContext


class TypeScriptContext(JavaScriptContext):
    language = "typescript"

    def process_env(self) -> dict[str, str]:
        return {**super().process_env(), "SANDCELL_AMARO": self.runtime.amaro}
