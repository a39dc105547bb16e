"""Files through ``sandcell serve``: downloads stream and take regular files only, uploads stream
in within a per-team bound (issue 10, findings 6 and 15); the server's memory stays flat.

The server's resident memory is watched from outside (``/proc/<pid>/status``):
a download of ``/dev/zero`` or of a FIFO with an endless writer is stopped
(its sandbox killed) once the server grew past the bound, so a regression
fails the test instead of the machine.
"""

from __future__ import annotations

import concurrent.futures
import functools
import gzip
import hashlib
import io
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from e2b import InvalidArgumentException
from e2b_code_interpreter import Sandbox
from memory_guard import MiB, bounded_call, held_open, resident
from sandboxes import SandboxFactory
from serving import Server, start_server

from sandcell.server.store import Store

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="held_open reads other processes' fds (needs root)")

PLANT = """
import os, subprocess
os.mkfifo('/home/user/fifo')
subprocess.Popen('exec cat /dev/zero > /home/user/fifo', shell=True, start_new_session=True)  # writes for ever, once read
os.symlink('/dev/zero', '/home/user/zero.png')
"""
HOSTILE = ("/home/user/fifo", "/home/user/zero.png", "/dev/zero", "/dev/urandom")


def data_plane(sandbox: Sandbox) -> dict[str, str]:
    return {"E2b-Sandbox-Id": sandbox.sandbox_id, "E2b-Sandbox-Port": "49983", "X-Access-Token": sandbox._envd_access_token}


