"""``Sandbox.fork()``: an independent sandbox carrying a copy of the files and Python state."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Callable

import pytest

from sandcell import AsyncSandbox, Sandbox, SandboxException, SandboxPool


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
    assert child.commands.run("ls -A /tmp/.sandcell | grep fork || true").stdout == "", "nothing of the copy is left behind"
    assert child.run_code("import os; os.environ['ORIGIN']").text == "env"
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
                assert (await child.run_code("value")).text == "async"
            finally:
                await child.kill()

    asyncio.run(scenario())


def test_big_arrays_and_frames_arrive_exactly_and_stay_independent(make_sandbox: Callable[..., Sandbox]) -> None:
    # Their memory travels out of band (pickle protocol 5), streamed through the host in parts.
    source = make_sandbox()
    source.run_code(
        "import hashlib, numpy as np, pandas as pd\n"
        "rng = np.random.default_rng(7)\n"
        "big = rng.random(4_000_000)\n"  # 32 MB: many chunks and parts
        "same = big\n"
        "strided, fortran = big[::3], np.asfortranarray(rng.random((300, 200)))\n"
        "frame = pd.DataFrame({'x': rng.random(500_000), 'n': np.arange(500_000), 'word': ['w%d' % (i % 7) for i in range(500_000)],\n"
        "                      'when': pd.date_range('2020-01-01', periods=500_000, freq='s'), 'kind': pd.Categorical(['a', 'b'] * 250_000)})\n"
        "def digest():\n"
        "    arrays = [hashlib.sha256(a.tobytes()).hexdigest()[:16] for a in (big, strided, fortran)]\n"
        "    return arrays + [int(pd.util.hash_pandas_object(frame).sum() % 10**12), str(frame.dtypes.to_dict())]\n"
    )
    expected = source.run_code("digest()").text
    child = source.fork()
    try:
        assert child.run_code("digest()").text == expected
        assert child.run_code("same is big, fortran.flags.f_contiguous, big.flags.writeable").text == "(True, True, True)"
        child.run_code("big[:] = 0; frame.loc[0, 'x'] = -1.0")
        assert source.run_code("digest()").text == expected, "the source's arrays are its own"
        assert child.run_code("float(big.sum()), float(frame.loc[0, 'x'])").text == "(0.0, -1.0)"
    finally:
        child.kill()


def test_session_objects_the_stdlib_pickler_cannot_name_survive(make_sandbox: Callable[..., Sandbox]) -> None:
    source = make_sandbox()
    source.run_code(
        "import collections, functools\n"
        "class Point:\n    def __init__(self, x): self.x = x\n    def double(self): return Point(self.x * 2)\n"
        "def outer(k):\n    def inner(v): return v * k + offset\n    return inner\n"
        "offset = 1\n"
        "points = [Point(1), Point(2)]\n"
        "triple = outer(3)\n"
        "square = lambda v: v * v\n"
        "counts = collections.defaultdict(lambda: 7)\n"
        "bound = points[0].double\n"
        "plus = functools.partial(triple, 2)\n"
        "from sandcell.runtime.state_copy import _pickle as __pickle\n"
    )
    names = ["points", "triple", "square", "counts", "bound", "plus"]
    assert source.run_code(f"__pickle({{name: globals()[name] for name in {names}}})[0]").text == "pickle", (
        "at C speed, dill only for the session's functions and classes"
    )
    check = "[p.double().x for p in points], isinstance(points[0], Point), triple(2), square(4), counts['new'], bound().x, plus()"
    expected = "([2, 4], True, 7, 16, 7, 2, 7)"
    child = source.fork()
    try:
        assert child.run_code(check).text == expected
        child.run_code("offset = 100")
        assert child.run_code("triple(2)").text == "106", "session functions see the fork's globals"
        assert source.run_code("triple(2)").text == "7"
    finally:
        child.kill()

    # What a session function or class holds would be copied by a dill pickle
    # of it alone (no longer shared): then the whole state goes by dill.
    source.run_code(
        "class Animal:\n    pass\nclass Dog(Animal):\n    pass\n"
        "pets = [Animal(), Dog()]\n"
        "data = [1, 2]\n"
        "size = lambda d=data: len(d)\n"
        "code = compile('40 + 2', 'cell', 'eval')\n"  # only dill can pickle a code object
    )
    assert source.run_code("__pickle({'pets': pets, 'size': size, 'data': data})[0]").text == "dill"
    child = source.fork()
    try:
        assert child.run_code(check).text == expected
        assert child.run_code("isinstance(pets[1], Animal), size.__defaults__[0] is data, eval(code)").text == "(True, True, 42)"
        assert child.run_code("data.append(3); size()").text == "3"
    finally:
        child.kill()


def test_the_fork_comes_from_the_sources_pool(make_pooled_sandbox: Callable[..., Sandbox], sandbox_pool: SandboxPool) -> None:
    source = make_pooled_sandbox()
    source.run_code("import pandas as pd\nframe = pd.DataFrame({'a': [1, 2, 3]})")
    assert sandbox_pool.warm(timeout=120), "the pool did not refill"
    child = source.fork()
    try:
        assert child.backend.policy.preload, "the fork's sandbox did not come from the pool"
        assert child.run_code("int(frame.a.sum())").text == "6"
    finally:
        child.kill()


def test_a_failed_fork_leaves_the_source_as_it_was(make_sandbox: Callable[..., Sandbox]) -> None:
    source = make_sandbox()
    source.run_code(
        "import numpy as np\n"
        "class Bomb:\n    def __reduce__(self): return (int, ('pickles, but cannot be loaded',))\n"
        "data = np.arange(3_000_000)\nbomb = Bomb()\n"
    )
    with pytest.raises(SandboxException, match="cannot fork"):
        source.fork()
    assert source.run_code("int(data.sum()), type(bomb).__name__").text == "(4499998500000, 'Bomb')"
    assert source.commands.run("ls -A /tmp/.sandcell | grep fork || true").stdout == "", "its copy of the state is removed"
    source.run_code("del bomb")
    child = source.fork()
    try:
        assert child.run_code("int(data.sum())").text == "4499998500000"
    finally:
        child.kill()


def test_a_state_that_breaks_the_pickler_fails_the_fork_without_hanging(make_sandbox: Callable[..., Sandbox]) -> None:
    source = make_sandbox()
    source.run_code("class Abort(BaseException): pass\nclass Breaks:\n    def __reduce__(self): raise Abort('no')\nvalue = 5\nbreaks = Breaks()")
    with pytest.raises(SandboxException, match="Abort"):
        source.fork()
    assert source.run_code("value").text == "5"
    assert source.commands.run("ls -A /tmp/.sandcell | grep fork || true").stdout == ""
