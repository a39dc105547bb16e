"""Bad requests get the right status and a JSON error; nothing leaks; the server and other sandboxes carry on."""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Iterator

import httpx
import pytest
from e2b_code_interpreter import Sandbox
from serving import MAX_UPLOAD_MB, Keys, Server


@pytest.fixture
def api(server: Server, keys: Keys) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"X-API-Key": keys.alpha}, timeout=30) as client:
        yield client


def data_plane(sandbox: Sandbox, port: int = 49983, token: str | None = "own") -> dict[str, str]:
    headers = {"E2b-Sandbox-Id": sandbox.sandbox_id, "E2b-Sandbox-Port": str(port)}
    if token == "own":
        headers["X-Access-Token"] = sandbox._envd_access_token
    elif token is not None:
        headers["X-Access-Token"] = token
    return headers


def assert_error(response: httpx.Response, status: int, fragment: str = "") -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message"}, body
    assert fragment.lower() in body["message"].lower()


def test_authentication(server: Server, keys: Keys, bystander: Sandbox) -> None:
    assert_error(httpx.get(server.url + "/v2/sandboxes"), 401, "missing API key")
    assert_error(httpx.get(server.url + "/v2/sandboxes", headers={"X-API-Key": "e2b_" + "0" * 40}), 401, "invalid")
    assert_error(httpx.get(server.url + "/v2/sandboxes", headers={"X-API-Key": keys.revoked}), 401, "revoked")
    assert httpx.get(server.url + "/v2/sandboxes", headers={"Authorization": f"Bearer {keys.alpha}"}).status_code == 200


def test_another_teams_sandbox_is_not_found(server: Server, keys: Keys, bystander: Sandbox) -> None:
    with httpx.Client(base_url=server.url, headers={"X-API-Key": keys.beta}) as beta:
        assert_error(beta.get(f"/sandboxes/{bystander.sandbox_id}"), 404, "not found")
        assert_error(beta.delete(f"/sandboxes/{bystander.sandbox_id}"), 404)
        assert_error(beta.post(f"/sandboxes/{bystander.sandbox_id}/timeout", json={"timeout": 1}), 404)
        assert_error(beta.post(f"/sandboxes/{bystander.sandbox_id}/pause"), 404)
        assert bystander.sandbox_id not in [item["sandboxID"] for item in beta.get("/v2/sandboxes").json()]
    assert bystander.is_running()


def test_malformed_requests(api: httpx.Client, bystander: Sandbox) -> None:
    assert_error(api.post("/v2/sandboxes", content=b"{not json", headers={"Content-Type": "application/json"}), 400, "malformed JSON")
    assert_error(api.post("/v2/sandboxes", json=[1, 2]), 400, "object")
    assert_error(api.post("/v2/sandboxes", json={}), 400, "templateID")
    assert_error(api.post("/v2/sandboxes", json={"templateID": "base", "timeout": "soon"}), 400, "timeout")
    assert_error(api.post("/v2/sandboxes", json={"templateID": "base", "envVars": {"A": 1}}), 400, "envVars")
    assert_error(api.post("/v2/sandboxes", json={"templateID": "base", "timeout": -5}), 400, "timeout")
    assert_error(api.get("/sandboxes/does-not-exist"), 404, "not found")
    assert_error(api.get("/no/such/route"), 404, "not found")
    assert_error(api.post(f"/sandboxes/{bystander.sandbox_id}/fork", json={"count": 0}), 400, "count")
    assert_error(api.post(f"/sandboxes/{bystander.sandbox_id}/snapshots", json={}), 501, "does not support snapshots")
    assert_error(api.get("/templates"), 501, "templates")
    assert_error(api.put("/v2/sandboxes"), 405, "not allowed")
    assert_error(api.post("/v1/sandboxes", json={"timeout": "x"}), 400, "timeout")
    assert_error(api.post(f"/sandboxes/{bystander.sandbox_id}/timeout", content=b"\xff\xfe"), 400)
    headers = data_plane(bystander, port=49999)
    assert_error(api.post("/execute", content=b"[", headers=headers), 400, "malformed")
    assert_error(api.post("/execute", json={"code": "1", "language": "cobol"}, headers=headers), 400, "cobol")
    assert_error(api.post("/execute", json={"code": "1", "context_id": "nope"}, headers=headers), 404)


