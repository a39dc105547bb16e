"""The ``exec_code`` tool: its schema, reading the model's arguments, and
turning an execution into text the model can use.
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandcell.protocol import LANGUAGES, normalize_language
from sandcell.sandbox.models import Execution

OUTPUT_HEAD = 4000
OUTPUT_TAIL = 2000
TRACEBACK_LINES = 25
CHART_HEAD = 1500
CHART_TAIL = 500

EXEC_CODE = {
    "type": "function",
    "function": {
        "name": "exec_code",
        "description": (
            "Run code in a persistent sandbox and get its output. Variables, imports and files persist between calls. "
            "Python has numpy, pandas and matplotlib (figures are shown to the user); JavaScript runs in Node.js, "
            "TypeScript too (types are stripped, not checked); "
            "bash runs shell commands. Files live in /home/user. There is no network."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "description": "the code to run"},
                "language": {"type": "string", "enum": list(LANGUAGES), "description": ", ".join(LANGUAGES)},
            },
            "required": ["code", "language"],
        },
    },
}


class BadArguments(ValueError):
    """The model's arguments cannot be run; the message tells it how to fix them."""


def parse_arguments(raw: str) -> tuple[str, str]:
    """``(code, language)`` from the model's JSON arguments."""
    try:
        arguments = json.loads(raw or "{}")
    except ValueError as exc:
        raise BadArguments(f'the arguments are not valid JSON ({exc}); send {{"code": "...", "language": "python"}}') from None
    if not isinstance(arguments, dict):
        raise BadArguments("the arguments must be a JSON object with 'code' and 'language'")
    code = arguments.get("code")
    if not isinstance(code, str) or not code.strip():
        raise BadArguments("'code' is missing or empty")
    try:
        language = normalize_language(str(arguments.get("language") or "python"))
    except ValueError:
        raise BadArguments(f"unknown language {arguments.get('language')!r}; use one of {', '.join(LANGUAGES)}") from None
    return code, language


def cut(text: str, head: int = OUTPUT_HEAD, tail: int = OUTPUT_TAIL) -> str:
    """Keep the start and the end of a long output, with a marker between."""
    if len(text) <= head + tail:
        return text
    return f"{text[:head]}\n[... {len(text) - head - tail} characters cut ...]\n{text[-tail:]}"


def png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24:
        return None
    return struct.unpack(">II", data[16:24])


@dataclass
class SavedImage:
    path: Path
    width: int | None
    height: int | None


class ImageStore:
    """Keeps the images a conversation produces, for the person (the model gets a description)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.saved: list[SavedImage] = []

    def save(self, png_base64: str) -> SavedImage:
        data = base64.b64decode(png_base64)
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"chart-{len(self.saved) + 1}.png"
        path.write_bytes(data)
        size = png_size(data)
        image = SavedImage(path, *(size or (None, None)))
        self.saved.append(image)
        return image


def describe_chart(chart: dict[str, Any]) -> str:
    """What the model learns of a figure: E2B's description of its chart (type, titles, axes, data) as compact JSON, long data cut."""
    return "chart data: " + cut(json.dumps(chart, separators=(",", ":"), default=str), CHART_HEAD, CHART_TAIL)


def render_parts(execution: Execution, images: ImageStore) -> tuple[list[str], list[str]]:
    """What the model sees of one run, in two parts: the output, and the rest (results, images, error)."""
    output: list[str] = []
    rest: list[str] = []
    stdout, stderr = "".join(execution.logs.stdout), "".join(execution.logs.stderr)
    if stdout:
        output.append("stdout:\n" + cut(stdout))
    if stderr:
        output.append("stderr:\n" + cut(stderr))
    for result in execution.results:
        if result.png:
            image = images.save(result.png)
            size = f" {image.width}x{image.height}" if image.width else ""
            rest.append(f"[image/png{size} saved as {image.path.name} and shown to the user]")
            if result.chart:
                rest.append(describe_chart(result.chart))
        elif result.text is not None:
            label = "result" if result.is_main_result else "display"
            rest.append(f"{label}:\n" + cut(result.text))
    if execution.error:
        error = execution.error
        trace = "\n".join(error.traceback.splitlines()[-TRACEBACK_LINES:])
        rest.append(f"error: {error.name}: {error.value}" + (f"\n{trace}" if trace else ""))
        if error.name == "TimeoutError":
            rest.append("hint: the code was too slow; use a faster approach (iterate instead of recursing, work on less data)")
    return output, rest
