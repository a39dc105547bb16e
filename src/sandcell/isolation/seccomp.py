"""The seccomp filter every sandbox runs under.

A deny list on top of namespaces: system calls that sandboxed code never
needs and that have a record of kernel exploits or of reaching outside a
container (debugging other processes, mounting, loading kernel code, BPF,
keyrings, perf, io_uring, new user namespaces). They fail with EPERM, so
programs that merely probe for them keep working. System calls of other
ABIs (32-bit x86, x32) kill the process: the filter cannot vouch for them.

The filter is compiled once per host process to classic BPF and handed to
bubblewrap, which loads it after setting up the namespaces.
"""

from __future__ import annotations

import errno
import functools
import os
import tempfile

DENIED = (
    # other processes' memory and state
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    # mounts and namespaces
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "move_mount", "open_tree",
    "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    # kernel code, kernel state, the machine
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot",
    "swapon", "swapoff", "acct", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "syslog", "iopl", "ioperm", "quotactl", "nfsservctl", "uselib", "vhangup", "lookup_dcookie",
    # large attack surfaces
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "keyctl", "add_key", "request_key", "fanotify_init", "open_by_handle_at", "name_to_handle_at",
    "personality",
)
# CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWCGROUP
CLONE_NAMESPACE_FLAGS = (0x10000000, 0x00020000, 0x04000000, 0x08000000, 0x20000000, 0x40000000, 0x02000000)


@functools.lru_cache(maxsize=1)
def compiled_filter() -> bytes:
    """The filter as BPF bytes, ready for ``bwrap --seccomp FD``."""
    import pyseccomp as seccomp

    deny = seccomp.ERRNO(errno.EPERM)
    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    for name in DENIED:
        try:
            rules.add_rule(deny, name)
        except Exception:  # unknown on this architecture
            continue
    # clone() may create threads and processes, not namespaces; clone3 hides
    # its flags in memory, so it reports ENOSYS and libc falls back to clone.
    for flag in CLONE_NAMESPACE_FLAGS:
        rules.add_rule(deny, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    # TIOCSTI pushes input into a terminal: a way to type into the host's shell.
    rules.add_rule(deny, "ioctl", seccomp.Arg(1, seccomp.MASKED_EQ, 0xFFFFFFFF, 0x5412))
    with tempfile.TemporaryFile() as handle:
        rules.export_bpf(handle)
        handle.seek(0)
        return handle.read()


def filter_fd() -> int:
    """A readable fd holding the compiled filter (bwrap reads it to the end)."""
    data = compiled_filter()
    read_end, write_end = os.pipe()
    if len(data) > 65536:
        raise RuntimeError("seccomp filter larger than a pipe buffer")
    os.write(write_end, data)
    os.close(write_end)
    return read_end
