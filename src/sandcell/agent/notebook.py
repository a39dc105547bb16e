"""A conversation as a Jupyter notebook: the dialogue as markdown cells, each code
run as a code cell with its outputs (streams, results, images, errors).

The notebook's kernel is Python; JavaScript and Bash cells carry the IPython
cell magics that run them there (``%%script node``, ``%%bash``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import nbformat
from nbformat import v4

from .loop import Entry, Ran, Said

# The MIME types whose values nbformat lets be any JSON (its schema's pattern).
JSON_MIME = re.compile(r"^application/(.*\+)?json$")
MAGICS = {"javascript": "%%script node\n", "typescript": "%%script node --experimental-strip-types\n", "bash": "%%bash\n", "python": ""}


def notebook_bundle(bundle: dict[str, Any]) -> dict[str, Any]:
    """A result's MIME bundle as nbformat allows it: a value that is not text (E2B's
    ``e2b/chart`` and ``e2b/data`` dicts) goes under a JSON MIME type,
    ``e2b/chart`` as ``application/vnd.e2b.chart+json``."""
    allowed = {}
    for mime, value in bundle.items():
        as_json = not isinstance(value, str) and not JSON_MIME.match(mime)
        allowed[f"application/vnd.{mime.replace('/', '.')}+json" if as_json else mime] = value
    return allowed


def _outputs(run: Ran) -> list[Any]:
    execution = run.execution
    outputs: list[Any] = []
    for name in ("stdout", "stderr"):
        text = "".join(getattr(execution.logs, name))
        if text:
            outputs.append(v4.new_output("stream", name=name, text=text))
    for result in execution.results:
        if result.is_main_result:
            outputs.append(v4.new_output("execute_result", data=notebook_bundle(result.bundle), execution_count=execution.execution_count))
        else:
            outputs.append(v4.new_output("display_data", data=notebook_bundle(result.bundle)))
    if execution.error:
        error = execution.error
        outputs.append(v4.new_output("error", ename=error.name, evalue=error.value, traceback=error.traceback.splitlines()))
    return outputs


def to_notebook(transcript: list[Entry]) -> nbformat.NotebookNode:
    cells = []
    runs = 0
    for entry in transcript:
        if isinstance(entry, Said):
            speaker = "**You:**" if entry.role == "user" else "**Assistant:**"
            cells.append(v4.new_markdown_cell(f"{speaker} {entry.text}"))
        else:
            runs += 1
            cells.append(v4.new_code_cell(MAGICS[entry.language] + entry.code, execution_count=runs, outputs=_outputs(entry)))
    notebook: nbformat.NotebookNode = v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    return notebook


def save(transcript: list[Entry], path: Path) -> Path:
    notebook = to_notebook(transcript)
    nbformat.validate(notebook)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, str(path))
    return path
