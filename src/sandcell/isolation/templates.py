"""Templates: what a sandbox is created from (E2B's name for it).

``base`` is the runtime image as it is (IPython, numpy, pandas, matplotlib).
``code-interpreter-v1``, E2B's code interpreter's default, adds E2B's package
set (scikit-learn, scipy, seaborn, plotly, opencv...): a closure of pinned
wheels (``runtime/templates/code-interpreter-v1.txt``, only what ``base``
lacks) installed by ``sandcell setup`` with ``pip --target`` into a directory
of its own, named by the hash of that file. A sandbox of the template gets it
read-only at ``Image.template_mount`` and on its Python path; a ``base``
sandbox never sees it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent
BASE = "base"
CODE_INTERPRETER = "code-interpreter-v1"
TEMPLATES = (BASE, CODE_INTERPRETER)
# E2B's code interpreter SDK creates code-interpreter-v1 sandboxes unless told otherwise: so does sandcell.
DEFAULT_TEMPLATE = CODE_INTERPRETER
# Where a template's file moves from what it asks for to what that needs.
DEPENDENCIES_MARKER = "# -- what they need"


def check_template(name: object) -> str:
    """``name`` if it is a known template; a ``ValueError`` that lists them otherwise."""
    if name not in TEMPLATES:
        raise ValueError(f"unknown template {name!r}; the templates are: {', '.join(TEMPLATES)}")
    return name


def has_packages(name: str) -> bool:
    """Whether the template adds packages to the base image (``base`` does not)."""
    return requirements_file(name).exists()


def requirements_file(name: str) -> Path:
    return PACKAGE_DIR / "runtime" / "templates" / f"{name}.txt"


@functools.cache
def packages_digest(name: str) -> str:
    """The hash of the template's pinned file: its installed directory's name, so a new pin never changes a directory in use."""
    return hashlib.sha256(requirements_file(name).read_bytes()).hexdigest()[:16]


def normalized(package: str) -> str:
    return re.sub(r"[-_.]+", "-", package).lower()


def pinned(name: str) -> dict[str, str]:
    """The template's packages and their versions, as its file pins them."""
    found = {}
    for line in requirements_file(name).read_text().splitlines():
        requirement = line.split("#")[0].strip()
        if requirement:
            package, _, version = requirement.partition("==")
            found[normalized(package)] = version
    return found


def base_packages(python: Path) -> dict[str, str]:
    """What the base image's Python has installed (pip and setuptools included)."""
    listing = subprocess.run([str(python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"], check=True, capture_output=True, text=True)
    return {normalized(item["name"]): item["version"] for item in json.loads(listing.stdout)}


def install(python: Path, target: Path, name: str, say: Callable[[str], None]) -> None:
    """Install the template's pinned wheels (those the base image lacks) into ``target``, whole or not at all."""
    base = base_packages(python)
    wanted = [f"{package}=={version}" for package, version in pinned(name).items() if package not in base]
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=".installing-"))
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as requirements:
            requirements.write("\n".join(wanted) + "\n")
            requirements.flush()
            command = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", "--only-binary", ":all:"]
            command += ["--target", str(scratch), "-r", requirements.name]
            say(f"$ {' '.join(command[:-2])} ({len(wanted)} packages of {requirements_file(name).name})")
            subprocess.run(command, check=True)
        scratch.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
