"""``files.watch_dir`` on real sandboxes: inotify events as E2B names them."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from sandcell import (
    AsyncSandbox,
    FilesystemEvent,
    FilesystemEventType,
    InvalidArgumentException,
    NotFoundException,
    Sandbox,
    SandboxDiedException,
    SandboxException,
    TimeoutException,
    WatchHandle,
)

CREATE, WRITE, REMOVE, RENAME, CHMOD = (
    FilesystemEventType.CREATE,
    FilesystemEventType.WRITE,
    FilesystemEventType.REMOVE,
    FilesystemEventType.RENAME,
    FilesystemEventType.CHMOD,
)


@pytest.fixture
def sbx(make_sandbox):
    return make_sandbox(scope="module")


@pytest.fixture
def watched(sbx):
    path = f"/home/user/w_{uuid.uuid4().hex[:8]}"
    sbx.files.make_dir(path)
    return path


def collect(handle: WatchHandle, until: set[tuple[str, FilesystemEventType]], seconds: float = 5.0) -> list[FilesystemEvent]:
    """Poll until every wanted (name, type) arrived; all events seen."""
    seen: list[FilesystemEvent] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen += handle.get_new_events()
        if until <= {(e.name, e.type) for e in seen}:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"missing {until - {(e.name, e.type) for e in seen}}; got {seen}")


def test_create_write_chmod_rename_remove(sbx, watched):
    handle = sbx.files.watch_dir(watched)
    assert isinstance(handle, WatchHandle)
    assert handle.get_new_events() == []
    sbx.files.write(f"{watched}/a.txt", "hello")
    sbx.commands.run(f"chmod 600 {watched}/a.txt && mv {watched}/a.txt {watched}/b.txt && rm {watched}/b.txt")
    events = collect(handle, {("a.txt", CREATE), ("a.txt", WRITE), ("a.txt", CHMOD), ("a.txt", RENAME), ("b.txt", CREATE), ("b.txt", REMOVE)})
    assert all(isinstance(e, FilesystemEvent) for e in events)
    kinds = [(e.name, e.type) for e in events]
    assert kinds.index(("a.txt", CREATE)) < kinds.index(("a.txt", RENAME)) < kinds.index(("b.txt", REMOVE))
    handle.stop()


def test_not_recursive_ignores_subdirectories(sbx, watched):
    sbx.files.make_dir(f"{watched}/sub")
    handle = sbx.files.watch_dir(watched)
    sbx.files.write(f"{watched}/sub/inner.txt", "x")
    sbx.files.write(f"{watched}/top.txt", "x")
    events = collect(handle, {("top.txt", CREATE)})
    assert not [e for e in events if "inner" in e.name]
    handle.stop()


def test_recursive_follows_new_subdirectories(sbx, watched):
    sbx.files.make_dir(f"{watched}/old")
    handle = sbx.files.watch_dir(watched, recursive=True)
    sbx.files.write(f"{watched}/old/in-old.txt", "x")
    # mkdir -p makes b before the watcher can watch a: it is reported anyway.
    sbx.commands.run(f"mkdir -p {watched}/new/b && echo hi > {watched}/new/b/deep.txt")
    events = collect(handle, {("old/in-old.txt", CREATE), ("new", CREATE), ("new/b", CREATE), ("new/b/deep.txt", CREATE)})
    # A directory moved within the tree is watched under its new name.
    sbx.commands.run(f"mv {watched}/new {watched}/moved && touch {watched}/moved/b/after.txt")
    events = collect(handle, {("new", RENAME), ("moved", CREATE), ("moved/b/after.txt", CREATE)})
    assert not [e for e in events if e.name.startswith("new/")]
    handle.stop()


def test_stop_ends_the_watch(sbx, watched):
    handle = sbx.files.watch_dir(watched)
    handle.stop()
    handle.stop()  # idempotent
    with pytest.raises(SandboxException, match="stopped"):
        handle.get_new_events()


def test_removing_the_watched_directory_ends_the_watch(sbx, watched):
    sbx.files.write(f"{watched}/f", "x")
    handle = sbx.files.watch_dir(watched)
    sbx.files.remove(watched)
    events = collect(handle, {("f", REMOVE)})
    assert events
    time.sleep(0.2)
    assert handle.get_new_events() == []


def test_missing_path_and_file(sbx, watched):
    with pytest.raises(NotFoundException):
        sbx.files.watch_dir(f"{watched}/nope")
    sbx.files.write(f"{watched}/file", "x")
    with pytest.raises(InvalidArgumentException, match="not a directory"):
        sbx.files.watch_dir(f"{watched}/file")


def test_many_watch_stop_cycles_leak_nothing(sbx, watched):
    # Each watch is an inotify instance, and a uid may hold at most 128 of them
    # (fs.inotify.max_user_instances): a leak would fail well before 200.
    for _ in range(200):
        sbx.files.watch_dir(watched, recursive=True).stop()
    handle = sbx.files.watch_dir(watched)
    sbx.files.write(f"{watched}/still.txt", "x")
    collect(handle, {("still.txt", CREATE)})
    handle.stop()


def test_watch_ends_with_the_sandbox():
    sandbox = Sandbox.create(timeout=60)
    handle = sandbox.files.watch_dir("/home/user")
    sandbox.kill()
    deadline = time.monotonic() + 10

    def poll_until_deadline() -> None:
        while time.monotonic() < deadline:
            handle.get_new_events()
            time.sleep(0.05)

    with pytest.raises(SandboxDiedException):
        poll_until_deadline()
    handle.stop()


def test_async_watch_dir_on_event_stop_and_timeout():
    async def scenario() -> None:
        async with await AsyncSandbox.create(timeout=120) as asbx:
            await asbx.files.make_dir("/home/user/aw")
            events: list[FilesystemEvent] = []
            exits: list[Exception | None] = []
            got = asyncio.Event()

            async def on_event(event: FilesystemEvent) -> None:
                events.append(event)
                if event.name == "sub/x.txt":
                    got.set()

            handle = await asbx.files.watch_dir("/home/user/aw", on_event, recursive=True, on_exit=exits.append)
            await asbx.commands.run("mkdir /home/user/aw/sub && echo x > /home/user/aw/sub/x.txt")
            await asyncio.wait_for(got.wait(), 5)
            assert ("sub", CREATE) in {(e.name, e.type) for e in events}
            await handle.stop()
            await handle.stop()
            assert exits == [None]
            count = len(events)
            await asbx.files.write("/home/user/aw/after-stop.txt", "x")
            await asyncio.sleep(0.3)
            assert len(events) == count

            with pytest.raises(NotFoundException):
                await asbx.files.watch_dir("/home/user/missing", events.append)

            timed: list[Exception | None] = []
            short = await asbx.files.watch_dir("/home/user/aw", events.append, on_exit=timed.append, timeout=0.3)
            await asyncio.sleep(1.0)
            assert len(timed) == 1 and isinstance(timed[0], TimeoutException)
            await short.stop()

    asyncio.run(scenario())
