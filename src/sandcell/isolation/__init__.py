"""Start a process tree inside namespaces, with limits, as an unprivileged uid.

``launch(policy)`` starts a sandbox (``launch``), ``attach(name)`` takes over
a detachable one; both return a ``SandboxProcess`` whose stdin and stdout
speak ``sandcell.protocol``. The modules: ``policy`` (what a sandbox may do,
as bubblewrap arguments), ``process`` (the running sandbox), ``launch``,
``forkserver`` (the warm process sandboxes are forked from), ``root_helper``
and ``launcher`` (the root side), ``cgroups``, ``seccomp``, ``uids``,
``image`` (the runtime image), ``templates`` (what a sandbox is created from).
"""

from sandcell.protocol import SANDBOX_UID

from .image import Image, ImageMissing
from .launch import HOST_UID_BASE, attach, launch
from .limits import Limits
from .policy import Policy
from .process import SandboxProcess
from .run_dir import attach_dir
from .templates import DEFAULT_TEMPLATE, TEMPLATES

__all__ = [
    "DEFAULT_TEMPLATE",
    "HOST_UID_BASE",
    "SANDBOX_UID",
    "TEMPLATES",
    "Image",
    "ImageMissing",
    "Limits",
    "Policy",
    "SandboxProcess",
    "attach",
    "attach_dir",
    "launch",
]
