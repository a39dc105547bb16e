"""The Java kernel, built into a stage: its classes in a jar, and a CDS archive of the classes its start-up loads.

With both a Java context starts in well under a second (the archive alone
saves a few hundred milliseconds of class loading: JShell's compiler is large).
The archive is only valid for the jar at the path it was made with, so it is
made once the stage has its final name, and replaced atomically: until it
exists, contexts start without it. Without a JDK on the host nothing is
built (Java contexts then say which package is missing).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from sandcell.protocol.java import KERNEL_ARCHIVE, KERNEL_CLASS, KERNEL_JAR, KERNEL_SOURCE, SYSTEM_PATH, jvm_options

BUILD_TIMEOUT = 120


def jdk_tool(name: str) -> str | None:
    """``name`` (javac, java) of the JDK whose ``java`` sandboxes run, if it is a JDK."""
    java = shutil.which("java", path=SYSTEM_PATH)
    if java is None:
        return None
    tool = Path(os.path.realpath(java)).parent / name
    return str(tool) if tool.exists() else None


def build_jar(stage: Path) -> None:
    """Compile the kernel into ``stage``'s jar (before the stage is renamed into place)."""
    javac = jdk_tool("javac")
    if javac is None:
        return
    with tempfile.TemporaryDirectory() as classes:
        # The kernel uses sun.misc.Signal (SIGINT) on purpose: no warning about it.
        compiled = subprocess.run(
            [javac, "-nowarn", "-XDignore.symbol.file", "-d", classes, str(stage / KERNEL_SOURCE)],
            check=False,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
        )
        if compiled.returncode != 0:
            print(f"sandcell: the Java kernel does not compile; Java contexts will compile it at each start:\n{compiled.stderr}", file=sys.stderr)
            return
        jar = stage / KERNEL_JAR
        jar.parent.mkdir(exist_ok=True)
        with zipfile.ZipFile(jar, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(Path(classes).rglob("*.class")):
                archive.write(path, path.relative_to(classes).as_posix())


def build_archive(stage: Path) -> None:
    """Record the classes the kernel loads until it is ready, for the jar at its final path."""
    java, jar = jdk_tool("java"), stage / KERNEL_JAR
    if java is None or not jar.exists() or (stage / KERNEL_ARCHIVE).exists():
        return
    with tempfile.TemporaryDirectory() as scratch:
        made = Path(scratch) / "kernel.jsa"
        # No requests (fd 3 at its end): the kernel warms up, says it is ready, and exits.
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)

        def channel_on_devnull() -> None:
            os.dup2(devnull, 3)
            os.dup2(devnull, 4)

        try:
            dumped = subprocess.run(
                [java, *jvm_options(0), f"-XX:ArchiveClassesAtExit={made}", "-cp", str(jar), KERNEL_CLASS],
                check=False,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                cwd=scratch,
                env={"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "HOME": scratch},
                pass_fds=(3, 4),
                preexec_fn=channel_on_devnull,
                timeout=BUILD_TIMEOUT,
            )
        finally:
            os.close(devnull)
        if dumped.returncode != 0 or not made.exists():
            print(
                f"sandcell: no CDS archive for the Java kernel (Java contexts start slower): {dumped.stderr.decode(errors='replace')[-2000:]}", file=sys.stderr
            )
            return
        made.chmod(0o644)
        shutil.move(str(made), str(stage / KERNEL_ARCHIVE) + ".part")
        os.replace(str(stage / KERNEL_ARCHIVE) + ".part", stage / KERNEL_ARCHIVE)
