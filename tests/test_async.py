"""``AsyncSandbox``: the same surface as ``Sandbox``, checked in async form.

No asyncio plugin is needed: each test runs its coroutine with ``asyncio.run``.
The module's sandbox is not tied to an event loop (each request makes its
own stream on the loop that awaits it), so one serves every test.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from sandcell import (
    AsyncCommandHandle,
    AsyncSandbox,
    CommandExitException,
    FileType,
    InvalidArgumentException,
    NotFoundException,
    SandboxException,
    TimeoutException,
)
from sandcell.sandbox.connection import AsyncStream


def run(coroutine):
    return asyncio.run(coroutine)


@pytest.fixture
def asbx(make_sandbox):
    """The module's sandbox through the async API (both APIs wrap the same backend)."""
    return AsyncSandbox(make_sandbox(scope="module", timeout=600, envs={"ASYNC_SBX_VAR": "async-env"}).backend)


def out(execution) -> str:
    return "".join(execution.logs.stdout)


def test_create_context_manager_and_kill():
    async def body():
        async with await AsyncSandbox.create(timeout=60) as sandbox:
            assert await sandbox.is_running()
            assert (await sandbox.run_code("1 + 1")).text == "2"
            info = await sandbox.get_info()
            assert info.sandbox_id == sandbox.sandbox_id
        assert not await sandbox.is_running()
        with pytest.raises(SandboxException):
            await sandbox.run_code("1")

    run(body())


def test_state_and_main_result_in_each_language(asbx):
    async def body():
        assert (await asbx.run_code("async_py = 20")).error is None
        assert (await asbx.run_code("async_py + 1")).text == "21"
        await asbx.run_code("let asyncJs = 5;", language="javascript")
        assert (await asbx.run_code("asyncJs * 2", language="javascript")).text == "10"
        await asbx.run_code("export ASYNC_BASH=kept; cd /tmp", language="bash")
        assert out(await asbx.run_code("echo $ASYNC_BASH; pwd", language="bash")) == "kept\n/tmp\n"

    run(body())


def test_rich_result_and_error(asbx):
    async def body():
        execution = await asbx.run_code("import pandas as pd\npd.DataFrame({'c': [1]})")
        assert execution.results[0].html and "<table" in execution.results[0].html
        error = (await asbx.run_code("raise ValueError('async failure')")).error
        assert error is not None and error.name == "ValueError" and error.value == "async failure"
        assert "sandcell" not in error.traceback and "python_kernel" not in error.traceback

    run(body())


@pytest.mark.parametrize(
    ("language", "code"),
    [
        ("python", "import time\nprint('first', flush=True)\ntime.sleep(1.5)\nprint('second')"),
        ("javascript", "console.log('first');\nawait new Promise(r => setTimeout(r, 1500));\nconsole.log('second');"),
        ("bash", "echo first; sleep 1.5; echo second"),
    ],
)
def test_streaming_with_sync_and_async_callbacks(asbx, language, code):
    async def body():
        first: list[float] = []
        lines: list[str] = []

        async def on_stdout(message):
            if not first:
                first.append(time.monotonic())
            await asyncio.sleep(0)
            lines.append(message.line)

        errors: list = []
        execution = await asbx.run_code(code, language=language, on_stdout=on_stdout, on_error=errors.append)
        returned = time.monotonic()
        assert execution.error is None and errors == []
        assert first and returned - first[0] > 1.0, "on_stdout should fire while the code runs"
        assert "".join(lines) == "first\nsecond\n"

    run(body())


def test_callbacks_in_order(asbx):
    async def body():
        events: list[tuple[str, str]] = []
        await asbx.run_code(
            "import sys\nprint('o1')\ndisplay('r1')\nprint('e1', file=sys.stderr)\ndisplay('r2')\n'main'",
            on_stdout=lambda m: events.append(("out", m.line)),
            on_stderr=lambda m: events.append(("err", m.line)),
            on_result=lambda r: events.append(("res", r.text)),
        )
        merged: list[tuple[str, str]] = []
        for kind, text in events:
            if merged and kind != "res" and merged[-1][0] == kind:
                merged[-1] = (kind, merged[-1][1] + text)
            else:
                merged.append((kind, text))
        assert merged == [("out", "o1\n"), ("res", "r1"), ("err", "e1\n"), ("res", "r2"), ("res", "main")]

    run(body())


