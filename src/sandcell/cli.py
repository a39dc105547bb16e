"""The ``sandcell`` command line."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from sandcell.server import cli as server_cli

app = typer.Typer(help="sandcell: a self-hosted code interpreter for LLM agents.", no_args_is_help=True, add_completion=False)
console = Console()
app.command()(server_cli.serve)
app.add_typer(server_cli.keys, name="keys")
LANGUAGE_BY_SUFFIX = {
    ".py": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".ts": "typescript",
    ".mts": "typescript",
    ".sh": "bash",
    ".bash": "bash",
    ".r": "r",
    ".R": "r",
}


@app.command()
def setup(
    r: bool = typer.Option(True, "--r/--no-r", help="install R (Debian's r-base-core) for R contexts"),
    java: bool = typer.Option(True, "--java/--no-java", help="install a JDK (Debian's default-jdk-headless) for Java contexts"),
    code_interpreter: bool = typer.Option(
        True, "--code-interpreter/--no-code-interpreter", help="install the code-interpreter-v1 template's packages (E2B's set: about 1.5 GB, a few minutes)"
    ),
) -> None:
    """Install what sandboxes need: bubblewrap, Node.js, R, a JDK, the runtime image and the code-interpreter-v1 template."""
    from sandcell.isolation.image import build
    from sandcell.isolation.templates import CODE_INTERPRETER

    languages = tuple(name for name, wanted in (("r", r), ("java", java)) if wanted)
    build(say=lambda line: console.print(f"[dim]{line}[/dim]"), languages=languages, with_templates=(CODE_INTERPRETER,) if code_interpreter else ())


@app.command()
def run(
    script: Path = typer.Argument(..., exists=True, dir_okay=False, help="a .py, .js, .ts, .sh or .R file"),
    language: str | None = typer.Option(None, help="python, javascript, typescript, bash, r or java (default: from the file's suffix)"),
    timeout: float = typer.Option(300, help="seconds before the run is interrupted"),
) -> None:
    """Run a script in a fresh sandbox and stream its output."""
    from sandcell import Sandbox

    language = language or LANGUAGE_BY_SUFFIX.get(script.suffix)
    if language is None:
        raise typer.BadParameter(f"cannot tell the language of {script.name}; pass --language")
    with Sandbox.create() as sandbox:
        execution = sandbox.run_code(
            script.read_text(),
            language=language,
            timeout=timeout,
            on_stdout=lambda message: sys.stdout.write(message.line),
            on_stderr=lambda message: sys.stderr.write(message.line),
        )
        sys.stdout.flush()
        for result in execution.results:
            # R's visible values are results of their own (as in IRkernel), which Rscript would print.
            if result.text and (result.is_main_result or (language == "r" and result.png is None)):
                console.print(result.text, markup=False, highlight=False)
        if execution.error:
            console.print(f"[red]{execution.error.name}: {execution.error.value}[/red]")
            if execution.error.traceback:
                console.print(execution.error.traceback, markup=False, highlight=False)
            raise typer.Exit(1)


@app.command()
def chat(
    prompt: str = typer.Argument(None, help="a question; without it, an interactive session (or the lines of stdin, when it is not a terminal)"),
    provider: str = typer.Option(
        None, help="local (the embedded model, the default without OPENAI_API_KEY) or openai (any OpenAI-compatible server: OPENAI_API_KEY, OPENAI_BASE_URL)"
    ),
    model: str = typer.Option(None, help="the model name for openai (default gpt-4o)"),
    max_steps: int = typer.Option(10, help="tool calls per question before the agent stops"),
    run_timeout: float = typer.Option(60, help="seconds each code run may take"),
    approve: bool = typer.Option(False, "--approve", help="ask before running each code cell"),
    output_dir: Path = typer.Option(Path("sandcell-output"), help="where charts and the files the code writes under /home/user/outputs are saved"),
    files: list[Path] = typer.Option([], "--file", exists=True, dir_okay=False, help="upload a file into /home/user (repeatable)"),
    save: Path = typer.Option(None, "--save", help="export the conversation as a Jupyter notebook (.ipynb)"),
    timings: bool = typer.Option(False, "--timings", help="at the end, print where each step's time went: model, sandbox, agent overhead"),
) -> None:
    """Ask a model that can run code in a sandbox.

    In a session: Enter sends; Esc+Enter (Alt+Enter) or a line ending in \\ starts
    a new line, and a paste keeps its lines; up/down browse the history
    (~/.cache/sandcell/chat_history); Ctrl-C stops the model or the running code
    and the session goes on; Ctrl-D or "exit" ends it. Piped stdin: one question
    per line, a trailing \\ continues it.
    """
    import os

    from rich.progress import Progress

    from sandcell import Sandbox
    from sandcell.agent import Agent, ProviderError
    from sandcell.agent.providers.local import LocalProvider
    from sandcell.agent.providers.openai_compatible import OpenAICompatibleProvider
    from sandcell.agent.session import chat_questions, run_session
    from sandcell.agent.view import ChatView, timings_table

    provider = provider or ("openai" if os.environ.get("OPENAI_API_KEY") else "local")
    try:
        if provider == "openai":
            chosen: Any = OpenAICompatibleProvider(model=model)
        elif provider == "local":
            chosen = LocalProvider(say=lambda line: console.print(f"[dim]{line}[/dim]"))
        else:
            raise typer.BadParameter(f"unknown provider {provider!r}; available: local, openai")
        console.print(f"[dim]provider {chosen.name}, model {chosen.model}[/dim]")
        if isinstance(chosen, LocalProvider):
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task("preparing the local model", total=None)
                chosen.load(progress=lambda done, total: progress.update(task, completed=done, total=total))
    except ProviderError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None

    view = ChatView(console)
    with Sandbox.create(timeout=None) as sandbox:
        agent = Agent(
            chosen, sandbox, on_event=view, max_steps=max_steps, output_dir=output_dir, approve=view.approve if approve else None, run_timeout=run_timeout
        )
        for local in files:
            console.print(f"[dim]uploaded {local} to {agent.upload(local)}[/dim]")
        failures = run_session(agent, view, chat_questions(prompt, view))
        if timings:
            console.print(timings_table(agent.timings))
        if save is not None:
            from sandcell.agent.notebook import save as save_notebook

            console.print(f"[dim]notebook saved to {save_notebook(agent.transcript, save)}[/dim]")
    if failures:
        raise typer.Exit(1)


@app.command()
def demo() -> None:
    """Create a sandbox and run Python, JavaScript and Bash in it."""
    from sandcell import Sandbox

    started = time.perf_counter()
    with Sandbox.create() as sandbox:
        console.print(f"sandbox [bold]{sandbox.sandbox_id}[/bold] ready in {1000 * (time.perf_counter() - started):.0f} ms")
        cells = [
            ("python", "import pandas as pd\nfib = [0, 1]\nfor _ in range(18): fib.append(fib[-1] + fib[-2])\npd.Series(fib).describe()"),
            ("javascript", "const fib = [0n, 1n];\nwhile (fib.length < 100) fib.push(fib.at(-1) + fib.at(-2));\nconsole.log(fib.join(', '))"),
            ("bash", 'cd /tmp && echo "I am $(id -un) in $(pwd) on $(hostname)" && ls /'),
        ]
        for language, code in cells:
            console.rule(f"[bold]{language}")
            console.print(code, markup=False, highlight=False, style="cyan")
            t0 = time.perf_counter()
            execution = sandbox.run_code(code, language=language, on_stdout=lambda m: console.print(m.line, end="", markup=False, highlight=False))
            if execution.text:
                console.print(execution.text, markup=False, highlight=False)
            if execution.error:
                console.print(f"[red]{execution.error.name}: {execution.error.value}[/red]")
            console.print(f"[dim]{1000 * (time.perf_counter() - t0):.1f} ms[/dim]")


if __name__ == "__main__":
    app()
