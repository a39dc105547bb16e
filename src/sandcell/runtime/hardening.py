"""Protection of sandcell's own processes from the code they run beside."""

from __future__ import annotations


def set_dumpable(dumpable: bool) -> None:
    """Whether same-uid code may open this process's /proc/PID/mem (and so rewrite it).

    The supervisor and the zygote run as the same uid as the sandboxed code;
    not being dumpable keeps that code from tampering with them. Processes
    they exec become dumpable again, so user code can still inspect itself.
    """
    import ctypes

    PR_SET_DUMPABLE = 4
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, int(dumpable), 0, 0, 0)
