"""Files a sandbox hands the host: only regular ones, bounded, streamed, at paths the host checks (issue 10, findings 6 and 19).

A cell can plant a FIFO with an endless writer, a link to ``/dev/zero``, a
sparse file of a terabyte; a subverted supervisor can list any path. None of
them may grow the host, and nothing may be written outside ``sandcell chat``'s
output folder. Every test runs in each sandbox mode and checks a bystander.
"""

from __future__ import annotations

import functools
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from memory_guard import MiB, bounded_call, held_open
from test_isolation import make_sandbox  # noqa: F401 - each test runs in every sandbox mode

from sandcell import Sandbox
from sandcell.agent import Agent, Notice
from sandcell.sandbox.models import EntryInfo, FileType, InvalidArgumentException, SandboxException

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sandbox modes need root (cgroups, fork servers)")

PLANT = """
import os, socket, subprocess
os.makedirs('/home/user/outputs/sub', exist_ok=True)
os.chdir('/home/user/outputs')
os.mkfifo('fifo')
subprocess.Popen('exec cat /dev/zero > /home/user/outputs/fifo', shell=True, start_new_session=True)  # writes for ever, once read
os.symlink('/dev/zero', 'chart.png')
os.symlink('/etc/passwd', 'passwd-link.txt')
os.symlink('/home/user', 'home-link')
os.symlink('/nowhere', 'dangling')
listening = socket.socket(socket.AF_UNIX)
listening.bind('/home/user/outputs/sock')
try:
    with open('sparse.bin', 'wb') as sparse:
        sparse.truncate(10**12)  # a terabyte of zeros on a tmpfs of a GiB: nothing is stored
except OSError:  # the sandbox's file size limit stops it first (not in every mode yet: issue 10, finding 10)
    os.remove('sparse.bin')
open('ok.txt', 'w').write('a real output')
open('sub/deep.txt', 'w').write('deeper')
"""
HOSTILE = ("/home/user/outputs/fifo", "/home/user/outputs/chart.png", "/dev/zero", "/dev/urandom", "/home/user/outputs/sock", "/home/user/outputs/sparse.bin")


@pytest.fixture
def planted(make_sandbox: Callable[..., Sandbox]) -> Sandbox:  # noqa: F811
    sandbox = make_sandbox()
    execution = sandbox.run_code(PLANT)
    assert execution.error is None, execution.error
    return sandbox


def present(sandbox: Sandbox, paths: tuple[str, ...]) -> list[str]:
    return [path for path in paths if path.startswith("/dev/") or sandbox.files.exists(path)]


def bystander_fine(make_sandbox: Callable[..., Sandbox], *sandboxes: Sandbox) -> None:  # noqa: F811
    """The sandboxes given still answer, and so does one that took no part."""
    for sandbox in (*sandboxes, make_sandbox()):
        sandbox.files.write("/home/user/after.txt", "fine")
        assert sandbox.files.read("/home/user/after.txt") == "fine"
        assert sandbox.run_code("6 * 7").text == "42"


def test_listings_name_devices_fifos_sockets_and_links_for_what_they_are(planted: Sandbox, make_sandbox: Callable[..., Sandbox]) -> None:  # noqa: F811
    kinds = {entry.name: (entry.type, entry.symlink_target) for entry in planted.files.list("/home/user/outputs")}
    assert kinds == {
        "fifo": (FileType.FIFO, None),
        "chart.png": (FileType.CHAR_DEVICE, "/dev/zero"),
        "passwd-link.txt": (FileType.FILE, "/etc/passwd"),
        "home-link": (FileType.DIR, "/home/user"),
        "dangling": (FileType.SYMLINK, "/nowhere"),
        "sock": (FileType.SOCKET, None),
        "ok.txt": (FileType.FILE, None),
        "sub": (FileType.DIR, None),
    } | ({"sparse.bin": (FileType.FILE, None)} if "sparse.bin" in kinds else {})
    assert planted.files.get_info("/dev/null").type is FileType.CHAR_DEVICE
    bystander_fine(make_sandbox, planted)


