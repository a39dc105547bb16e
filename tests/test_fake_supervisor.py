"""``Sandbox`` and ``AsyncSandbox`` logic against a fake supervisor: no root, milliseconds each."""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any

import pytest
from fake_supervisor import HANG, UNTIL_CANCEL, FakeBackend, done, fail

from sandcell import AsyncSandbox, Sandbox
from sandcell.sandbox import AsyncCommandHandle, AsyncWatchHandle, CommandHandle, NotFoundException, TimeoutException, WatchHandle
from sandcell.sandbox import exchange as exchange_module
from sandcell.sandbox import operations as ops
from sandcell.sandbox.async_ import AsyncCommands, AsyncFilesystem
from sandcell.sandbox.backend import SandboxBackend
from sandcell.sandbox.core import SandboxCore
from sandcell.sandbox.remote import RemoteCore
from sandcell.sandbox.sync import Commands, Filesystem


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def hang_after(*frames: Any) -> Any:
    def script(header: dict[str, Any], payload: bytes) -> Any:
        yield from frames
        yield HANG

    return script


def requests_of(backend: FakeBackend, op: str) -> list[dict[str, Any]]:
    return [header for header in backend.supervisor.received if header["op"] == op]


# -- the basics ------------------------------------------------------------------------------------


def test_run_code_results_callbacks_and_errors() -> None:
    sbx = Sandbox(FakeBackend())
    assert sbx.run_code("1+1").text == "2"
    seen: list[Any] = []
    assert sbx.run_code("'a' * 3", on_result=seen.append).text == "aaa"
    assert [result.text for result in seen] == ["aaa"]
    missing = Sandbox(FakeBackend({"files.stat": lambda h, p: iter([fail("NotFound", "no such file")])}))
    with pytest.raises(NotFoundException, match="no such file"):
        missing.files.get_info("nope")


def test_async_run_code_with_coroutine_callbacks() -> None:
    async def body() -> None:
        sbx = AsyncSandbox(FakeBackend({"run_code": lambda h, p: iter([({"type": "stdout"}, b"hi\n"), done(execution_count=1)])}))
        seen: list[str] = []

        async def on_stdout(message: Any) -> None:
            seen.append(message.line)

        execution = await sbx.run_code("print('hi')", on_stdout=on_stdout)
        assert execution.logs.stdout == ["hi\n"] and seen == ["hi\n"]

    run(body())


def test_a_killed_interpreter_is_out_of_memory_only_if_the_host_says_so_off_the_callers_thread() -> None:
    died = {"type": "error", "name": "InterpreterDied", "value": "the python interpreter was killed by SIGKILL", "signal": 9}
    backend = FakeBackend({"run_code": lambda h, p: iter([died, done(execution_count=1)])})
    sbx = Sandbox(backend)
    assert sbx.run_code("x").error.name == "InterpreterDied"
    backend.oom = "the sandbox hit its memory limit of 256 MiB"

    async def body() -> None:
        error = (await AsyncSandbox(backend).run_code("x")).error
        assert error.name == "OutOfMemoryError" and error.value.startswith(backend.oom)

    run(body())
    assert backend.oom_asked_on == ["sandcell-connection"] * 2


# -- drift defects of the hand-written loops ---------------------------------------------------------


