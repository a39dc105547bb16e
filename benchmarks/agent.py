"""Where the interpreter agent's time goes, with the real embedded model.

    python benchmarks/agent.py [--threads N] [--json PATH]

Asks a few small questions (each in a fresh sandbox) of the local model and
prints, over all steps, the median and max of the model's time (and its time
to the first token, i.e. prompt processing), the sandbox's run time and the
agent's own overhead; writes every step's figures as JSON. Whether each
answer's code printed the expected value is shown too: a fast wrong answer
is no result.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, TypedDict

from sandcell import Sandbox
from sandcell.agent import Agent, CellOutput, Event
from sandcell.agent.providers.local import LocalProvider

PARTS = ("first_token", "model", "sandbox", "overhead", "total")


@dataclass(frozen=True)
class Task:
    question: str
    expected: str  # printed by the last cell when the code is right


TASKS = (
    Task("Generate the first 100 Fibonacci numbers using JavaScript", "4181"),
    Task("Generate the first 100 Fibonacci numbers using Python", "218922995834555169026"),
    Task("List the prime numbers below 100 using Python", "97"),
    Task("Compute the sum of the squares of the integers from 1 to 100 using bash", "338350"),
)


class Run(TypedDict):
    question: str
    correct: bool
    answer: str
    sandbox_start: float
    question_seconds: float
    steps: list[dict[str, Any]]


def run_task(provider: LocalProvider, task: Task, output_dir: Path) -> Run:
    outputs: list[str] = []

    def keep_output(event: Event) -> None:
        if isinstance(event, CellOutput):
            outputs.append("".join(event.execution.logs.stdout) + (event.execution.text or ""))

    started = time.perf_counter()
    with Sandbox.create() as sandbox:
        ready = time.perf_counter()
        agent = Agent(provider, sandbox, on_event=keep_output, output_dir=output_dir, run_timeout=20, max_steps=4)
        answer = agent.ask(task.question)
        asked = time.perf_counter()
    return {
        "question": task.question,
        "correct": bool(outputs) and task.expected in outputs[-1],
        "answer": answer,
        "sandbox_start": ready - started,
        "question_seconds": asked - ready,
        "steps": [step.as_dict() for step in agent.timings],
    }


def summary(runs: list[Run]) -> dict[str, dict[str, float]]:
    """Median and max of each part over every step of every run (steps without a value left out)."""
    steps = [step for run in runs for step in run["steps"]]
    figures = {}
    for part in PARTS:
        values = [step[part] for step in steps if step[part] is not None]
        figures[part] = {"median": statistics.median(values), "max": max(values)} if values else {}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "agent.json")
    args = parser.parse_args()

    provider = LocalProvider(threads=args.threads)
    started = time.perf_counter()
    provider.load()
    load_seconds = time.perf_counter() - started
    print(f"{provider.model}, {args.threads} threads, loaded in {load_seconds:.1f} s\n")

    runs = []
    with TemporaryDirectory() as scratch:
        for task in TASKS:
            run = run_task(provider, task, Path(scratch))
            runs.append(run)
            print(f"{'ok   ' if run['correct'] else 'WRONG'} {len(run['steps']):>2} steps {run['question_seconds']:6.1f} s  {task.question}")

    figures = summary(runs)
    steps = sum(len(run["steps"]) for run in runs)
    print(f"\nper step, over {steps} steps   median        max")
    for part in PARTS:
        if figures[part]:
            print(f"  {part:<24} {figures[part]['median'] * 1000:9.1f} ms {figures[part]['max'] * 1000:9.1f} ms")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"model": provider.model, "threads": args.threads, "load_seconds": load_seconds, "summary": figures, "runs": runs}, indent=2)
    )
    print(f"\nwritten to {args.json}")


if __name__ == "__main__":
    main()
