"""The languages a sandbox runs, and the other names they are asked for by: one table for host, agent and sandbox."""

from __future__ import annotations

LANGUAGES = ("python", "javascript", "typescript", "bash", "r", "java")
LANGUAGE_ALIASES = {"py": "python", "python3": "python", "js": "javascript", "node": "javascript", "ts": "typescript", "sh": "bash", "shell": "bash"}


def normalize_language(language: str | None) -> str:
    """The language ``language`` names (``python`` when none); ``ValueError`` for one sandcell does not run."""
    name = (language or "python").strip().lower()
    name = LANGUAGE_ALIASES.get(name, name)
    if name not in LANGUAGES:
        raise ValueError(f"unknown language {language!r}; sandcell runs {', '.join(LANGUAGES)}")
    return name
