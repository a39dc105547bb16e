"""The interpreter loop: ask the model, run the code it asks for, repeat until it answers.

The sandbox lives as long as the ``Agent``: variables and files carry over
between steps and between questions. Everything that happens is reported as
an event, so a CLI, a web UI or a test can show or check it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandcell.sandbox import Execution, Sandbox

from .outputs import OutputCopier
from .providers import ModelTurn, Provider
from .timing import StepClock, StepTiming
from .tool import EXEC_CODE, BadArguments, ImageStore, parse_arguments, render_parts

SYSTEM_PROMPT = (
    "You are a helpful assistant with a code interpreter. To compute, inspect data or make charts, call the "
    "exec_code tool with code in python, javascript, typescript or bash; you will get its output back. Variables and files "
    "persist between calls. Write straightforward, efficient code (loops rather than deep recursion) and print "
    "what you need to see. When you have what you need, answer the user directly and briefly: the user already "
    "sees the code and its output, so do not repeat long outputs. Save files meant for the user under "
    "/home/user/outputs."
)
DEFAULT_RUN_TIMEOUT = 60.0
DEFAULT_MAX_STEPS = 10


@dataclass
class Thinking:
    """The model has been asked and nothing of its turn has arrived yet (a UI shows a spinner)."""


@dataclass
class TextDelta:
    text: str


@dataclass
class CodeCell:
    language: str
    code: str


@dataclass
class Output:
    """A chunk of a running cell's stdout or stderr, as it comes."""

    text: str
    error: bool


@dataclass
class CellOutput:
    execution: Execution
    rendered: str  # what the model is told
    results: str  # the part of it that is not the streamed output: results, images, error


@dataclass
class Saved:
    """Files the last cell produced, now on the person's disk: its images and what it wrote under outputs."""

    paths: list[Path]


@dataclass
class Notice:
    """Something the person should know that is neither model text nor code output."""

    text: str


@dataclass
class Answer:
    text: str


Event = Thinking | TextDelta | CodeCell | Output | CellOutput | Saved | Notice | Answer


@dataclass
class Said:
    """A message of the dialogue, kept for the transcript."""

    role: str  # "user" or "assistant"
    text: str


@dataclass
class Ran:
    """A code cell the agent ran, with its outcome, kept for the transcript."""

    language: str
    code: str
    execution: Execution


Entry = Said | Ran


class Agent:
    def __init__(
        self,
        provider: Provider,
        sandbox: Sandbox,
        on_event: Callable[[Event], None] = lambda event: None,
        max_steps: int = DEFAULT_MAX_STEPS,
        output_dir: Path = Path("sandcell-output"),
        approve: Callable[[CodeCell], bool] | None = None,
        system_prompt: str = SYSTEM_PROMPT,
        run_timeout: float = DEFAULT_RUN_TIMEOUT,
    ) -> None:
        self.provider = provider
        self.sandbox = sandbox
        self.on_event = on_event
        self.max_steps = max_steps
        self.output_dir = output_dir
        self.images = ImageStore(output_dir)
        self.approve = approve
        self.run_timeout = run_timeout
        self.messages: list[dict[str, Any]] = [{"role": "system", "content": system_prompt}]
        self.transcript: list[Entry] = []
        self.timings: list[StepTiming] = []
        self.outputs = OutputCopier(output_dir)

    def ask(self, question: str) -> str:
        """One question; returns the model's final answer.

        A KeyboardInterrupt (Ctrl-C) stops the model turn or the code running
        now and propagates; the conversation stays valid for the next question.
        Every step, interrupted ones included, adds its ``StepTiming``.
        """
        self.messages.append({"role": "user", "content": question})
        self.transcript.append(Said("user", question))
        for _ in range(self.max_steps):
            clock = StepClock()
            try:
                answer = self._step(clock)
            finally:
                self.timings.append(clock.stop())
            if answer is not None:
                return answer
        notice = f"Stopped after {self.max_steps} steps: the model kept calling tools without answering."
        self.on_event(Notice(notice))
        return notice

    def _step(self, clock: StepClock) -> str | None:
        """One model turn and the code it asks for; the model's answer if it gave one."""
        self.on_event(Thinking())
        with clock.measuring("model"):
            turn = self.provider.complete(self.messages, [EXEC_CODE], lambda text: self.on_event(TextDelta(text)))
        clock.first_token = turn.first_token
        self.messages.append(self._assistant_message(turn))
        if turn.text:
            self.transcript.append(Said("assistant", turn.text))
        if not turn.tool_calls:
            self.on_event(Answer(turn.text))
            return turn.text
        for number, call in enumerate(turn.tool_calls):
            try:
                result = self._run_tool(call.name, call.arguments, clock)
            except KeyboardInterrupt:
                # Every tool call needs its answer, or the next request is refused.
                for pending in turn.tool_calls[number:]:
                    self.messages.append({"role": "tool", "tool_call_id": pending.id, "content": "error: the user interrupted this run"})
                raise
            self.messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
        return None

    def upload(self, local: Path) -> str:
        """Put a file of the person's into /home/user; returns its path in the sandbox."""
        remote = f"/home/user/{local.name}"
        self.sandbox.files.write(remote, local.read_bytes())
        self.messages.append({"role": "user", "content": f"(I uploaded {local.name}; it is at {remote}.)"})
        return remote

    def _save_outputs(self) -> list[Path]:
        """Copy the files under /home/user/outputs that are new or changed since the last cell.

        Run after every cell, so the person learns where a file is as soon as
        it exists, and each file is copied once per version, not once per cell.
        """
        saved, refused = self.outputs.copy_new(self.sandbox)
        for line in refused:
            self.on_event(Notice(line))
        return saved

    @staticmethod
    def _assistant_message(turn: ModelTurn) -> dict[str, Any]:
        # content "" rather than None: some servers (llama.cpp's) reject None beside tool_calls.
        message: dict[str, Any] = {"role": "assistant", "content": turn.text or ""}
        if turn.tool_calls:
            message["tool_calls"] = [
                {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}} for call in turn.tool_calls
            ]
        return message

    def _run_tool(self, name: str, arguments: str, clock: StepClock) -> str:
        if name != "exec_code":
            self.on_event(Notice(f"The model called an unknown tool {name!r}."))
            return f"error: there is no tool named {name!r}; the only tool is exec_code(code, language)"
        try:
            code, language = parse_arguments(arguments)
        except BadArguments as exc:
            self.on_event(Notice(f"The model sent unusable arguments: {exc}"))
            return f"error: {exc}"
        cell = CodeCell(language, code)
        self.on_event(cell)
        if self.approve is not None:
            with clock.paused():
                approved = self.approve(cell)
            if not approved:
                return "error: the user declined to run this code"
        with clock.measuring("sandbox"):
            execution = self.sandbox.run_code(
                code,
                language=language,
                timeout=self.run_timeout,
                on_stdout=lambda message: self.on_event(Output(message.line, False)),
                on_stderr=lambda message: self.on_event(Output(message.line, True)),
            )
        images_before = len(self.images.saved)
        output, rest = render_parts(execution, self.images)
        rendered = "\n\n".join(output + rest) or "(no output)"
        self.transcript.append(Ran(language, code, execution))
        self.on_event(CellOutput(execution, rendered, "\n\n".join(rest)))
        saved = [image.path for image in self.images.saved[images_before:]] + self._save_outputs()
        if saved:
            self.on_event(Saved(saved))
        return rendered