def test_runs_in_different_languages_are_concurrent(asbx):
    async def body():
        started = time.monotonic()
        results = await asyncio.gather(
            asbx.run_code("import time; time.sleep(1); 'py'"),
            asbx.run_code("await new Promise(r => setTimeout(r, 1000)); 'js'", language="javascript"),
            asbx.run_code("sleep 1; echo sh", language="bash"),
        )
        assert time.monotonic() - started < 2.5
        assert [results[0].text, results[1].text, out(results[2])] == ["py", "js", "sh\n"]

    run(body())


def test_timeout_keeps_state(asbx):
    async def body():
        await asbx.run_code("kept_async = 'yes'")
        started = time.monotonic()
        execution = await asbx.run_code("import time\ntime.sleep(100)", timeout=2)
        assert execution.error is not None and execution.error.name == "TimeoutError"
        assert time.monotonic() - started < 5
        assert (await asbx.run_code("kept_async")).text == "yes"

    run(body())


def test_cancelling_the_awaiting_task_interrupts_the_code(asbx):
    async def body():
        await asbx.run_code("kept_after_cancel = 7")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asbx.run_code("import time\ntime.sleep(100)"), 1)
        # The code was interrupted: the context answers at once and kept its state.
        started = time.monotonic()
        assert (await asbx.run_code("kept_after_cancel", timeout=10)).text == "7"
        assert time.monotonic() - started < 3

    run(body())


def test_a_second_cancel_during_the_first_ones_clean_up_spoils_nothing(asbx):
    """A server forwarding a client's cancel, then its disconnect, cancels twice a few ms apart."""

    async def body():
        core = asbx.backend
        for attempt in range(5):
            stream = AsyncStream()
            request_id = core.open({"op": "run_code", "code": "import time; time.sleep(30)", "language": "python", "env": {}, "timeout": None}, b"", stream)
            await asyncio.sleep(0.3)
            core.cancel(request_id)
            await asyncio.sleep(0.02)
            core.cancel(request_id)
            while (await stream.get(10))[0]["type"] not in ("done", "fail"):
                pass
            assert (await asbx.run_code(f"'answer {attempt}'", timeout=10)).text == f"answer {attempt}"

    run(body())


def test_contexts(asbx):
    async def body():
        context = await asbx.create_code_context(cwd="/home/user/async_ctx", language="python")
        try:
            assert context.cwd == "/home/user/async_ctx" and context.language == "python"
            assert (await asbx.run_code("import os\nos.getcwd()", context=context)).text == "/home/user/async_ctx"
            await asbx.run_code("ctx_only = 1", context=context)
            default = await asbx.run_code("ctx_only")
            assert default.error is not None and default.error.name == "NameError"
            assert context.id in {c.id for c in await asbx.list_code_contexts()}
            await asbx.restart_code_context(context)
            after = await asbx.run_code("ctx_only", context=context)
            assert after.error is not None and after.error.name == "NameError"
        finally:
            await asbx.remove_code_context(context)
        assert context.id not in {c.id for c in await asbx.list_code_contexts()}
        with pytest.raises(NotFoundException):
            await asbx.run_code("1", context=context)

    run(body())


def test_envs(asbx):
    async def body():
        assert (await asbx.run_code("import os\nos.environ['ASYNC_SBX_VAR']")).text == "async-env"
        assert (await asbx.run_code("process.env.ONE_RUN", language="javascript", envs={"ONE_RUN": "x"})).text == "x"
        assert (await asbx.run_code("process.env.ONE_RUN === undefined", language="javascript")).text == "true"
        assert (await asbx.commands.run("echo $ASYNC_SBX_VAR")).stdout == "async-env\n"

    run(body())


def test_unknown_language(asbx):
    async def body():
        with pytest.raises(InvalidArgumentException) as info:
            await asbx.run_code("x", language="fortran")
        assert "fortran" in str(info.value)

    run(body())


def test_interpreter_death():
    async def body():
        async with await AsyncSandbox.create(timeout=60) as sandbox:
            execution = await sandbox.run_code("import os\nos._exit(1)")
            assert execution.error is not None and execution.error.name == "InterpreterDied"
            assert (await sandbox.run_code("6 * 7")).text == "42"

    run(body())


