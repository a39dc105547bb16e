"""Spare contexts: one started, never used interpreter per language, kept ready.

Node and bash cannot be forked from a warm parent the way Python contexts
are (a Node process holds threads), so creating one costs a full start
(Node: over 100 ms). A sandbox that keeps a spare hands it over instead: the
spare moves to the asked cwd and takes exactly the asked environment
(``Context.adopt``), and a new spare starts in the background.

A spare never ran code and belongs to this sandbox only, so what the caller
gets is what a fresh start would give; only ``ps`` tells the difference.
A spare that died while waiting, or cannot take the asked environment (a
name bash cannot export), is dropped and the context starts cold.
"""

from __future__ import annotations

import asyncio
import sys

from sandcell.protocol import ENV_NAME

from .contexts import Context, Runtime, start_context

REFILL_DELAY = 0.25
# The spare a language's context can be made from, when not its own: a JavaScript
# kernel becomes a TypeScript one when it is set up (it loads the type stripper then).
SPARE_OF = {"typescript": "javascript"}


class Spares:
    def __init__(self, runtime: Runtime, home: str, languages: list[str]) -> None:
        self.runtime = runtime
        self.home = home
        self.languages = languages
        self._starting: dict[str, asyncio.Task[Context]] = {}

    def fill(self) -> None:
        """Start a spare for each language that has none (started or starting)."""
        for language in self.languages:
            if language not in self._starting:
                task = self._starting[language] = asyncio.ensure_future(start_context(self.runtime, language, self.home, {}))
                task.add_done_callback(_report_failure)

    async def take(self, language: str, cwd: str, env: dict[str, str]) -> Context | None:
        """The spare of ``language`` as a context in ``cwd`` with ``env``; ``None``: start one cold.

        A spare still starting is waited for: it is further along than a new start.
        """
        kind = SPARE_OF.get(language, language)
        if kind not in self._starting or not all(ENV_NAME.match(name) for name in (*env, *self.runtime.base_env)):
            return None
        task = self._starting.pop(kind)
        try:
            context = await asyncio.shield(task)
        except asyncio.CancelledError:
            self._starting.setdefault(kind, task)  # our caller was cancelled, not the spare
            raise
        except Exception:  # noqa: BLE001 - reported by the task's callback; start cold
            self.fill()
            return None
        try:
            async with context.lock:
                context.language = language
                await context.adopt(cwd, env)
        except asyncio.CancelledError:
            await context.stop()
            raise
        except Exception as exc:  # noqa: BLE001 - a spare that died idle: start cold
            print(f"sandcell supervisor: the spare {language} context was dropped: {exc}", file=sys.stderr)
            await context.stop()
            return None
        finally:
            # Later, not now: starting the next one takes the sandbox's CPU
            # from the first cell the caller is about to run.
            asyncio.get_running_loop().call_later(REFILL_DELAY, self.fill)
        return context

    async def stop(self) -> None:
        tasks, self._starting = list(self._starting.values()), {}
        for task in tasks:
            task.cancel()
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, Context):
                await outcome.stop()


def _report_failure(task: asyncio.Task[Context]) -> None:
    if not task.cancelled() and task.exception() is not None:
        print(f"sandcell supervisor: a spare context failed to start: {task.exception()}", file=sys.stderr)
