"""Following running commands (``commands.connect``) and signalling them, on real sandboxes."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from sandcell import AsyncSandbox, CommandExitException, CommandHandle, NotFoundException, TimeoutException

# Numbered lines, so which part of the output a follower saw is checkable.
TICKER = "for i in $(seq 1 40); do echo tick $i; sleep 0.05; done; echo done >&2; exit 3"


@pytest.fixture
def sbx(make_sandbox):
    return make_sandbox(scope="module")


def ticks(text: str) -> list[int]:
    return [int(line.split()[1]) for line in text.splitlines() if line.startswith("tick ")]


def test_two_handles_on_one_pid_both_see_output_and_the_exit(sbx):
    original = sbx.commands.run(TICKER, background=True)
    follower = sbx.commands.connect(original.pid)
    assert isinstance(follower, CommandHandle) and follower.pid == original.pid
    second = sbx.commands.connect(original.pid)
    seen: list[str] = []
    with pytest.raises(CommandExitException) as followed:
        follower.wait(on_stdout=seen.append)
    with pytest.raises(CommandExitException) as started:
        original.wait()
    with pytest.raises(CommandExitException) as other:
        second.wait()
    assert started.value.exit_code == followed.value.exit_code == other.value.exit_code == 3
    assert ticks(started.value.stdout) == list(range(1, 41))
    # A follower sees everything from the moment it connected: a contiguous tail ending at 40.
    for result in (followed.value, other.value):
        numbers = ticks(result.stdout)
        assert numbers and numbers == list(range(numbers[0], 41)), numbers
        assert result.stderr == "done\n"
    assert "".join(seen) == followed.value.stdout


def test_connect_late_sees_only_new_output(sbx):
    handle = sbx.commands.run("echo early; touch /tmp/early-printed; read line; echo late:$line", background=True)
    deadline = time.monotonic() + 10
    while not sbx.files.exists("/tmp/early-printed") and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # the supervisor has passed "early" on by now
    follower = sbx.commands.connect(handle.pid)
    handle.send_stdin("x\n")
    assert follower.wait().stdout == "late:x\n"
    assert handle.wait().stdout == "early\nlate:x\n"


def test_connect_unknown_pid(sbx):
    with pytest.raises(NotFoundException, match="999999"):
        sbx.commands.connect(999999)


def test_connect_timeout_stops_following_not_the_command(sbx):
    handle = sbx.commands.run("sleep 3; echo finished", background=True)
    follower = sbx.commands.connect(handle.pid, timeout=0.5)
    with pytest.raises(TimeoutException, match="still running"):
        follower.wait()
    assert handle.pid in {p.pid for p in sbx.commands.list()}
    assert handle.wait().stdout == "finished\n"


def test_send_signal_sigterm_lets_the_command_clean_up(sbx):
    handle = sbx.commands.run("trap 'echo got TERM; exit 7' TERM; echo ready; while true; do sleep 0.05; done", background=True)
    follower = sbx.commands.connect(handle.pid)
    # Wait until the trap is installed before signalling.
    sbx.commands.run("sleep 0.3")
    assert sbx.commands.send_signal(handle.pid, signal.SIGTERM) is True
    with pytest.raises(CommandExitException) as info:
        follower.wait()
    assert info.value.exit_code == 7 and "got TERM" in info.value.stdout
    assert sbx.commands.send_signal(handle.pid, signal.SIGTERM) is False  # gone


def test_kill_is_sigkill(sbx):
    handle = sbx.commands.run("trap '' TERM; sleep 30", background=True)
    assert sbx.commands.kill(handle.pid) is True
    with pytest.raises(CommandExitException) as info:
        handle.wait()
    assert info.value.exit_code == 137 and "SIGKILL" in (info.value.error or "")


def test_async_connect_and_send_signal():
    async def scenario() -> None:
        async with await AsyncSandbox.create(timeout=120) as asbx:
            handle = await asbx.commands.run(TICKER, background=True)
            follower = await asbx.commands.connect(handle.pid)
            chunks: list[str] = []
            with pytest.raises(CommandExitException) as followed:
                await follower.wait(on_stdout=chunks.append)
            with pytest.raises(CommandExitException) as started:
                await handle.wait()
            assert followed.value.exit_code == started.value.exit_code == 3
            assert ticks(followed.value.stdout)[-1] == 40 and "".join(chunks) == followed.value.stdout
            with pytest.raises(NotFoundException):
                await asbx.commands.connect(999999)
            sleeper = await asbx.commands.run("sleep 30", background=True)
            assert await asbx.commands.send_signal(sleeper.pid, signal.SIGTERM) is True
            with pytest.raises(CommandExitException) as info:
                await sleeper.wait()
            assert info.value.exit_code == 128 + signal.SIGTERM

    asyncio.run(scenario())
