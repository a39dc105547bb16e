"""Interpreters that come from the host's system packages (R, the JDK): found on the sandbox's PATH, or a clear error naming the package."""

from __future__ import annotations

import shutil


class LanguageNotInstalled(ValueError):
    """A context of a language whose system package is not installed (the request cannot be met here)."""


def find_program(name: str, path: str, language: str, package: str) -> str:
    """The full path of ``name`` on ``path``; ``LanguageNotInstalled`` naming ``package`` when there is none."""
    found = shutil.which(name, path=path)
    if found is None:
        raise LanguageNotInstalled(
            f"{language} contexts need `{name}`, which is not installed: install the Debian package {package} (`sandcell setup` does, as root)"
        )
    return found
