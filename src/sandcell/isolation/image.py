"""The runtime image: what a sandbox sees besides the host's read-only /usr.

A sandbox cannot see the host's Python (a pyenv or venv under /root is
neither visible nor wanted inside), so sandcell keeps its own image in
``SANDCELL_HOME`` (``/opt/sandcell`` for root):

- ``runtime/``: a venv of the system ``python3`` with IPython, numpy, pandas
  and matplotlib (``runtime/requirements.txt``);
- ``node/node_modules``: the npm packages of ``runtime/package.json``: acorn,
  which the JavaScript context parses cells with, and amaro, which strips
  TypeScript cells' types;
- ``etc/``: the sandbox's passwd, group, hosts... (no host secrets);
- ``mpl/``: matplotlib's font cache, built once so plots don't rebuild it;
- ``templates/<name>/<hash>``: the packages a template adds to ``runtime``
  (see ``templates``), content-addressed like the stage;
- ``stage/<hash>/sandcell``: a copy of the in-sandbox code (``runtime`` and
  ``protocol``), content-addressed so concurrent hosts never mix versions,
  with the Java kernel built from it in ``stage/<hash>/java`` (``java_stage``).

``sandcell setup`` builds it (``build``); ``Image.check`` says what is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import cache, cached_property
from pathlib import Path

from sandcell.protocol import HOME, SANDBOX_UID, SANDBOX_USER

from . import java_stage, templates

PACKAGE_DIR = Path(__file__).resolve().parent.parent
RUNTIME_SOURCES = ("runtime", "protocol")

ETC_FILES = {
    "passwd": (
        "root:x:0:0:root:/root:/usr/sbin/nologin\n"
        f"{SANDBOX_USER}:x:{SANDBOX_UID}:{SANDBOX_UID}:sandbox user:{HOME}:/bin/bash\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    ),
    "group": f"root:x:0:\n{SANDBOX_USER}:x:{SANDBOX_UID}:\nnogroup:x:65534:\n",
    "hosts": "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    "hostname": "sandbox\n",
    "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
    "resolv.conf": "",
}


class ImageMissing(RuntimeError):
    """The runtime image or a system tool a sandbox needs is not installed."""


def default_home() -> Path:
    if os.environ.get("SANDCELL_HOME"):
        return Path(os.environ["SANDCELL_HOME"])
    if os.geteuid() == 0:
        return Path("/opt/sandcell")
    return Path.home() / ".local" / "share" / "sandcell"


class Image:
    def __init__(self, home: Path | None = None) -> None:
        self.home = home or default_home()

    @property
    def python(self) -> Path:
        return self.home / "runtime" / "bin" / "python"

    @property
    def node_modules(self) -> Path:
        return self.home / "node" / "node_modules"

    @property
    def acorn(self) -> Path:
        return self.node_modules / "acorn"

    @property
    def amaro(self) -> Path:
        return self.node_modules / "amaro"

    def missing_node_packages(self) -> list[str]:
        return [name for name in node_packages() if not (self.node_modules / name / "package.json").exists()]

    @property
    def etc(self) -> Path:
        return self.home / "etc"

    @property
    def mpl_cache(self) -> Path:
        return self.home / "mpl"

    def template_packages(self, template: str) -> Path | None:
        """Where the host keeps the packages ``template`` adds (``None``: it adds none)."""
        if not templates.has_packages(template):
            return None
        return self.home / "templates" / template / templates.packages_digest(template)

    def template_mount(self, template: str) -> Path:
        """Where a sandbox of ``template`` sees its packages."""
        return self.home / "templates" / template

    def installed_templates(self) -> list[str]:
        """The templates with packages of their own that are installed."""
        return [name for name in templates.TEMPLATES if (packages := self.template_packages(name)) is not None and packages.is_dir()]

    def check_template(self, template: str) -> None:
        templates.check_template(template)
        packages = self.template_packages(template)
        if packages is not None and not packages.is_dir():
            raise ImageMissing(
                f"the {template} template is not installed (no {packages}): run `sandcell setup` to install it, or create the sandbox with template='base'"
            )

    def check(self) -> None:
        missing = []
        if not shutil.which("bwrap"):
            missing.append("bubblewrap (apt-get install bubblewrap)")
        if not shutil.which("node"):
            missing.append("Node.js (apt-get install nodejs)")
        if not self.python.exists():
            missing.append(f"the sandbox Python at {self.python}")
        missing += [f"the npm package {name} in {self.node_modules}" for name in self.missing_node_packages()]
        if not (self.etc / "passwd").exists():
            missing.append(f"the sandbox's /etc files in {self.etc}")
        if missing:
            raise ImageMissing(
                "sandcell is not set up: missing "
                + "; ".join(missing)
                + ". Run `sandcell setup` (as root on Debian/Ubuntu it installs the system packages too)."
            )

    @cached_property
    def stage(self) -> Path:
        """The in-sandbox code, copied where the sandbox's uid can read it."""
        digest = hashlib.sha256()
        sources = sorted(path for name in RUNTIME_SOURCES for path in (PACKAGE_DIR / name).rglob("*") if path.is_file() and "__pycache__" not in path.parts)
        for path in sources:
            digest.update(str(path.relative_to(PACKAGE_DIR)).encode() + b"\0" + path.read_bytes() + b"\0")
        target = self.home / "stage" / digest.hexdigest()[:16]
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            scratch = Path(tempfile.mkdtemp(dir=target.parent))
            package = scratch / "sandcell"
            package.mkdir()
            (package / "__init__.py").write_text('"""In-sandbox copy of sandcell\'s runtime and protocol."""\n')
            for path in sources:
                destination = package / path.relative_to(PACKAGE_DIR)
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, destination)
            java_stage.build_jar(scratch)
            for path in [scratch, *scratch.rglob("*")]:
                path.chmod(0o755 if path.is_dir() else 0o644)
            try:
                scratch.rename(target)
            except OSError:  # another process staged the same content first
                shutil.rmtree(scratch, ignore_errors=True)
            else:
                java_stage.build_archive(target)
        return target


