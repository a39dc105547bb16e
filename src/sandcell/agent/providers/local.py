"""The embedded local model, run in-process with llama-cpp-python.

Small models write tool calls as prose or fenced JSON instead of real
``tool_calls``, so this provider uses a *schema-constrained* mode: every turn
the model writes is JSON matching ``TURN_SCHEMA``, either "run this code in
this language" or "final answer", enforced by llama.cpp's grammar sampling.
The conversation is kept in OpenAI's shape by the agent and translated here:
earlier tool calls become the JSON the model wrote, tool results become user
messages.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import ModelTurn, ProviderError, ToolCall

TURN_SCHEMA = {
    "type": "object",
    "properties": {
        "action": {"type": "string", "enum": ["run_code", "final_answer"]},
        "language": {"type": "string", "enum": ["python", "javascript", "bash"]},
        "lines": {"type": "array", "items": {"type": "string"}},
        "answer": {"type": "string"},
    },
    "required": ["action"],
}
SCHEMA_INSTRUCTIONS = (
    "\n\nReply with one JSON object only. To run code: "
    '{"action": "run_code", "language": "python" | "javascript" | "bash", "lines": ["first line of code", "    an indented line", ...]}, '
    "one string per line of code, indentation kept. "
    'When you have the result, reply {"action": "final_answer", "answer": "..."}. '
    "Run code before answering anything that needs computing; print what you want to see. "
    'Example: to list the first 10 squares, reply {"action": "run_code", "language": "python", '
    '"lines": ["squares = []", "for i in range(10):", "    squares.append(i * i)", "print(squares)"]}'
)


def schema_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI-style messages with tool calls, as plain chat for a schema-constrained model."""
    converted = []
    for message in messages:
        role = message["role"]
        if role == "system":
            converted.append({"role": "system", "content": message["content"] + SCHEMA_INSTRUCTIONS})
        elif role == "assistant" and message.get("tool_calls"):
            for call in message["tool_calls"]:
                try:
                    arguments = json.loads(call["function"]["arguments"])
                except ValueError:
                    arguments = {}
                code = str(arguments.get("code", ""))
                turn = {"action": "run_code", "language": arguments.get("language", "python"), "lines": code.split("\n")}
                converted.append({"role": "assistant", "content": json.dumps(turn)})
        elif role == "assistant":
            converted.append({"role": "assistant", "content": json.dumps({"action": "final_answer", "answer": message.get("content") or ""})})
        elif role == "tool":
            converted.append({"role": "user", "content": "Output of your code:\n" + message["content"]})
        else:
            converted.append({"role": role, "content": message["content"]})
    return converted


def source_line(line: str) -> str:
    """One element of ``lines`` as the line of source it stands for.

    An element is one line, so a line break in it can only be the model's
    ``\\n`` (or ``\\r``) inside a string of the code, which JSON decoding
    turned into the character itself: it is put back as the two characters.
    """
    return line.replace("\r", "\\r").replace("\n", "\\n")


def parse_turn(raw: str, number: int) -> ModelTurn:
    try:
        turn = json.loads(raw)
    except ValueError:
        return ModelTurn(text=raw)  # the grammar should prevent this; treat it as an answer
    code = "\n".join(source_line(str(line)) for line in turn["lines"]) if isinstance(turn.get("lines"), list) else str(turn.get("code", ""))
    if turn.get("action") == "run_code" and code.strip():
        arguments = json.dumps({"code": code, "language": turn.get("language") or "python"})
        return ModelTurn(tool_calls=[ToolCall(id=f"call_{number}", name="exec_code", arguments=arguments)])
    return ModelTurn(text=str(turn.get("answer", "")))


class LocalProvider:
    name = "local"

    def __init__(self, model_path: Path | None = None, threads: int | None = None, context_tokens: int = 8192, say: Callable[[str], None] = print) -> None:
        from sandcell.agent.local_model import QWEN_CODER_1_5B

        self.model = QWEN_CODER_1_5B.name
        self._path = model_path
        self._threads = threads or max(1, min(os.cpu_count() or 1, 8))
        self._context_tokens = context_tokens
        self._say = say
        self._llama: Any = None
        self._turns = 0

    def load(self, progress: Callable[[int, int], None] = lambda done, total: None) -> None:
        if self._llama is not None:
            return
        from sandcell.agent.local_model import ensure_model

        try:
            from llama_cpp import Llama
        except ImportError:
            raise ProviderError("llama-cpp-python is not installed (scripts/setup.sh installs it)") from None
        path = self._path or ensure_model(progress=progress, say=self._say)
        self._llama = Llama(model_path=str(path), n_ctx=self._context_tokens, n_threads=self._threads, verbose=False)

    def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], on_text: Callable[[str], None]) -> ModelTurn:
        self.load()
        started = time.perf_counter()
        first_token: float | None = None
        pieces: list[str] = []
        try:
            # Streamed only to time the first token (prompt processing); the JSON turn is shown once parsed.
            for chunk in self._llama.create_chat_completion(
                messages=schema_messages(messages),
                response_format={"type": "json_object", "schema": TURN_SCHEMA},
                temperature=0.0,
                max_tokens=2048,
                stream=True,
            ):
                piece = chunk["choices"][0]["delta"].get("content")
                if piece:
                    first_token = first_token if first_token is not None else time.perf_counter() - started
                    pieces.append(piece)
        except ValueError as exc:  # e.g. the conversation outgrew the context window
            raise ProviderError(f"the local model failed: {exc}") from None
        self._turns += 1
        turn = parse_turn("".join(pieces), self._turns)
        turn.first_token = first_token
        if turn.text:
            on_text(turn.text)
        return turn
