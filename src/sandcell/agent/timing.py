"""Where the time of each agent step goes.

A step is one model turn plus the code cells it asked for. Its wall time
splits into the model's time, the sandbox's time running code, and the rest:
the agent's own overhead (parsing arguments, rendering outputs for the model,
saving images and files, showing events). Knowing the split tells whether a
slow answer is the model, the code, or sandcell itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class StepTiming:
    """Seconds spent in one step; ``model + sandbox + overhead == total``."""

    model: float
    first_token: float | None  # from the request to the first streamed token; None if the provider did not stream
    sandbox: float
    overhead: float
    total: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class StepClock:
    """Measures one step as it happens.

    Time spent waiting for the person (``paused``, e.g. approving a cell) is
    left out of the step's total: it says nothing about the model, the sandbox
    or the agent, and would otherwise show up as overhead.
    """

    def __init__(self) -> None:
        self._started = time.perf_counter()
        self._paused = 0.0
        self.model = 0.0
        self.sandbox = 0.0
        self.first_token: float | None = None

    @contextmanager
    def measuring(self, part: str) -> Iterator[None]:
        """Add the time of the ``with`` block to ``part`` ("model" or "sandbox")."""
        started = time.perf_counter()
        try:
            yield
        finally:
            setattr(self, part, getattr(self, part) + time.perf_counter() - started)

    @contextmanager
    def paused(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self._paused += time.perf_counter() - started

    def stop(self) -> StepTiming:
        total = time.perf_counter() - self._started - self._paused
        overhead = max(0.0, total - self.model - self.sandbox)
        return StepTiming(self.model, self.first_token, self.sandbox, overhead, self.model + self.sandbox + overhead)