def test_an_interrupted_run_whose_sandbox_never_confirms_raises_keyboard_interrupt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during a run drains to the terminal frame; a sandbox that never sends it must not
    turn the interrupt into a raw ``queue.Empty`` (it did, from ``Sandbox._drain``)."""
    monkeypatch.setattr(exchange_module, "INTERRUPT_MARGIN", 0.1)
    backend = FakeBackend({"run_code": hang_after(({"type": "stdout"}, b"tick\n"))})
    sbx = Sandbox(backend)

    def interrupt(message: Any) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sbx.run_code("while True: pass", on_stdout=interrupt, timeout=None)
    request_id = requests_of(backend, "run_code")[0]["id"]
    assert backend.supervisor.cancelled == [request_id] and request_id in backend.forgotten


def test_command_wait_that_times_out_cancels_and_forgets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops, "COMMAND_WAIT_MARGIN", 0.05)
    backend = FakeBackend({"command.run": hang_after({"type": "started", "pid": 7})})
    handle = Sandbox(backend).commands.run("sleep 100", background=True, timeout=0.01)
    with pytest.raises(TimeoutException):
        handle.wait()
    request_id = requests_of(backend, "command.run")[0]["id"]
    assert _settled(lambda: backend.supervisor.cancelled == [request_id]) and request_id in backend.forgotten


def test_async_command_wait_that_times_out_cancels_and_forgets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops, "COMMAND_WAIT_MARGIN", 0.05)
    backend = FakeBackend({"command.run": hang_after({"type": "started", "pid": 7})})

    async def body() -> None:
        handle = await AsyncSandbox(backend).commands.run("sleep 100", background=True, timeout=0.01)
        with pytest.raises(TimeoutException):
            await handle.wait()

    run(body())
    request_id = requests_of(backend, "command.run")[0]["id"]
    assert _settled(lambda: backend.supervisor.cancelled == [request_id]) and request_id in backend.forgotten


def test_a_background_command_keeps_an_explicit_timeout_of_60() -> None:
    backend = FakeBackend()
    sbx = Sandbox(backend)
    sbx.commands.run("sleep 100", background=True)
    sbx.commands.run("sleep 100", background=True, timeout=60)
    sbx.commands.run("echo foreground")
    assert [header["timeout"] for header in requests_of(backend, "command.run")] == [None, 60, 60]


def test_sync_and_async_share_stop_reason_memory_usage_and_stdout() -> None:
    backend = FakeBackend()
    sbx = Sandbox(backend)
    assert sbx.stop_reason is None and sbx.memory_usage() == 100
    assert sbx.commands.run("x", background=True).wait() is not None
    handle = sbx.commands.run("echo", background=True)
    handle.wait()
    assert handle.stdout == "echo"

    async def body() -> None:
        asbx = AsyncSandbox(FakeBackend())
        assert asbx.stop_reason is None and await asbx.memory_usage() == 100
        handle = await asbx.commands.run("echo", background=True)
        await handle.wait()
        assert handle.stdout == "echo"
        metrics = await asbx.get_metrics()
        assert (metrics.mem_used, metrics.disk_used) == (100, 1)
        await asbx.kill()
        assert asbx.stop_reason == "it was killed"

    run(body())
    sbx.kill()
    assert sbx.stop_reason == "it was killed"


# -- the host enforces a run's timeout when the supervisor does not ----------------------------------


def _never_ending_run(header: dict[str, Any], payload: bytes) -> Any:
    """A supervisor that prints on and on, past the run's timeout, ignoring it (and any cancel)."""
    for _ in range(1000):
        yield {"type": "stdout"}, b"still here\n"
        time.sleep(0.01)
    yield HANG


def test_a_run_the_supervisor_does_not_end_kills_the_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops, "ENFORCE_MARGIN", 0.2)
    backend = FakeBackend({"run_code": _never_ending_run}, kill_grace=0.05)
    started = time.monotonic()
    with pytest.raises(TimeoutException, match="killed"):
        Sandbox(backend).run_code("while True: print('still here')", timeout=0.1)
    assert 0.3 <= time.monotonic() - started < 2
    assert backend.killed and "did not stop a run_code" in backend.killed


def test_an_async_run_the_supervisor_does_not_end_kills_the_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops, "ENFORCE_MARGIN", 0.2)
    backend = FakeBackend({"run_code": hang_after()}, kill_grace=0.05)

    async def body() -> None:
        with pytest.raises(TimeoutException, match="killed"):
            await AsyncSandbox(backend).run_code("import time; time.sleep(100)", timeout=0.1)

    run(body())
    assert backend.killed and "did not stop a run_code" in backend.killed


# -- cancel, forget ----------------------------------------------------------------------------------


def test_a_cancelled_task_cancels_its_request() -> None:
    backend = FakeBackend({"run_code": hang_after()})

    async def body() -> None:
        task = asyncio.ensure_future(AsyncSandbox(backend).run_code("import time; time.sleep(100)", timeout=None))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(body())
    request_id = requests_of(backend, "run_code")[0]["id"]
    assert _settled(lambda: backend.supervisor.cancelled == [request_id]) and request_id in backend.forgotten