@pytest.mark.slow
def test_reading_what_is_no_regular_file_is_refused_without_growing_the_host(planted: Sandbox, make_sandbox: Callable[..., Sandbox]) -> None:  # noqa: F811
    for path in present(planted, HOSTILE):
        for format in ("bytes", "stream"):
            outcome = bounded_call(functools.partial(planted.files.read, path, format=format), stop=planted.kill, limit=128 * MiB, timeout=20)
            assert outcome.stopped is None, f"reading {path} ({format}) {outcome.stopped}: the host buffered an unbounded read"
            assert isinstance(outcome.error, InvalidArgumentException), (path, format, outcome)
            message = str(outcome.error)
            assert "not a regular file" in message or "more than the limit" in message, message
    with pytest.raises(InvalidArgumentException, match="symbolic link"):
        planted.files.read("/home/user/outputs/passwd-link.txt", follow_links=False)
    assert "root" in planted.files.read("/home/user/outputs/passwd-link.txt"), "a link to a regular file is read when following is asked"
    with pytest.raises(InvalidArgumentException, match="more than the limit"):
        planted.files.read("/home/user/outputs/ok.txt", limit=5)
    assert "VmRSS" in planted.files.read("/proc/self/status"), "a file that says it is empty (as /proc's do) is read to its end"
    bystander_fine(make_sandbox, planted)


@pytest.mark.slow
def test_a_streamed_read_holds_a_window_on_the_host_and_ends_when_dropped(make_sandbox: Callable[..., Sandbox]) -> None:  # noqa: F811
    sandbox = make_sandbox()
    name = f"stream-{uuid.uuid4().hex[:8]}.bin"
    sandbox.commands.run(f"head -c 300M /dev/urandom > /home/user/{name}", timeout=60)

    def consume_slowly() -> int:
        chunks = sandbox.files.read(f"/home/user/{name}", format="stream")
        taken = len(next(chunks))
        time.sleep(2)  # the supervisor waits for the host to take more; the host holds a window
        taken += sum(len(chunk) for chunk in chunks)
        return taken

    outcome = bounded_call(consume_slowly, stop=sandbox.kill, limit=96 * MiB)
    assert outcome.stopped is None and outcome.error is None, outcome
    assert outcome.value == 300 * MiB
    chunks = sandbox.files.read(f"/home/user/{name}", format="stream")
    next(chunks)
    assert held_open(name), "the supervisor holds the file while it is read"
    chunks.close()  # the caller went away: the read ends in the sandbox too
    deadline = time.monotonic() + 10
    while held_open(name) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not held_open(name), "a dropped read kept the file open in the sandbox"
    bystander_fine(make_sandbox, sandbox)


def outputs_agent(sandbox: Sandbox, output_dir: Path) -> tuple[Agent, list[Any]]:
    """An agent only for its saving of /home/user/outputs (no model is asked)."""
    events: list[Any] = []
    return Agent(None, sandbox, on_event=events.append, output_dir=output_dir), events  # type: ignore[arg-type]


def notices(events: list[Any]) -> str:
    return "\n".join(event.text for event in events if isinstance(event, Notice))


@pytest.mark.slow
def test_chat_saves_only_the_regular_files_of_outputs_without_growing_the_host(planted: Sandbox, make_sandbox: Callable[..., Sandbox], tmp_path: Path) -> None:  # noqa: F811
    output_dir = tmp_path / "out"
    agent, events = outputs_agent(planted, output_dir)
    outcome = bounded_call(agent._save_outputs, stop=planted.kill, limit=128 * MiB, timeout=30)
    assert outcome.stopped is None, f"saving the outputs {outcome.stopped}"
    assert outcome.error is None, outcome.error
    assert sorted(outcome.value) == [output_dir / "ok.txt", output_dir / "sub" / "deep.txt"]
    saved = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*"))
    assert saved == ["out", "out/ok.txt", "out/sub", "out/sub/deep.txt"], saved
    assert (output_dir / "ok.txt").read_text() == "a real output"
    told = notices(events)
    for name in ("fifo", "chart.png", "passwd-link.txt", "home-link", "dangling", "sock", "sparse.bin"):
        assert f"/home/user/outputs/{name}' was not saved" in told or not present(planted, (f"/home/user/outputs/{name}",)), (name, told)
    agent._save_outputs()
    assert notices(events) == told, "each refusal is told once per version of the entry"
    bystander_fine(make_sandbox, planted)


