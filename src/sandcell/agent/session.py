"""A ``sandcell chat`` session: where the questions come from, and what Ctrl-C means.

At a terminal, questions are read with prompt_toolkit so the session feels
like a REPL: up/down browse the history (kept in
``~/.cache/sandcell/chat_history``), Esc+Enter (Alt+Enter) or a line ending
in a backslash starts a new line, and a paste keeps its lines. Anywhere else
(``echo question | sandcell chat``) each line of stdin is a question, a
trailing backslash continuing it, so scripts need no terminal.

Ctrl-C during a question stops what runs (the model's turn or the code; the
sandbox keeps its state) and the session goes on; Ctrl-D or ``exit`` ends it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from .loop import Agent
from .providers import ProviderError
from .view import ChatView

if TYPE_CHECKING:
    from prompt_toolkit.key_binding import KeyBindings

EXIT_WORDS = ("exit", "quit")
CONTINUATION = "\\"
PROMPT = "you> "


def history_path() -> Path:
    return Path.home() / ".cache" / "sandcell" / "chat_history"


def piped_questions(stream: TextIO, show: Callable[[str], None]) -> Iterator[str]:
    """One question per line; a line ending in a backslash goes on with the next."""
    lines: list[str] = []
    for raw in stream:
        line = raw.rstrip("\r\n")
        if line.endswith(CONTINUATION):
            lines.append(line[: -len(CONTINUATION)])
            continue
        question = "\n".join([*lines, line])
        lines = []
        show(question)
        yield question
    if lines:
        show("\n".join(lines))
        yield "\n".join(lines)


def typed_questions(history: Path) -> Iterator[str]:
    """Questions typed at a terminal, each kept in ``history``, until Ctrl-D."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory

    history.parent.mkdir(parents=True, exist_ok=True)
    session: PromptSession[str] = PromptSession(history=FileHistory(str(history)), key_bindings=_multiline_keys(), prompt_continuation="...  ")
    while True:
        try:
            yield session.prompt(PROMPT)
        except KeyboardInterrupt:
            continue  # Ctrl-C at the prompt drops the line, as in Python's REPL
        except EOFError:
            return


def _multiline_keys() -> KeyBindings:
    """Enter sends the question, except after a trailing backslash; Esc+Enter always starts a new line."""
    from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent

    keys = KeyBindings()

    @keys.add("escape", "enter")
    def _new_line(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text("\n")

    @keys.add("enter")
    def _send_or_continue(event: KeyPressEvent) -> None:
        buffer = event.current_buffer
        if buffer.document.is_cursor_at_the_end and buffer.text.endswith(CONTINUATION):
            buffer.delete_before_cursor(len(CONTINUATION))
            buffer.insert_text("\n")
        else:
            buffer.validate_and_handle()

    return keys


def chat_questions(prompt: str | None, view: ChatView) -> Iterable[str]:
    """The one question given on the command line, else those typed at a terminal, else those piped in."""
    if prompt:
        return [prompt]
    if sys.stdin.isatty() and sys.stdout.isatty():
        return typed_questions(history_path())
    return piped_questions(sys.stdin, view.question)


def run_session(agent: Agent, view: ChatView, questions: Iterable[str]) -> int:
    """Ask each question in turn until they end or one is ``exit``; returns how many the model failed."""
    failures = 0
    for question in questions:
        if question.strip().lower() in EXIT_WORDS:
            break
        if not question.strip():
            continue
        try:
            agent.ask(question)
        except ProviderError as exc:
            failures += 1
            view.error(str(exc))
        except KeyboardInterrupt:
            view.interrupted()
    return failures
