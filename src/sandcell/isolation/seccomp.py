"""The seccomp filter every sandbox runs under.

A deny list on top of namespaces: system calls that sandboxed code never
needs and that have a record of kernel exploits or of reaching outside a
container (debugging other processes, mounting, loading kernel code, BPF,
keyrings, perf, io_uring, new user namespaces), socket families beyond
Unix, IP and netlink, and signals to the supervisor. They fail with EPERM (EAFNOSUPPORT for sockets), so
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

from sandcell.protocol.linux import CLONE_NAMESPACES

DENIED = (
    # other processes' memory and state
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "pidfd_getfd",
    # mounts and namespaces
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    # kernel code, kernel state, the machine
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "syslog",
    "iopl",
    "ioperm",
    "quotactl",
    "nfsservctl",
    "uselib",
    "vhangup",
    "lookup_dcookie",
    # large attack surfaces
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "keyctl",
    "add_key",
    "request_key",
    "fanotify_init",
    "open_by_handle_at",
    "name_to_handle_at",
    "personality",
)
# The socket families sandboxed code may use: AF_UNIX, AF_INET, AF_INET6,
# AF_NETLINK. Every other one (AF_VSOCK, a channel between VMs' and so between
# sandboxes' users; AF_PACKET; Bluetooth; AF_ALG...) fails with EAFNOSUPPORT.
SOCKET_FAMILIES = (1, 2, 10, 16)
HIGHEST_FAMILY = 63  # AF_MAX is 46 on Linux 6.x; above this, all are refused at once
# The supervisor is pid 2 of every sandbox (after bubblewrap's or the
# fork server's init) and leads process group 2. No signal reaches it from the
# sandbox: a stopped supervisor would stop every run's timeout with it.
SUPERVISOR_PID = 2
PID_MASK = 0xFFFFFFFF  # pid_t is 32 bits; the filter compares 64


@functools.lru_cache(maxsize=1)
def compiled_filter() -> bytes:
    """The filter as BPF bytes, ready for ``bwrap --seccomp FD``."""
    import pyseccomp as seccomp

    deny = seccomp.ERRNO(errno.EPERM)
    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    for name in DENIED:
        try:
            rules.add_rule(deny, name)
        except OSError:  # unknown on this architecture (EINVAL)
            continue
    # clone() may create threads and processes, not namespaces; clone3 hides
    # its flags in memory, so it reports ENOSYS and libc falls back to clone.
    for flag in CLONE_NAMESPACES:
        rules.add_rule(deny, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    for pid in (SUPERVISOR_PID, -SUPERVISOR_PID, -1):  # the supervisor, its process group, everyone
        rules.add_rule(deny, "kill", seccomp.Arg(0, seccomp.MASKED_EQ, PID_MASK, pid & PID_MASK))
    for call in ("tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"):
        rules.add_rule(deny, call, seccomp.Arg(0, seccomp.MASKED_EQ, PID_MASK, SUPERVISOR_PID))
    rules.add_rule(deny, "tkill")  # any thread, the supervisor's included; libc uses tgkill
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "pidfd_send_signal")  # callers fall back to kill
    unsupported = seccomp.ERRNO(errno.EAFNOSUPPORT)
    for call in ("socket", "socketpair"):
        for family in set(range(HIGHEST_FAMILY + 1)) - set(SOCKET_FAMILIES):
            rules.add_rule(unsupported, call, seccomp.Arg(0, seccomp.EQ, family))
        rules.add_rule(unsupported, call, seccomp.Arg(0, seccomp.GT, HIGHEST_FAMILY))
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