def hostile_listing(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, *paths: str) -> None:
    """The listing a subverted supervisor could give: the real one, plus ``paths`` as regular files."""
    real = sandbox.files.list

    def listing(path: str, depth: int = 1) -> list[EntryInfo]:
        entries = real(path, depth)
        template = entries[0]
        return entries + [
            EntryInfo(os.path.basename(fake), FileType.FILE, fake, 6, 0o644, "-rw-r--r--", "user", "user", template.modified_time) for fake in paths
        ]

    monkeypatch.setattr(sandbox.files, "list", listing)


def test_chat_refuses_listed_paths_that_leave_the_output_folder(make_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    sandbox = make_sandbox()
    sandbox.run_code(
        "import os\n"
        "os.makedirs('/home/user/outputs', exist_ok=True)\n"
        "open('/home/user/outputs/ok.txt', 'w').write('fine')\n"
        "open('/home/user/escape.txt', 'w').write('pwned!')"
    )
    hostile_listing(
        sandbox,
        monkeypatch,
        "/home/user/outputs/../escape.txt",
        "/home/user/outputs/./../escape.txt",
        "/home/user/outputsx/escape.txt",
        "/home/user/outputs//escape.txt",
    )
    output_dir = tmp_path / "a" / "out"
    agent, events = outputs_agent(sandbox, output_dir)
    assert agent._save_outputs() == [output_dir / "ok.txt"]
    written = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*"))
    assert written == ["a", "a/out", "a/out/ok.txt"], f"a path from the sandbox escaped the output folder: {written}"
    assert notices(events).count("its path is not inside /home/user/outputs") == 4, notices(events)
    bystander_fine(make_sandbox, sandbox)


def test_chat_follows_no_link_in_the_output_folder_on_the_host(make_sandbox: Callable[..., Sandbox], tmp_path: Path) -> None:  # noqa: F811
    sandbox = make_sandbox()
    sandbox.run_code(
        "import os\n"
        "os.makedirs('/home/user/outputs/sub', exist_ok=True)\n"
        "open('/home/user/outputs/sub/x.txt', 'w').write('into sub')\n"
        "open('/home/user/outputs/top.txt', 'w').write('top')"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "top-target.txt").write_text("the person's file")
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "sub").symlink_to(elsewhere)  # links already in the folder, wherever they came from
    (output_dir / "top.txt").symlink_to(elsewhere / "top-target.txt")
    agent, events = outputs_agent(sandbox, output_dir)
    assert agent._save_outputs() == [output_dir / "top.txt"]
    assert sorted(path.name for path in elsewhere.iterdir()) == ["top-target.txt"], "a file was written through a link"
    assert (elsewhere / "top-target.txt").read_text() == "the person's file"
    assert not (output_dir / "top.txt").is_symlink() and (output_dir / "top.txt").read_text() == "top", "the link is replaced, not written through"
    assert "/home/user/outputs/sub/x.txt' was not saved" in notices(events)
    bystander_fine(make_sandbox, sandbox)


@pytest.mark.slow
def test_fork_refuses_what_a_cell_put_in_place_of_its_archive(make_sandbox: Callable[..., Sandbox]) -> None:  # noqa: F811
    """A cell puts a link to /dev/zero where the fork's archive of its files goes: the fork fails, the host stays small."""
    source = make_sandbox()
    source.files.write("/home/user/keep.txt", "kept")
    swapper = (
        "import glob, os\n"
        "while True:\n"
        "    for work in glob.glob('/tmp/.sandcell/fork-*'):\n"
        "        try:\n"
        "            os.symlink('/dev/zero', f'{work}/swap'); os.replace(f'{work}/swap', f'{work}/home.tar')\n"
        "        except OSError:\n"
        "            pass\n"
    )
    source.commands.run(f'python3 -c "{swapper}"', background=True)
    time.sleep(0.5)
    outcome = bounded_call(source.fork, stop=source.kill, limit=192 * MiB, timeout=120)
    assert outcome.stopped is None, f"the fork {outcome.stopped}"
    if outcome.error is None:  # the swap came too late: then the copy is right
        assert outcome.value.files.read("/home/user/keep.txt") == "kept"
        outcome.value.kill()
    else:
        assert isinstance(outcome.error, SandboxException) and "home.tar is a symbolic link" in str(outcome.error), outcome.error
    assert source.files.read("/home/user/keep.txt") == "kept"
    bystander_fine(make_sandbox, source)
