"""The agent's events on a terminal, with rich.

Streamed text is printed as it arrives, code highlighted, outputs dimmed, and
saved files named right after the cell that made them. A spinner runs while
the model thinks; it stops before anything else is printed, because a live
display and text printed without a newline garble each other.
"""

from __future__ import annotations

from rich.console import Console
from rich.prompt import Confirm
from rich.status import Status
from rich.syntax import Syntax
from rich.table import Table

from .loop import Answer, CellOutput, CodeCell, Event, Notice, Output, Saved, TextDelta, Thinking
from .timing import StepTiming

SYNTAX_NAMES = {"javascript": "js", "typescript": "ts"}


class ChatView:
    """An ``on_event`` handler for ``Agent`` that draws on a rich console."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._status: Status | None = None
        self._streamed = False  # the running cell's output has been shown as it came

    def __call__(self, event: Event) -> None:
        if isinstance(event, Thinking):
            self._spin()
            return
        self.idle()
        if isinstance(event, TextDelta):
            self.console.print(event.text, end="", markup=False, highlight=False)
        elif isinstance(event, CodeCell):
            self._streamed = False
            self.console.print()
            self.console.print(Syntax(event.code, SYNTAX_NAMES.get(event.language, event.language), theme="ansi_dark"))
        elif isinstance(event, Output):
            self._streamed = True
            self.console.print(event.text, end="", style="red" if event.error else "dim", markup=False, highlight=False)
        elif isinstance(event, CellOutput):
            shown = event.results if self._streamed else event.rendered
            if shown:
                self.console.print(shown, style="dim", markup=False, highlight=False)
        elif isinstance(event, Saved):
            for path in event.paths:
                self.console.print(f"saved {path}", style="green", markup=False, highlight=False, soft_wrap=True)
        elif isinstance(event, Notice):
            self.console.print(event.text, style="yellow", markup=False, highlight=False)
        elif isinstance(event, Answer):
            self.console.print()

    def idle(self) -> None:
        """Stop the spinner, if it runs."""
        if self._status is not None:
            self._status.stop()
            self._status = None

    def question(self, text: str) -> None:
        """Echo a question that nobody typed here (piped in), so the output reads as a dialogue."""
        self.console.print(f"you> {text}", style="bold", markup=False, highlight=False)

    def interrupted(self) -> None:
        self.idle()
        self.console.print("\ninterrupted", style="yellow")

    def error(self, message: str) -> None:
        self.idle()
        self.console.print(message, style="red", markup=False, highlight=False)

    def approve(self, cell: CodeCell) -> bool:
        """Ask before a cell runs; Ctrl-C here interrupts the question like anywhere else."""
        return Confirm.ask(f"run this {cell.language} code?", default=True, console=self.console)

    def _spin(self) -> None:
        if self._status is None:
            self._status = self.console.status("thinking", spinner="dots")
            self._status.start()


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def timings_table(timings: list[StepTiming]) -> Table:
    """Where each step's time went, and the sum."""
    table = Table(title="timings", title_justify="left")
    for column in ("step", "first token", "model", "sandbox", "overhead", "total"):
        table.add_column(column, justify="right")
    for number, step in enumerate(timings, start=1):
        table.add_row(str(number), *map(seconds, (step.first_token, step.model, step.sandbox, step.overhead, step.total)))
    sums = [sum(getattr(step, part) for step in timings) for part in ("model", "sandbox", "overhead", "total")]
    table.add_row("all", "", *map(seconds, sums), style="bold")
    return table
