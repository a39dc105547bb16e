"""sandcell: a self-hosted code interpreter for LLM agents.

``from sandcell import Sandbox`` gives the same API as
``e2b_code_interpreter.Sandbox``, running on this machine.
"""

from sandcell.isolation.limits import Limits
from sandcell.sandbox import *  # noqa: F403
from sandcell.sandbox import __all__ as _sandbox_names

__all__ = ["Limits", *_sandbox_names]