def test_a_read_stream_closed_early_ends_the_read() -> None:
    chunks = [{"type": "opened", "size": 30}, *[({"type": "data"}, b"0123456789") for _ in range(3)], done()]
    backend = FakeBackend({"files.read": lambda h, p: iter(chunks)})
    stream = Sandbox(backend).files.read("f", format="stream")
    assert next(stream) == b"0123456789"
    stream.close()
    assert requests_of(backend, "files.read")[0]["id"] in backend.forgotten


WATCH = [{"type": "watching"}, {"type": "events", "events": [["a", "create"]]}, UNTIL_CANCEL]


def test_watch_events_then_stop() -> None:
    backend = FakeBackend({"files.watch": lambda h, p: iter(WATCH)})
    handle = Sandbox(backend).files.watch_dir(".")
    assert _settled(lambda: [event.name for event in handle.get_new_events()] == ["a"])
    handle.stop()
    assert backend.supervisor.cancelled == [requests_of(backend, "files.watch")[0]["id"]]


def test_async_watch_events_then_stop() -> None:
    backend = FakeBackend({"files.watch": lambda h, p: iter(WATCH)})
    seen: list[Any] = []

    async def body() -> None:
        arrived = asyncio.Event()

        def record(item: Any) -> None:
            seen.append(item)
            arrived.set()

        handle = await AsyncSandbox(backend).files.watch_dir(".", record, on_exit=record)
        await arrived.wait()
        await handle.stop()

    run(body())
    assert [getattr(event, "name", event) for event in seen] == ["a", None]


def _settled(condition: Any, within: float = 2.0) -> bool:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


# -- the two surfaces cannot drift -------------------------------------------------------------------

# The watch APIs differ on purpose, as E2B's do: the sync one is polled, the async one calls back.
INTENDED = {("Filesystem", "watch_dir"), ("Filesystem", "write")}  # write: the async one also takes an async iterable


def _public(cls: type) -> dict[str, Any]:
    return {name: member for name, member in inspect.getmembers(cls) if not name.startswith("_")}


def _shape(member: Any) -> Any:
    if isinstance(member, property):
        return "property"
    if isinstance(member, (classmethod, staticmethod)):
        member = member.__func__
    if callable(member):
        signature = inspect.signature(member)
        return [(p.name, p.kind, p.default) for p in signature.parameters.values()]
    return type(member)


@pytest.mark.parametrize(
    ("sync", "asynchronous"),
    [(Sandbox, AsyncSandbox), (Filesystem, AsyncFilesystem), (Commands, AsyncCommands), (CommandHandle, AsyncCommandHandle)],
)
def test_sync_and_async_classes_have_the_same_members_and_signatures(sync: type, asynchronous: type) -> None:
    sync_members, async_members = _public(sync), _public(asynchronous)
    assert set(sync_members) == set(async_members)
    for name, member in sync_members.items():
        if (sync.__name__, name) in INTENDED:
            continue
        assert _shape(member) == _shape(async_members[name]), f"{sync.__name__}.{name} differs"
        if inspect.isfunction(member) and inspect.isfunction(async_members[name]) and name not in ("create", "connect"):
            assert inspect.iscoroutinefunction(async_members[name]), f"{asynchronous.__name__}.{name} is not async"


def test_the_watch_handles_differ_only_as_intended() -> None:
    assert set(_public(WatchHandle)) == {"get_new_events", "stop"}
    assert set(_public(AsyncWatchHandle)) == {"stop"}


@pytest.mark.parametrize("backend", ["SandboxCore", "RemoteCore", "FakeBackend"])
def test_every_backend_implements_the_declared_seam(backend: str) -> None:
    cls = {"SandboxCore": SandboxCore, "RemoteCore": RemoteCore, "FakeBackend": FakeBackend}[backend]
    for name, member in vars(SandboxBackend).items():
        if name.startswith("_") or not (callable(member) or isinstance(member, property)):
            continue
        assert hasattr(cls, name), f"{backend} lacks {name}"
        if isinstance(member, property):
            assert isinstance(getattr(cls, name), property), f"{backend}.{name} is not a property"
        else:
            assert list(inspect.signature(getattr(cls, name)).parameters) == list(inspect.signature(member).parameters), f"{backend}.{name} differs"
    assert isinstance(cls.blocks, bool)
