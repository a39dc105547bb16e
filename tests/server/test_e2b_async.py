"""The official ``AsyncSandbox`` of ``e2b_code_interpreter``, unchanged, against ``sandcell serve``."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from typing import Any

import pytest
from e2b import CommandExitException, NotFoundException, SandboxQuery
from e2b_code_interpreter import AsyncSandbox

pytestmark = pytest.mark.timeout(120)


def run(coroutine):  # a tiny driver, no pytest-asyncio needed
    return asyncio.run(coroutine)


def test_lifecycle() -> None:
    async def scenario() -> None:
        sandbox = await AsyncSandbox.create(template="code-interpreter-v1", timeout=60, metadata={"suite": "async"}, envs={"MODE": "async"})
        try:
            info = await sandbox.get_info()
            assert info.metadata == {"suite": "async"} and info.state.value == "running"
            listed = await AsyncSandbox.list(query=SandboxQuery(metadata={"suite": "async"})).next_items()
            assert [item.sandbox_id for item in listed] == [sandbox.sandbox_id]
            await sandbox.set_timeout(200)
            assert (await sandbox.get_info()).end_at.timestamp() - time.time() > 150
            again = await AsyncSandbox.connect(sandbox.sandbox_id)
            assert (await again.commands.run("echo $MODE")).stdout == "async\n"
            await sandbox.pause()
            assert (await sandbox.get_info()).state.value == "paused"
            resumed = await AsyncSandbox.connect(sandbox.sandbox_id)
            assert (await resumed.get_info()).state.value == "running"
            metrics = await resumed.get_metrics()
            assert metrics[-1].mem_used > 0
        finally:
            await sandbox.kill()
        assert not await sandbox.is_running()
        with pytest.raises(NotFoundException):
            await AsyncSandbox.connect(sandbox.sandbox_id)

    run(scenario())


def test_code_with_async_callbacks_results_errors_and_contexts() -> None:
    async def scenario() -> None:
        async with await AsyncSandbox.create(timeout=60) as sandbox:
            lines: list[str] = []

            async def collect(message) -> None:
                lines.append(message.line)

            execution = await sandbox.run_code("print('a'); 6 * 7", on_stdout=collect)
            assert execution.text == "42" and lines == ["a\n"] and execution.execution_count
            chart = await sandbox.run_code("import matplotlib.pyplot as plt; plt.bar([1, 2], [3, 4]); plt.show()")
            assert base64.b64decode(chart.results[0].png).startswith(b"\x89PNG")
            assert (await sandbox.run_code("[1, 2].map(x => x * 2)", language="javascript")).text == "[ 2, 4 ]"
            assert (await sandbox.run_code("echo $((6 * 7))", language="bash")).logs.stdout == ["42\n"]
            failed = await sandbox.run_code("raise ValueError('nope')")
            assert failed.error.name == "ValueError" and failed.error.value == "nope"
            context = await sandbox.create_code_context(language="python", cwd="/home/user")
            await sandbox.run_code("only_here = 1", context=context)
            assert (await sandbox.run_code("'only_here' in globals()")).text == "False"
            assert context.id in [item.id for item in await sandbox.list_code_contexts()]
            await sandbox.restart_code_context(context)
            await sandbox.remove_code_context(context.id)
            assert context.id not in [item.id for item in await sandbox.list_code_contexts()]

    run(scenario())


def test_files_and_watch() -> None:
    async def scenario() -> None:
        async with await AsyncSandbox.create(timeout=60) as sandbox:
            await sandbox.files.make_dir("/home/user/w")
            events = []
            removed = asyncio.Event()

            def on_event(event: Any) -> None:
                events.append(event)
                if event.name == "c.txt" and event.type.value == "remove":
                    removed.set()

            handle = await sandbox.files.watch_dir("/home/user/w", on_event=on_event, recursive=True)
            await sandbox.files.write("/home/user/w/a.txt", "text")
            await sandbox.files.write("/home/user/w/b.bin", b"\x00\x01")
            assert await sandbox.files.read("/home/user/w/a.txt") == "text"
            assert bytes(await sandbox.files.read("/home/user/w/b.bin", format="bytes")) == b"\x00\x01"
            assert sorted(entry.name for entry in await sandbox.files.list("/home/user/w")) == ["a.txt", "b.bin"]
            assert await sandbox.files.exists("/home/user/w/a.txt")
            assert (await sandbox.files.get_info("/home/user/w/b.bin")).size == 2
            await sandbox.files.rename("/home/user/w/a.txt", "/home/user/w/c.txt")
            await sandbox.files.remove("/home/user/w/c.txt")
            with contextlib.suppress(TimeoutError):  # the assert below tells what came
                await asyncio.wait_for(removed.wait(), 5)
            await handle.stop()
            kinds = {(event.name, event.type.value) for event in events}
            assert {("a.txt", "create"), ("b.bin", "create"), ("c.txt", "remove")} <= kinds

    run(scenario())


def test_commands() -> None:
    async def scenario() -> None:
        async with await AsyncSandbox.create(timeout=60) as sandbox:
            result = await sandbox.commands.run("echo $A; pwd", envs={"A": "1"}, cwd="/tmp")
            assert result.stdout == "1\n/tmp\n"
            with pytest.raises(CommandExitException):
                await sandbox.commands.run("exit 5")
            cat = await sandbox.commands.run("cat", background=True, stdin=True)
            await sandbox.commands.send_stdin(cat.pid, "in\n")
            follower = await sandbox.commands.connect(cat.pid)
            assert cat.pid in [process.pid for process in await sandbox.commands.list()]
            await sandbox.commands.close_stdin(cat.pid)
            assert (await cat.wait()).stdout == "in\n"
            assert (await follower.wait()).exit_code == 0
            sleeper = await sandbox.commands.run("sleep 30", background=True)
            assert await sandbox.commands.kill(sleeper.pid)
            with pytest.raises(CommandExitException):
                await sleeper.wait()

    run(scenario())