@pytest.fixture
def api(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.mark.slow
def test_downloading_a_fifo_or_a_device_is_refused_and_the_server_stays_small(server: Server, api: httpx.Client, bystander: Sandbox) -> None:
    sandbox = Sandbox.create(timeout=120)
    assert sandbox.run_code(PLANT).error is None
    native = httpx.Client(base_url=server.url, headers={"X-API-Key": os.environ["E2B_API_KEY"]}, timeout=60)
    downloads: dict[str, Callable[[str], Any]] = {
        "envd /files": lambda path: api.get("/files", params={"path": path}, headers=data_plane(sandbox)),
        "native files": lambda path: native.get(f"/v1/sandboxes/{sandbox.sandbox_id}/files", params={"path": path}),
    }
    for path in HOSTILE:
        for route, download in downloads.items():
            outcome = bounded_call(functools.partial(download, path), stop=sandbox.kill, limit=256 * MiB, timeout=30, pid=server.process.pid)
            assert outcome.stopped is None, f"{route} of {path}: the server {outcome.stopped}"
            response = outcome.value
            assert response.status_code == 400, (route, path, response.status_code, response.text[:200])
            assert set(response.json()) == {"code", "message"} and "not a regular file" in response.json()["message"]
        with pytest.raises(InvalidArgumentException, match="not a regular file"):
            sandbox.files.read(path)
    # envd has no type for FIFOs and devices (UNSPECIFIED): the SDK leaves them out of listings, as with E2B's own envd.
    assert not {entry.name for entry in sandbox.files.list("/home/user")} & {"fifo", "zero.png"}
    listed = native.get(f"/v1/sandboxes/{sandbox.sandbox_id}/files/list", params={"path": "/home/user"}).json()
    assert {entry["name"]: entry["type"] for entry in listed if entry["name"] in ("fifo", "zero.png")} == {"fifo": "fifo", "zero.png": "char_device"}
    native.close()
    sandbox.kill()
    assert server.alive()


@pytest.mark.slow
def test_a_download_streams_as_the_client_reads_and_ends_when_it_goes(server: Server, api: httpx.Client, bystander: Sandbox) -> None:
    name = f"download-{uuid.uuid4().hex[:8]}.bin"
    path = f"/home/user/{name}"
    bystander.commands.run(f"head -c 300M /dev/urandom > {path}", timeout=60)
    digest = bystander.commands.run(f"sha256sum {path}").stdout.split()[0]

    def download_slowly() -> tuple[str, int]:
        before = resident(server.process.pid)
        with api.stream("GET", "/files", params={"path": path}, headers=data_plane(bystander)) as response:
            assert response.status_code == 200
            chunks = response.iter_bytes(1024 * 1024)
            hashing = hashlib.sha256(next(chunks))
            time.sleep(2)  # the server holds a window of the file while its client waits, not the file
            held = resident(server.process.pid) - before
            for chunk in chunks:
                hashing.update(chunk)
            return hashing.hexdigest(), held

    outcome = bounded_call(download_slowly, stop=bystander.kill, limit=128 * MiB, pid=server.process.pid)
    assert outcome.stopped is None and outcome.error is None, outcome
    assert outcome.value[0] == digest, "the streamed file differs from the sandbox's"
    assert outcome.value[1] < 64 * MiB, f"the server held {outcome.value[1] // MiB} MiB for a client that waited"
    with api.stream("GET", "/files", params={"path": path}, headers=data_plane(bystander)) as response:
        chunks = response.iter_bytes(1024 * 1024)  # (held: a dropped iterator closes the response)
        next(chunks)
        assert held_open(name), "the sandbox reads the file while it is downloaded"
    deadline = time.monotonic() + 10  # the client went: the read ends in the sandbox
    while held_open(name) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not held_open(name), "a download whose client went away kept reading the file"
    assert server.alive()


def test_a_refused_upload_leaves_no_half_file_and_an_untouched_one_alone(api: httpx.Client, bystander: Sandbox) -> None:
    headers = data_plane(bystander) | {"Content-Type": "application/octet-stream"}
    bystander.files.write("/home/user/keep.txt", "old")
    response = api.post("/files", params={"path": "/home/user/keep.txt"}, content=b"not gzip at all", headers=headers | {"Content-Encoding": "gzip"})
    assert response.status_code == 400 and "gzip" in response.json()["message"], response.text
    assert bystander.files.read("/home/user/keep.txt") == "old", "a body refused before anything was written must not touch the file"
    bomb = gzip.compress(bytes(64 * MiB))  # 64 KiB that inflate to 64 MiB, past the server's limit
    response = api.post("/files", params={"path": "/home/user/keep.txt"}, content=bomb, headers=headers | {"Content-Encoding": "gzip"})
    assert response.status_code == 413, response.text
    assert not bystander.files.exists("/home/user/keep.txt"), "the part written before the limit was passed is removed"


# -- uploads, on a server of their own (its memory is measured, its bounds are set) -------------------
UPLOAD = 256 * MiB
SLOTS = 4
SLOT_WAIT = 3.0


@pytest.fixture(scope="module")
def upload_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str, str]]:
    """A server of its own: its memory is only the uploads', ``SLOTS`` uploads per team, ``SLOT_WAIT`` s for one; with keys of two teams."""
    root = tmp_path_factory.mktemp("uploads")
    running = start_server(
        root / "server.db", root / "server.log", extra=["--max-upload-mb", "300", "--max-uploads", str(SLOTS), "--upload-wait", str(SLOT_WAIT)]
    )
    store = Store(root / "server.db")
    yield running, store.create_key("alpha")[1], store.create_key("beta")[1]
    running.stop()


@pytest.fixture
def uploads(
    upload_server: tuple[Server, str, str], monkeypatch: pytest.MonkeyPatch, make_e2b_sandbox: SandboxFactory[Sandbox]
) -> tuple[Server, Callable[..., Sandbox]]:
    """The E2B SDK pointed at the upload server; ``make(team="alpha")`` a sandbox there, killed after the test."""
    server, alpha, beta = upload_server
    monkeypatch.setenv("E2B_API_URL", server.url)
    monkeypatch.setenv("E2B_SANDBOX_URL", server.url)

    def make(team: str = "alpha") -> Sandbox:
        return make_e2b_sandbox(timeout=300, api_key=alpha if team == "alpha" else beta)

    return server, make