def test_data_plane_refusals(api: httpx.Client, bystander: Sandbox) -> None:
    assert_error(api.get("/health", headers={"E2b-Sandbox-Id": "missing", "E2b-Sandbox-Port": "49983"}), 502, "was not found")
    # A wrong or missing token is answered as an unknown id is: nothing tells that the id exists.
    assert_error(api.get("/files", params={"path": "/etc/hostname"}, headers=data_plane(bystander, token="wrong")), 502, "was not found")
    assert_error(api.get("/files", params={"path": "/etc/hostname"}, headers=data_plane(bystander, token=None)), 502, "was not found")
    assert_error(api.get("/", headers=data_plane(bystander, port=8080)), 502, "port 8080 is not open")
    assert_error(api.get("/files", params={"path": "/home/user/none"}, headers=data_plane(bystander)), 404)


def test_oversized_upload_is_refused_before_it_fills_anything(api: httpx.Client, bystander: Sandbox) -> None:
    too_big = b"x" * (MAX_UPLOAD_MB * 1024 * 1024 + 1)
    headers = data_plane(bystander) | {"Content-Type": "application/octet-stream"}
    assert_error(api.post("/files", params={"path": "big.bin"}, content=too_big, headers=headers), 413, "limit")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
        for _ in range(MAX_UPLOAD_MB + 1):
            yield b"y" * (1024 * 1024)

    assert_error(api.post("/files", params={"path": "big.bin"}, content=chunks(), headers=headers), 413, "limit")
    assert not bystander.files.exists("big.bin")


def test_garbled_and_truncated_connect_frames(api: httpx.Client, bystander: Sandbox) -> None:
    headers = data_plane(bystander) | {"Content-Type": "application/connect+json", "Connect-Protocol-Version": "1"}
    for body in (b"", b"\x00\x00\x00", b"\x00\x00\x00\x00\x10{}", b"\x00\x00\x00\x00\x02{", b"\x00" + struct.pack(">I", 2) + b"[]", b"garbage" * 10):
        response = api.post("/process.Process/Start", content=body, headers=headers)
        assert response.status_code in (200, 400), response.text  # streams report errors in their end message
        assert "error" in response.text or response.status_code == 400
    unary = data_plane(bystander) | {"Content-Type": "application/json", "Connect-Protocol-Version": "1"}
    response = api.post("/filesystem.Filesystem/Stat", content=b'{"path": ', headers=unary)
    assert response.status_code == 400 and json.loads(response.text)["code"] == "invalid_argument"
    response = api.post("/filesystem.Filesystem/Stat", json={"path": "/nowhere"}, headers=unary)
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_client_disconnecting_mid_stream_interrupts_the_run(server: Server, bystander: Sandbox) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    body = json.dumps({"code": "import time\nfor i in range(10**6):\n    print(i, flush=True)\n    time.sleep(0.01)"}).encode()
    headers = data_plane(bystander, port=49999)
    request = (
        f"POST /execute HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        + "\r\n"
    ).encode() + body
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(request)
        assert b"200 OK" in sock.recv(4096)
    time.sleep(0.5)
    started = time.monotonic()
    assert bystander.run_code("'free again'", timeout=20).text == "free again"
    assert time.monotonic() - started < 5, "the abandoned run kept the context busy"
    assert server.alive()


def test_no_route_reads_a_body_past_the_limit(api: httpx.Client, bystander: Sandbox) -> None:
    def chunks(head: bytes = b"") -> Iterator[bytes]:
        yield head
        for _ in range(MAX_UPLOAD_MB + 3):
            yield b"z" * (1024 * 1024)

    part = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
    multipart = data_plane(bystander) | {"Content-Type": "multipart/form-data; boundary=xyz"}
    assert_error(api.post("/files", content=chunks(part), headers=multipart), 413, "limit")
    assert_error(api.post("/v2/sandboxes", content=chunks(), headers={"Content-Type": "application/json"}), 413, "limit")
    host, port = str(api.base_url).removeprefix("http://").rstrip("/").split(":")
    with socket.create_connection((host, int(port))) as sock:  # a declared terabyte is refused before it is sent
        sock.sendall(f"POST /v1/sandboxes HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {10**12}\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")
    # Without a Content-Length, FastAPI reports the cut-off body as unparseable: refused either way.
    assert api.post("/v1/sandboxes", content=chunks(), headers={"Content-Type": "application/json"}).status_code in (400, 413)
