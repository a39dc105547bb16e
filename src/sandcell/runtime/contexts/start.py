"""A started context of a language."""

from __future__ import annotations

from .base import Context, Runtime
from .bash import BashContext
from .java import JavaContext
from .javascript import JavaScriptContext, TypeScriptContext
from .python import PythonContext
from .r import RContext

CONTEXT_CLASSES: dict[str, type[Context]] = {
    "python": PythonContext,
    "javascript": JavaScriptContext,
    "typescript": TypeScriptContext,
    "bash": BashContext,
    "r": RContext,
    "java": JavaContext,
}


async def start_context(runtime: Runtime, language: str, cwd: str, env: dict[str, str]) -> Context:
    """A new, started context of ``language``; one that fails to start is stopped, not left half-made."""
    context = CONTEXT_CLASSES[language](runtime, cwd, env)
    try:
        async with context.lock:
            await context.start()
    except BaseException:
        await context.stop()
        raise
    return context
