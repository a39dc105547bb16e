"""sandcell: a self-hosted code interpreter for LLM agents.

``from sandcell import Sandbox`` gives the same API as
``e2b_code_interpreter.Sandbox``, running on this machine.
"""

from sandcell import sandbox as _sandbox
from sandcell.isolation.limits import Limits
from sandcell.sandbox import *  # noqa: F403

__all__ = ["Limits"]
__all__ += _sandbox.__all__
