"""A real OpenAI-compatible HTTP server on loopback that replays scripted turns.

Each POST /v1/chat/completions takes the next scripted reply. A reply is a list
of streamed deltas (sent as server-sent events, or merged into one JSON answer
when the client did not ask to stream), the same after a delay (a model that
thinks), an HTTP error, or a stall.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def text(*pieces: str) -> list[dict[str, Any]]:
    return [{"content": piece} for piece in pieces]


def tool_call(index: int, call_id: str, name: str, arguments: str, pieces: int = 1) -> list[dict[str, Any]]:
    """A tool call streamed as the real API does: id and name first, then argument fragments."""
    size = max(1, -(-len(arguments) // pieces))
    fragments = [arguments[i : i + size] for i in range(0, len(arguments), size)] or [""]
    first = {"tool_calls": [{"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}]}
    return [first] + [{"tool_calls": [{"index": index, "function": {"arguments": fragment}}]} for fragment in fragments]


def exec_code(code: str, language: str = "python", index: int = 0, call_id: str = "call_1", pieces: int = 3) -> list[dict[str, Any]]:
    return tool_call(index, call_id, "exec_code", json.dumps({"code": code, "language": language}), pieces)


@dataclass
class Failure:
    status: int
    message: str = "scripted failure"


@dataclass
class Stall:
    seconds: float


@dataclass
class Delayed:
    """Deltas sent only after ``seconds``: the time a real model takes to its first token."""

    seconds: float
    deltas: list[dict[str, Any]]


@dataclass
class ScriptedServer:
    replies: list[Any] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                reply = server.replies.pop(0) if server.replies else Failure(500, "the script ran out of replies")
                if isinstance(reply, Stall):
                    time.sleep(reply.seconds)
                    reply = Failure(504, "stalled")
                if isinstance(reply, Delayed):
                    time.sleep(reply.seconds)
                    reply = reply.deltas
                if isinstance(reply, Failure):
                    self._json(reply.status, {"error": {"message": reply.message, "type": "server_error"}})
                elif body.get("stream"):
                    self._stream(reply, body["model"])
                else:
                    self._json(200, merged(reply, body["model"]))

            def _json(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, deltas: list[dict[str, Any]], model: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                finish = "tool_calls" if any("tool_calls" in d for d in deltas) else "stop"
                for delta in [{"role": "assistant", "content": ""}, *deltas]:
                    chunk = {
                        "id": "chatcmpl-1",
                        "object": "chat.completion.chunk",
                        "created": 0,
                        "model": model,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
                    }
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                end = {
                    "id": "chatcmpl-1",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": model,
                    "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
                }
                self.wfile.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def merged(deltas: list[dict[str, Any]], model: str) -> dict[str, Any]:
    content = "".join(d.get("content") or "" for d in deltas)
    calls: dict[int, dict[str, Any]] = {}
    for delta in deltas:
        for fragment in delta.get("tool_calls", []):
            call = calls.setdefault(fragment["index"], {"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
            call["id"] = fragment.get("id") or call["id"]
            call["function"]["name"] += fragment.get("function", {}).get("name") or ""
            call["function"]["arguments"] += fragment.get("function", {}).get("arguments") or ""
    message: dict[str, Any] = {"role": "assistant", "content": content or None}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
    }
