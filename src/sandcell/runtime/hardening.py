"""Protection of sandcell's own processes from the code they run beside."""

from __future__ import annotations

PR_SET_DUMPABLE = 4
PR_SET_NAME = 15


def set_dumpable(dumpable: bool) -> None:
    """Whether same-uid code may open this process's /proc/PID/mem (and so rewrite it).

    The supervisor and the zygote run as the same uid as the sandboxed code;
    not being dumpable keeps that code from tampering with them. Processes
    they exec become dumpable again, so user code can still inspect itself.
    """
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, int(dumpable), 0, 0, 0)


def set_name(name: str) -> None:
    """The process name ``ps``, ``pkill`` and ``killall`` match (15 bytes at most).

    A sandboxed ``pkill python`` should stop the user's interpreters, not the
    supervisor or the zygote, which are Python processes too.
    """
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def set_command_line(title: str) -> None:
    """Rewrite what /proc/PID/cmdline shows, in place (the argument area keeps its size).

    A forked process shows its parent's arguments: a context forked from a
    zygote or a fork server should read as the interpreter it is.
    """
    import ctypes

    with open("/proc/self/stat", "rb") as handle:
        fields = handle.read().rsplit(b")", 1)[1].split()
    start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (fields 48 and 49)
    text = title.encode()[: end - start - 1]
    ctypes.memmove(start, text + bytes(end - start - len(text)), end - start)
