"""Re-resolve a template's pinned package closure: ``python scripts/lock_template.py code-interpreter-v1``.

The template's file (``src/sandcell/runtime/templates/NAME.txt``) lists the
packages it wants above the ``# -- what they need`` line; this resolves them
with the runtime image's own Python (the system python3 the sandboxes run),
wheels only, with what the base image has kept at its versions, and rewrites
the file: the wanted packages as pinned, then every dependency.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from sandcell.isolation.image import Image
from sandcell.isolation.templates import DEPENDENCIES_MARKER, base_packages, normalized, requirements_file


def main(name: str) -> None:
    path = requirements_file(name)
    head, _, _ = path.read_text().partition(DEPENDENCIES_MARKER)
    comments = [line for line in head.splitlines() if line.startswith("#")]
    wanted = [line.split("#")[0].strip() for line in head.splitlines() if line.split("#")[0].strip()]
    image = Image()
    base = base_packages(image.python)
    with tempfile.TemporaryDirectory() as scratch:
        constraints, report = Path(scratch) / "base.txt", Path(scratch) / "report.json"
        constraints.write_text("".join(f"{package}=={version}\n" for package, version in base.items()))
        command = [str(image.python), "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary", ":all:", "-q", "--report", str(report)]
        subprocess.run([*command, "-c", str(constraints), *wanted], check=True)
        resolved = {normalized(item["metadata"]["name"]): item["metadata"]["version"] for item in json.loads(report.read_text())["install"]}
    wanted_names = [normalized(line.split("=")[0].split("[")[0]) for line in wanted]
    extra = sorted(package for package in resolved if package not in wanted_names)
    lines = [
        *comments,
        *(f"{package}=={resolved[package]}" for package in wanted_names),
        DEPENDENCIES_MARKER,
        *(f"{package}=={resolved[package]}" for package in extra),
    ]
    path.write_text("\n".join(lines) + "\n")
    print(f"{path}: {len(wanted_names)} packages, {len(extra)} dependencies")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "code-interpreter-v1")
