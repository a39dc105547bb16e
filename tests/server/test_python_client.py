"""``sandcell.Sandbox`` on a server (``api_url``): the same API as in-process, sync and async."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from serving import Keys, Server

from sandcell import AsyncSandbox, Sandbox
from sandcell.isolation import Limits
from sandcell.sandbox.models import CommandExitException, NotFoundException, SandboxException, SandboxPausedException


@pytest.fixture
def remote(server: Server, keys: Keys, make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    return make_sandbox(timeout=120, metadata={"client": "python"}, limits=Limits(memory_mb=512), api_url=server.url, api_key=keys.alpha)


def test_code_streams_and_keeps_state(remote: Sandbox) -> None:
    seen: list[float] = []
    started = time.monotonic()
    execution = remote.run_code(
        "import time\nprint('a', flush=True)\ntime.sleep(1.2)\nprint('b')\nvalue = 21\nvalue * 2",
        on_stdout=lambda message: seen.append(time.monotonic() - started),
    )
    assert execution.text == "42" and execution.logs.stdout == ["a\n", "b\n"]
    assert seen[1] - seen[0] > 0.9
    assert remote.run_code("value").text == "21"
    assert remote.run_code("console.log([1,2].length)", language="javascript").logs.stdout == ["2\n"]
    assert remote.run_code("1/0").error.name == "ZeroDivisionError"
    context = remote.create_code_context(language="bash")
    assert remote.run_code("echo $((2+3))", context=context).logs.stdout == ["5\n"]
    assert context.id in [item.id for item in remote.list_code_contexts()]


def test_timeout_interrupts_and_state_survives(remote: Sandbox) -> None:
    remote.run_code("kept = 'yes'")
    execution = remote.run_code("import time\nwhile True: time.sleep(0.01)", timeout=1)
    assert execution.error is not None and execution.error.name == "TimeoutError"
    assert remote.run_code("kept").text == "yes"


def test_files_and_commands(remote: Sandbox) -> None:
    payload = bytes(range(256)) * 1000
    remote.files.write("/home/user/blob.bin", payload)
    assert bytes(remote.files.read("/home/user/blob.bin", format="bytes")) == payload
    assert [entry.name for entry in remote.files.list("/home/user")] == ["blob.bin"]
    with pytest.raises(NotFoundException):
        remote.files.read("/home/user/missing")
    assert remote.commands.run("echo $X", envs={"X": "1"}).stdout == "1\n"
    with pytest.raises(CommandExitException):
        remote.commands.run("exit 4")
    cat = remote.commands.run("cat", background=True, stdin=True)
    remote.commands.send_stdin(cat.pid, "through the server\n")
    remote.commands.close_stdin(cat.pid)
    assert cat.wait().stdout == "through the server\n"


def test_lifecycle_pause_metrics_info(remote: Sandbox, server: Server, keys: Keys) -> None:
    info = remote.get_info()
    assert info.metadata == {"client": "python"} and info.limits["memory_mb"] == 512
    remote.set_timeout(200)
    assert remote.get_info().end_at.timestamp() - time.time() > 150
    remote.run_code("n = 1")
    remote.pause()
    with pytest.raises(SandboxPausedException):
        remote.run_code("n")
    remote.resume()
    assert remote.run_code("n + 1").text == "2"
    assert remote.get_metrics().mem_used > 0
    again = Sandbox.connect(remote.sandbox_id, api_url=server.url, api_key=keys.alpha)
    assert again.run_code("n").text == "1"
    with pytest.raises(SandboxException):
        Sandbox.connect(remote.sandbox_id, api_url=server.url, api_key=keys.beta)


@pytest.mark.slow
def test_out_of_memory_on_the_server_says_so(remote: Sandbox) -> None:
    """The server, which holds the cgroup, names the cause in the error frame; the client asks nothing more."""
    execution = remote.run_code("blocks = []\nwhile True:\n    blocks.append(b'x' * (16 << 20))", timeout=30)
    assert execution.error is not None and execution.error.name == "OutOfMemoryError", execution.error
    assert "512 MiB" in execution.error.value
    assert remote.run_code("1 + 1").text == "2"


def test_kill_ends_it(server: Server, keys: Keys) -> None:
    sandbox = Sandbox.create(timeout=60, api_url=server.url, api_key=keys.alpha)
    sandbox.kill()
    assert not sandbox.is_running()
    with pytest.raises(SandboxException):
        sandbox.run_code("1")


def test_async_client(server: Server, keys: Keys) -> None:
    async def scenario() -> None:
        sandbox = await AsyncSandbox.create(timeout=60, api_url=server.url, api_key=keys.alpha)
        try:
            lines: list[str] = []
            execution = await sandbox.run_code("print('x'); 3 * 3", on_stdout=lambda message: lines.append(message.line))
            assert execution.text == "9" and lines == ["x\n"]
            await sandbox.files.write("f.txt", "async")
            assert await sandbox.files.read("f.txt") == "async"
            result = await sandbox.commands.run("cat f.txt", cwd="/home/user")
            assert result.stdout == "async"
            task = asyncio.create_task(sandbox.run_code("import time; time.sleep(30)"))
            await asyncio.sleep(0.5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert (await sandbox.run_code("'still here'", timeout=10)).text == "still here"
        finally:
            await sandbox.kill()

    asyncio.run(scenario())


def test_a_remote_async_sandbox_never_blocks_the_event_loop(server: Server, keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every HTTP call of a remote ``AsyncSandbox`` is made off the event loop, which keeps ticking."""
    on_the_loop: list[str] = []
    send = httpx.Client.send

    def watched_send(self: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        if asyncio_running():
            on_the_loop.append(f"{request.method} {request.url.path}")
        return send(self, request, **kwargs)

    monkeypatch.setattr(httpx.Client, "send", watched_send)

    async def scenario() -> None:
        gaps: list[float] = []

        async def tick() -> None:
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        ticker = asyncio.create_task(tick())
        sandbox = await AsyncSandbox.create(timeout=60, api_url=server.url, api_key=keys.alpha)
        try:
            assert (await sandbox.run_code("6 * 7")).text == "42"
            assert await sandbox.is_running() and sandbox.stop_reason is None
            await sandbox.set_timeout(60)
            assert (await sandbox.get_info()).sandbox_id == sandbox.sandbox_id
            assert (await sandbox.get_metrics()).mem_total > 0 and await sandbox.memory_usage()
            await sandbox.files.write("t.txt", "tick")
            assert await sandbox.files.read("t.txt") == "tick"
            assert (await sandbox.commands.run("echo tock")).stdout == "tock\n"
            died = (await sandbox.run_code("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")).error
            assert died is not None and died.name == "InterpreterDied"  # not out of memory: the server said so in the frame
            task = asyncio.create_task(sandbox.run_code("import time; time.sleep(30)"))
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            with pytest.raises(SandboxException):
                await sandbox.files.read("/no/such/file")
        finally:
            await sandbox.kill()
            ticker.cancel()
        assert not await sandbox.is_running()
        assert gaps and max(gaps) < 0.5, max(gaps)

    asyncio.run(scenario())
    assert on_the_loop == [], f"HTTP calls made on the event loop: {on_the_loop}"


def asyncio_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def test_bad_key_is_refused(server: Server) -> None:
    with pytest.raises(SandboxException, match="401"):
        Sandbox.create(api_url=server.url, api_key="e2b_" + "1" * 40)
    with pytest.raises(SandboxException, match="missing API key"):
        Sandbox.create(api_url=server.url, api_key=None)


def test_fork_on_the_server(remote: Sandbox) -> None:
    remote.run_code("state = {'steps': 3}")
    remote.files.write("/home/user/f.txt", "server fork")
    child = remote.fork()
    try:
        assert child.run_code("state['steps']").text == "3"
        assert child.files.read("/home/user/f.txt") == "server fork"
        assert child.get_info().limits["memory_mb"] == 512
        child.run_code("state['steps'] = 0")
        assert remote.run_code("state['steps']").text == "3"
    finally:
        child.kill()


def test_native_rest_command_with_a_non_zero_exit_is_an_answer(server: Server, keys: Keys, remote: Sandbox) -> None:
    import httpx

    answer = httpx.post(
        f"{server.url}/v1/sandboxes/{remote.sandbox_id}/commands", json={"cmd": "echo out; echo err >&2; exit 3"}, headers={"X-API-Key": keys.alpha}
    )
    assert answer.status_code == 200, answer.text
    assert {key: answer.json()[key] for key in ("stdout", "stderr", "exit_code")} == {"stdout": "out\n", "stderr": "err\n", "exit_code": 3}
    missing = httpx.get(f"{server.url}/v1/sandboxes/{remote.sandbox_id}/files", params={"path": "/home/user/none"}, headers={"X-API-Key": keys.alpha})
    assert missing.status_code == 404 and set(missing.json()) == {"code", "message"}


def test_the_template_travels_to_the_server(remote: Sandbox, server: Server, keys: Keys) -> None:
    assert remote.get_info().template == "code-interpreter-v1" and remote.backend.policy.template == "code-interpreter-v1"
    assert remote.run_code("import sklearn; sklearn.__name__").text == "sklearn"
    base = Sandbox.create(timeout=60, template="base", api_url=server.url, api_key=keys.alpha)
    try:
        assert base.get_info().template == "base"
        assert base.run_code("import sklearn").error.name == "ModuleNotFoundError"
    finally:
        base.kill()
    with pytest.raises(ValueError, match="unknown template"):
        Sandbox.create(template="no-such", api_url=server.url, api_key=keys.alpha)
