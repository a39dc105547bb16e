"""How the Java kernel is built and started, shared by the host (which builds its jar and
CDS archive into the stage) and the sandbox (which starts it from there).

The JVM cannot see the sandbox's cgroup (there is no /sys inside), so it would
size its heap from the host's memory and be killed by the cgroup long before an
OutOfMemoryError. Its limits come from the sandbox's instead, and it is kept
small and quick to start: the serial collector and the C1 compiler only (few
threads, each one of the sandbox's pids) and no perf-data file in /tmp.
"""

from __future__ import annotations

import os

KERNEL_SOURCE = os.path.join("sandcell", "runtime", "java_kernel.java")  # in the stage
KERNEL_JAR = os.path.join("java", "kernel.jar")
KERNEL_ARCHIVE = os.path.join("java", "kernel.jsa")  # the classes its start-up loads (CDS)
KERNEL_CLASS = "JavaKernel"
# Where the host looks for the JDK it builds with: the system's, as the sandbox sees it (no host user's PATH).
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def jvm_options(memory_mb: int) -> list[str]:
    """The JVM's flags in a sandbox of ``memory_mb`` (0: unknown, the JVM's defaults)."""
    # Compiled code is capped too (C1's code is small; the default reserves 240 MiB for C2's).
    options = ["-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:CICompilerCount=1", "-XX:-UsePerfData", "-XX:ReservedCodeCacheSize=64m"]
    if memory_mb:
        # The heap gets half the sandbox, class metadata an eighth: the rest is for the
        # sandbox's other processes and files. A full heap is an OutOfMemoryError the cell
        # can catch, not the sandbox's death.
        # MaxRAM: the JVM's other sizes (the initial heap...) follow the sandbox, not the host.
        options += [f"-XX:MaxRAM={memory_mb}m", f"-Xmx{max(memory_mb // 2, 32)}m", f"-XX:MaxMetaspaceSize={max(memory_mb // 8, 64)}m"]
    # The JVM's own warnings go to stderr, never into the code's stdout.
    return [*options, "-Xlog:disable", "-Xlog:all=warning:stderr"]