def test_files(asbx):
    async def body():
        base = "/home/user/async_files"
        data = os.urandom(3 * 1024 * 1024)
        info = await asbx.files.write(f"{base}/blob.bin", data)
        assert info.path == f"{base}/blob.bin" and info.type == FileType.FILE
        assert await asbx.files.read(f"{base}/blob.bin", format="bytes") == data
        await asbx.files.write("async_files/note.txt", "relative ✓")
        assert await asbx.files.read(f"{base}/note.txt") == "relative ✓"
        assert {e.name for e in await asbx.files.list(base)} == {"blob.bin", "note.txt"}
        assert await asbx.files.exists(f"{base}/note.txt")
        assert await asbx.files.make_dir(f"{base}/sub") is True
        assert await asbx.files.make_dir(f"{base}/sub") is False
        assert len(await asbx.files.list(base, depth=2)) == 3
        moved = await asbx.files.rename(f"{base}/note.txt", f"{base}/sub/note.txt")
        assert moved.path == f"{base}/sub/note.txt"
        stat = await asbx.files.get_info(f"{base}/sub/note.txt")
        assert stat.size == len("relative ✓".encode()) and stat.type == FileType.FILE
        assert (await asbx.run_code(f"open('{base}/sub/note.txt').read()")).text == "relative ✓"
        await asbx.files.remove(base)
        assert not await asbx.files.exists(base)
        with pytest.raises(NotFoundException):
            await asbx.files.read(f"{base}/blob.bin")

    run(body())


def test_foreground_commands(asbx):
    async def body():
        result = await asbx.commands.run("echo out; echo err >&2", cwd="/tmp", envs={"E": "v"})
        assert (result.stdout, result.stderr, result.exit_code) == ("out\n", "err\n", 0)
        assert (await asbx.commands.run("pwd; echo $E", cwd="/tmp", envs={"E": "v"})).stdout == "/tmp\nv\n"
        with pytest.raises(CommandExitException) as info:
            await asbx.commands.run("exit 9")
        assert info.value.exit_code == 9
        chunks: list[str] = []

        async def on_stdout(text):
            chunks.append(text)

        await asbx.commands.run("echo a; sleep 0.2; echo b", on_stdout=on_stdout)
        assert "".join(chunks) == "a\nb\n"
        started = time.monotonic()
        with pytest.raises(TimeoutException):
            await asbx.commands.run("sleep 100", timeout=1)
        assert time.monotonic() - started < 5

    run(body())


def test_background_commands(asbx):
    async def body():
        handle = await asbx.commands.run("cat", background=True)
        assert isinstance(handle, AsyncCommandHandle) and handle.pid > 0
        assert handle.pid in {p.pid for p in await asbx.commands.list()}
        await handle.send_stdin("line one\n")
        await handle.send_stdin(b"line two\n")
        await handle.close_stdin()
        assert (await handle.wait()).stdout == "line one\nline two\n"

        sleeper = await asbx.commands.run("sleep 100", background=True)
        assert await asbx.commands.kill(sleeper.pid) is True
        with pytest.raises(CommandExitException) as info:
            await sleeper.wait()
        assert info.value.exit_code != 0
        assert sleeper.pid not in {p.pid for p in await asbx.commands.list()}

        other = await asbx.commands.run("sleep 100", background=True)
        assert await other.kill() is True
        with pytest.raises(CommandExitException):
            await other.wait()

    run(body())


def test_async_stream_frames_from_another_thread_in_order():
    """Frames put by a reader thread reach the consumer in order, whether or
    not it was already waiting, and a wake-up whose frame an earlier get took
    does not end a later get empty-handed."""

    async def body():
        import threading

        stream = AsyncStream()
        stream.put(({"n": 0}, b""))
        assert (await stream.get(5))[0] == {"n": 0}  # taken at once: its wake-up is still pending
        later = threading.Timer(0.05, lambda: [stream.put(({"n": n}, b"")) for n in (1, 2, 3)])
        later.start()
        assert [(await stream.get(5))[0]["n"] for _ in range(3)] == [1, 2, 3]
        later.join()

    run(body())


def test_async_stream_wait_times_out_and_is_cancellable():
    async def body():
        stream = AsyncStream()
        with pytest.raises(asyncio.TimeoutError):
            await stream.get(0.01)
        waiting = asyncio.ensure_future(stream.get(None))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        stream.put(({"type": "done"}, b""))
        assert (await stream.get(0.01))[0] == {"type": "done"}  # left for the next get

    run(body())
