"""``Sandbox.fork()``: an independent sandbox carrying a copy of the files and Python state."""

from __future__ import annotations

import asyncio
import warnings
from typing import Callable

import pytest

from sandcell import AsyncSandbox, Sandbox


@pytest.fixture
def forked(make_sandbox: Callable[..., Sandbox]) -> tuple[Sandbox, Sandbox]:
    source = make_sandbox(envs={"ORIGIN": "env"}, metadata={"who": "source"})
    source.run_code(
        "import numpy as np, pandas as pd\n"
        "import matplotlib.pyplot as plt\n"
        "offset = 41\n"
        "def add(value): return value + offset\n"
        "class Shape:\n    sides = 4\n"
        "frame = pd.DataFrame({'n': np.arange(100_000)})\n"
        "shared = [1, 2]\nalias = shared\n"
        "fig, ax = plt.subplots(); ax.plot([3, 1, 2])\n"
        "numbers = (n for n in range(3))\n"
    )
    source.files.write("/home/user/notes/a.txt", "written before the fork")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        child = source.fork()
    source._left_behind = [str(warning.message) for warning in caught]  # type: ignore[attr-defined]
    yield source, child
    child.kill()


def test_the_fork_has_the_state_and_files(forked: tuple[Sandbox, Sandbox]) -> None:
    source, child = forked
    assert child.sandbox_id != source.sandbox_id
    assert child.run_code("add(1), Shape.sides, int(frame.n.sum()), alias is shared, len(fig.axes)").text == "(42, 4, 4999950000, True, 1)"
    assert child.run_code("np.arange(3).tolist(), pd.__name__").text == "([0, 1, 2], 'pandas')"
    assert child.files.read("/home/user/notes/a.txt") == "written before the fork"
    assert child.run_code("import os; os.environ['ORIGIN']").text == "'env'"
    assert child.get_info().metadata == {"who": "source"}


def test_what_cannot_be_pickled_is_named_not_silently_lost(forked: tuple[Sandbox, Sandbox]) -> None:
    source, child = forked
    assert any("numbers" in message for message in source._left_behind)  # type: ignore[attr-defined]
    assert child.run_code("'numbers' in globals()").text == "False"
    assert source.run_code("list(numbers)").text == "[0, 1, 2]"


def test_the_two_are_independent_afterwards(forked: tuple[Sandbox, Sandbox]) -> None:
    source, child = forked
    child.run_code("offset = 0; frame['n'] = 0; shared.append(3)")
    child.files.write("/home/user/notes/a.txt", "changed in the fork")
    child.files.write("/home/user/only-in-fork.txt", "x")
    source.files.write("/home/user/only-in-source.txt", "y")
    assert source.run_code("add(1), int(frame.n.sum()), shared").text == "(42, 4999950000, [1, 2])"
    assert child.run_code("add(1), int(frame.n.sum()), shared").text == "(1, 0, [1, 2, 3])"
    assert source.files.read("/home/user/notes/a.txt") == "written before the fork"
    assert not source.files.exists("/home/user/only-in-fork.txt")
    assert not child.files.exists("/home/user/only-in-source.txt")
    source.kill()
    assert child.run_code("add(2)").text == "2", "the fork outlives its source"


def test_the_fork_does_not_touch_the_sources_history(make_sandbox: Callable[..., Sandbox]) -> None:
    source = make_sandbox()
    first = source.run_code("x = 1")
    child = source.fork()
    try:
        assert source.run_code("x").execution_count == (first.execution_count or 0) + 1
        assert child.run_code("x").text == "1"
    finally:
        child.kill()


def test_async_fork() -> None:
    async def scenario() -> None:
        async with await AsyncSandbox.create(pool=False, timeout=120) as source:
            await source.run_code("value = 'async'")
            child = await source.fork()
            try:
                assert (await child.run_code("value")).text == "'async'"
            finally:
                await child.kill()

    asyncio.run(scenario())
