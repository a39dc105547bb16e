"""Contexts whose kernel speaks sandcell's tagged line protocol (R and Java).

Both sides write one line per message, fields separated by tabs, every
free-form field hex-encoded (so a kernel needs neither JSON nor base64):

    request   run <token> <code> NAME=<value>...
    events    ready
              result <token> <main: 0|1> <mime> <data> [<mime> <data>...]
              error <token> <name> <value> <traceback>
              done <token> <ok|error>

Events travel on their own pipe, never in the code's output, so nothing a
cell prints can end it. Each run has a fresh random token and only events
that carry it count: an event the code writes to the pipe itself without
knowing the token, or a late one of an earlier run, is dropped, not taken
for the run's end. Image data arrive as bytes and leave as base64, like
every other context's.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

from .base import Context

TEXT_MIMES = ("text/", "application/json", "image/svg+xml")


def unhex(field: str) -> bytes:
    try:
        return bytes.fromhex(field)
    except ValueError:
        return b""


def decode_data(mime: str, raw: bytes) -> str:
    if mime.startswith(TEXT_MIMES):
        return raw.decode("utf-8", "replace")
    return base64.b64encode(raw).decode()


class TaggedContext(Context):
    """A context speaking the tagged line protocol; subclasses say how to start the kernel."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._token = ""
        self._errored = False

    def interpreter(self) -> str:
        """The interpreter's path; ``LanguageNotInstalled`` when its package is missing."""
        raise NotImplementedError

    async def start(self) -> None:
        self.interpreter()  # a missing interpreter fails here, before any pipe is made
        await super().start()

    def encode_request(self, code: str, env: dict[str, str], silent: bool = False) -> bytes:
        self._token = secrets.token_hex(16)
        self._errored = False
        fields = ["run", self._token, code.encode().hex(), *(f"{name}={value.encode().hex()}" for name, value in env.items())]
        return ("\t".join(fields) + "\n").encode()

    def decode_event(self, line: bytes) -> dict[str, Any]:
        fields = line.decode("ascii", "replace").rstrip("\r").split("\t")
        kind = fields[0]
        token = fields[1] if len(fields) > 1 else ""
        if kind == "ready":
            return {"type": "ready"}
        if kind == "result" and len(fields) >= 5:
            pairs = fields[3:]
            data = {}
            for mime_field, value in zip(pairs[::2], pairs[1::2], strict=False):
                data[mime_field] = decode_data(mime_field, unhex(value))
            return {"type": "result", "token": token, "main": fields[2] == "1", "data": data}
        if kind == "error" and len(fields) == 5:
            name, value, traceback = (unhex(field).decode("utf-8", "replace") for field in fields[2:])
            return {"type": "error", "token": token, "name": name, "value": value, "traceback": traceback}
        if kind == "done" and len(fields) == 3:
            return {"type": "done", "token": token, "status": fields[2]}
        return {"type": "unreadable"}

    async def _dispatch_event(self, event: dict[str, Any], size: int) -> None:
        if event["type"] != "ready" and not (self._token and event.get("token") == self._token):
            return
        run = self.run
        if run is not None and event["type"] == "error":
            self._errored = True
        elif run is not None and event["type"] == "done" and run.interrupt_reason and not self._errored:
            # The interrupt ended what the cell was waiting for (R's system() ignores SIGINT
            # and returns when its child dies), and the cell went on: it still ran out of time.
            await run.output.event(self._error(run, {"name": "KeyboardInterrupt"}), 0)
        await super()._dispatch_event(event, size)
