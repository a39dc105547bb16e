"""Code contexts: one interpreter process per context, kept alive across runs (``base``), in Python, JavaScript, TypeScript or Bash."""

from .base import Context, Run, Runtime, describe_status, working_directory
from .bash import BashContext
from .javascript import JavaScriptContext, TypeScriptContext
from .python import PythonContext, python_env, python_zygote
from .start import CONTEXT_CLASSES, start_context

__all__ = [
    "CONTEXT_CLASSES",
    "BashContext",
    "Context",
    "JavaScriptContext",
    "PythonContext",
    "Run",
    "Runtime",
    "TypeScriptContext",
    "describe_status",
    "python_env",
    "python_zygote",
    "start_context",
    "working_directory",
]
