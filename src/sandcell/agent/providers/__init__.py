"""Model providers: small plugins behind one interface.

A provider turns the conversation so far (OpenAI chat messages) and the tool
schemas into the model's next turn: text, tool calls, or both. Streaming text
goes to ``on_text`` as it arrives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


class ProviderError(RuntimeError):
    """The model could not be reached or answered with an error."""


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # raw JSON text, exactly as the model wrote it


@dataclass
class ModelTurn:
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    # Seconds from the request to the first token (text or tool call), when the
    # provider streams: apart from the total, it tells prompt processing from generation.
    first_token: float | None = None


class Provider(Protocol):
    name: str
    model: str

    def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], on_text: Callable[[str], None]) -> ModelTurn: ...