def pattern(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


@pytest.mark.slow
def test_four_concurrent_uploads_of_256_mib_keep_the_server_small(uploads: tuple[Server, Callable[..., Sandbox]]) -> None:
    """Multipart (the SDK's way for bytes) and octet-stream (for file objects), two each, at once."""
    server, make = uploads
    sandboxes = [make() for _ in range(SLOTS)]
    data = pattern(UPLOAD)
    digest = hashlib.sha256(data).hexdigest()

    def upload(index: int) -> None:
        body = data if index % 2 else io.BytesIO(data)
        sandboxes[index].files.write("/home/user/big.bin", body, request_timeout=300)

    def all_at_once() -> None:
        with concurrent.futures.ThreadPoolExecutor(SLOTS) as pool:
            list(pool.map(upload, range(SLOTS)))

    before = resident(server.process.pid)
    outcome = bounded_call(all_at_once, stop=lambda: [sandbox.kill() for sandbox in sandboxes], limit=1024 * MiB, timeout=300, pid=server.process.pid)
    peak, growth = (before + outcome.growth) // MiB, outcome.growth // MiB
    print(f"\n{SLOTS} concurrent uploads of {UPLOAD // MiB} MiB: server resident {before // MiB} MiB before, peak {peak} MiB (+{growth} MiB)")
    assert outcome.stopped is None and outcome.error is None, outcome
    assert outcome.growth < 256 * MiB, f"the server grew by {outcome.growth // MiB} MiB for {SLOTS} uploads of {UPLOAD // MiB} MiB"
    for sandbox in sandboxes:
        assert sandbox.commands.run("sha256sum /home/user/big.bin").stdout.split()[0] == digest
    assert server.alive()


def slow_body(seconds: float, chunks: int = 8) -> Iterator[bytes]:
    for _ in range(chunks):
        time.sleep(seconds / chunks)
        yield b"s" * MiB


@pytest.mark.slow
def test_uploads_past_the_teams_bound_wait_for_a_slot_then_are_refused(uploads: tuple[Server, Callable[..., Sandbox]]) -> None:
    server, make = uploads
    sandbox, other_team = make(), make("beta")

    def hold_every_slot(seconds: float) -> list[concurrent.futures.Future[Any]]:
        pool = concurrent.futures.ThreadPoolExecutor(SLOTS)
        held = [pool.submit(sandbox.files.write, f"/home/user/slow-{index}.bin", slow_body(seconds), request_timeout=60) for index in range(SLOTS)]
        pool.shutdown(wait=False)
        time.sleep(0.5)  # all of them are streaming in
        return held

    held = hold_every_slot(1.5)  # shorter than the wait: the next upload waits for a slot, then goes through
    started = time.monotonic()
    sandbox.files.write("/home/user/waited.txt", "waited")
    waited = time.monotonic() - started
    assert all(future.result().path.startswith("/home/user/slow-") for future in held)
    assert 0.5 < waited < SLOT_WAIT + 1, f"the fifth upload took {waited:.1f} s: it should have waited for a slot"
    assert sandbox.files.read("/home/user/waited.txt") == "waited"

    held = hold_every_slot(SLOT_WAIT + 3)  # longer than the wait: refused with a clear error
    response = httpx.post(
        f"{server.url}/files",
        params={"path": "/home/user/refused.txt"},
        content=b"no slot",
        headers=data_plane(sandbox) | {"Content-Type": "application/octet-stream"},
        timeout=30,
    )
    assert response.status_code == 429, response.text
    assert response.json() == {"code": 429, "message": response.json()["message"]} and "uploads under way" in response.json()["message"]
    started = time.monotonic()
    other_team.files.write("/home/user/other.txt", "not held up")  # the bound is per team
    assert time.monotonic() - started < 2, "another team's upload waited for this team's slots"
    assert all(future.result().path.startswith("/home/user/slow-") for future in held)
    assert not sandbox.files.exists("/home/user/refused.txt")
    sandbox.files.write("/home/user/after.txt", "free again")
    assert sandbox.files.read("/home/user/after.txt") == "free again"
    assert server.alive()
