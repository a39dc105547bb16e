"""Java contexts: the JDK's ``java`` running ``java_kernel.java`` (JShell, evaluating in the same JVM).

The kernel starts from the jar and CDS archive built into the stage
(``isolation.java_stage``); a stage made where there was no JDK has neither,
and the JVM then compiles the kernel's source at each start (slower).
"""

from __future__ import annotations

import os

from sandcell.protocol.java import KERNEL_ARCHIVE, KERNEL_CLASS, KERNEL_JAR, KERNEL_SOURCE, jvm_options

from .programs import LanguageNotInstalled, find_program
from .tagged import TaggedContext

JDK_PACKAGE = "default-jdk-headless"


class JavaContext(TaggedContext):
    language = "java"

    def interpreter(self) -> str:
        java = find_program("java", self.process_env().get("PATH", ""), "Java", JDK_PACKAGE)
        if not os.path.exists(os.path.join(os.path.dirname(os.path.realpath(java)), "jshell")):
            raise LanguageNotInstalled(f"Java contexts need a JDK with JShell, and {java} is a runtime without it: install the Debian package {JDK_PACKAGE}")
        return java

    def command(self) -> list[str]:
        jar, archive = (os.path.join(self.runtime.stage, name) for name in (KERNEL_JAR, KERNEL_ARCHIVE))
        command = [self.interpreter(), *jvm_options(self.runtime.memory_mb)]
        if not os.path.exists(jar):
            return [*command, os.path.join(self.runtime.stage, KERNEL_SOURCE)]
        if os.path.exists(archive):
            command.append(f"-XX:SharedArchiveFile={archive}")
        return [*command, "-cp", jar, KERNEL_CLASS]
