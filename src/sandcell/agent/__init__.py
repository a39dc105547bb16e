"""The code interpreter agent: a model, the exec_code tool, and a sandbox."""

from .loop import Agent, Answer, CellOutput, CodeCell, Event, Notice, TextDelta
from .providers import ModelTurn, Provider, ProviderError, ToolCall

__all__ = ["Agent", "Answer", "CellOutput", "CodeCell", "Event", "ModelTurn", "Notice", "Provider", "ProviderError", "TextDelta", "ToolCall"]
