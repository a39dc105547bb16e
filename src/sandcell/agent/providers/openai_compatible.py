"""Any OpenAI-compatible chat-completions endpoint, through the ``openai`` SDK.

Streams the answer; tool calls arrive as fragments keyed by index (id and
name first, arguments in pieces) and are put back together here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import openai

from . import ModelTurn, ProviderError, ToolCall

DEFAULT_MODEL = "gpt-4o"


class OpenAICompatibleProvider:
    name = "openai"

    def __init__(self, model: str | None = None, api_key: str | None = None, base_url: str | None = None, timeout: float = 120.0, max_retries: int = 2) -> None:
        self.model = model or DEFAULT_MODEL
        try:
            self.client = openai.OpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries)
        except openai.OpenAIError as exc:
            raise ProviderError(f"{exc} (set OPENAI_API_KEY, or OPENAI_BASE_URL for another OpenAI-compatible server)") from None

    def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], on_text: Callable[[str], None]) -> ModelTurn:
        started = time.perf_counter()
        try:
            stream = self.client.chat.completions.create(model=self.model, messages=messages, tools=tools, stream=True)  # type: ignore[arg-type]  # messages and tools are plain dicts here; openai types each kind as its own TypedDict
            return self._collect(stream, on_text, started)
        except openai.APIStatusError as exc:
            raise ProviderError(f"the model server answered HTTP {exc.status_code}: {exc.message}") from None
        except openai.APITimeoutError:
            raise ProviderError("the model server did not answer in time") from None
        except openai.APIConnectionError as exc:
            raise ProviderError(f"cannot reach the model server: {exc}") from None

    @staticmethod
    def _collect(stream: Any, on_text: Callable[[str], None], started: float) -> ModelTurn:
        turn = ModelTurn()
        calls: dict[int, ToolCall] = {}
        for chunk in stream:
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            if turn.first_token is None and (delta.content or delta.tool_calls):
                turn.first_token = time.perf_counter() - started
            if delta.content:
                turn.text += delta.content
                on_text(delta.content)
            for fragment in delta.tool_calls or []:
                call = calls.setdefault(fragment.index, ToolCall(id="", name="", arguments=""))
                if fragment.id:
                    call.id = fragment.id
                if fragment.function is not None:
                    call.name += fragment.function.name or ""
                    call.arguments += fragment.function.arguments or ""
        turn.tool_calls = [calls[index] for index in sorted(calls)]
        for number, call in enumerate(turn.tool_calls):
            call.id = call.id or f"call_{number}"
        return turn
