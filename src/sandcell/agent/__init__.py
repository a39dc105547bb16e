"""The code interpreter agent: a model, the exec_code tool, and a sandbox."""

from .loop import Agent, Answer, CellOutput, CodeCell, Event, Notice, Output, Saved, TextDelta, Thinking
from .providers import ModelTurn, Provider, ProviderError, ToolCall
from .timing import StepTiming

__all__ = [
    "Agent",
    "Answer",
    "CellOutput",
    "CodeCell",
    "Event",
    "ModelTurn",
    "Notice",
    "Output",
    "Provider",
    "ProviderError",
    "Saved",
    "StepTiming",
    "TextDelta",
    "Thinking",
    "ToolCall",
]