@cache
def node_packages() -> tuple[str, ...]:
    """The npm packages sandboxes need (``runtime/package.json``)."""
    return tuple(json.loads((PACKAGE_DIR / "runtime" / "package.json").read_text())["dependencies"])


def _run(command: list[str], say: Callable[[str], None], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
    say("$ " + " ".join(command))
    subprocess.run(command, check=True, env=env, cwd=cwd)


# The system packages of the optional languages, and the program each provides.
LANGUAGE_PACKAGES = {"r": ("r-base-core", "R"), "java": ("default-jdk-headless", "javac")}


def build(
    image: Image | None = None,
    say: Callable[[str], None] = print,
    languages: tuple[str, ...] = tuple(LANGUAGE_PACKAGES),
    with_templates: tuple[str, ...] = (templates.CODE_INTERPRETER,),
) -> Image:
    """Install what sandboxes need and the packages of ``with_templates``; safe to run again (it skips what exists).

    ``languages`` are the optional ones (R, Java) whose system packages are
    installed too; without root they are only named, and their contexts say
    which package they miss when asked for.
    """
    image = image or Image()
    apt = [
        name for name, tool in (("bubblewrap", "bwrap"), ("nodejs", "node"), ("npm", "npm"), ("python3-venv", None)) if tool is None or not shutil.which(tool)
    ]
    system_python = shutil.which("python3", path="/usr/bin:/bin") or "python3"
    if apt and "python3-venv" in apt and _has_venv(system_python):
        apt.remove("python3-venv")
    optional = [LANGUAGE_PACKAGES[language][0] for language in languages if not shutil.which(LANGUAGE_PACKAGES[language][1])]
    can_install = os.geteuid() == 0 and shutil.which("apt-get") is not None
    if apt and not can_install:
        raise ImageMissing(f"install these system packages first: {', '.join(apt + optional)}")
    if optional and not can_install:
        say(f"R and Java contexts need these system packages, not installed: {', '.join(optional)}")
    elif apt or optional:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        _run(["apt-get", "update", "-q"], say, env=env)
        if apt:
            _run(["apt-get", "install", "-y", "-q", *apt], say, env=env)
        if optional:  # what they only recommend (R's manuals and compilers...) sandboxes never use
            _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *optional], say, env=env)
    image.home.mkdir(parents=True, exist_ok=True)
    image.home.chmod(0o755)
    if not image.python.exists():
        _run([system_python, "-m", "venv", str(image.home / "runtime")], say)
    requirements = PACKAGE_DIR / "runtime" / "requirements.txt"
    _run([str(image.python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(requirements)], say)
    node_dir = image.home / "node"
    node_dir.mkdir(exist_ok=True)
    shutil.copyfile(PACKAGE_DIR / "runtime" / "package.json", node_dir / "package.json")
    if image.missing_node_packages():
        _run(["npm", "install", "--no-audit", "--no-fund", "--silent"], say, cwd=node_dir)
    image.etc.mkdir(exist_ok=True)
    for name, text in ETC_FILES.items():
        (image.etc / name).write_text(text)
    for name in with_templates:
        packages = image.template_packages(name)
        if packages is not None and not packages.is_dir():
            started = time.monotonic()
            templates.install(image.python, packages, name, say)
            say(f"the {name} template's packages are in {packages} ({time.monotonic() - started:.0f} s)")
    image.mpl_cache.mkdir(exist_ok=True)
    _run([str(image.python), "-c", "import matplotlib.font_manager"], say, env={"MPLCONFIGDIR": str(image.mpl_cache), "PATH": "/usr/bin:/bin"})
    for path in [image.home, *image.home.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | (0o755 if path.is_dir() else 0o444))
    image.stage  # noqa: B018 - stage the current runtime code now
    say(f"sandcell runtime image ready in {image.home}")
    return image


def _has_venv(python: str) -> bool:
    return subprocess.run([python, "-c", "import ensurepip, venv"], capture_output=True, cwd="/", check=False).returncode == 0
