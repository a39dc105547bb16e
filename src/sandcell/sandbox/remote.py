"""A sandbox on a ``sandcell serve`` server, behind the same ``Sandbox`` API.

``RemoteCore`` stands where ``SandboxCore`` stands for a local sandbox: the
``Sandbox``/``AsyncSandbox`` classes and every operation in
``operations.py`` are the same code. Lifecycle calls go to the REST API;
each supervisor request travels as protocol frames through the server's
``/requests`` route, one HTTP stream per request.
"""

from __future__ import annotations

import datetime
import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from sandcell import protocol
from sandcell.isolation import Limits, Policy

from .connection import Stream, failure
from .errors import exception_for_status, name_for_status
from .models import HostUsage, SandboxException, SandboxInfo

STREAM_TIMEOUT = httpx.Timeout(connect=30.0, read=None, write=60.0, pool=30.0)
CALL_TIMEOUT = 60.0
ACCEPT_WAIT = 10.0


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message") or response.text)
    except ValueError:
        return response.text or f"HTTP {response.status_code}"


class _Chunks:
    """A blocking reader over an HTTP body, for ``protocol.read_frame``."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def read(self, size: int) -> bytes:
        while not self._buffer:
            self._buffer = next(self._chunks, b"")
            if not self._buffer:
                return b""
        taken, self._buffer = self._buffer[:size], self._buffer[size:]
        return taken


@dataclass
class _Request:
    stream: Stream
    accepted: threading.Event = field(default_factory=threading.Event)
    server_id: int | None = None
    response: httpx.Response | None = None
    forgotten: bool = False

    def wait_server_id(self) -> int | None:
        """The server's id of the request, once its ``accepted`` frame came (``None``: it never did)."""
        return self.server_id if self.accepted.wait(ACCEPT_WAIT) else None


class RemoteConnection:
    """``Connection``'s interface over HTTP: ``open`` starts one streamed request on a thread of its own."""

    def __init__(self, client: httpx.Client, path: str) -> None:
        self._client = client
        self._path = path
        self._ids = itertools.count(1)
        self._requests: dict[int, _Request] = {}
        self._lock = threading.Lock()
        self.closed_reason: str | None = None

    def open(self, header: dict[str, Any], payload: bytes, stream: Stream) -> int:
        request_id = next(self._ids)
        request = _Request(stream)
        with self._lock:
            self._requests[request_id] = request
        threading.Thread(target=self._run, args=(request_id, request, header, payload), name="sandcell-remote", daemon=True).start()
        return request_id

    def _run(self, request_id: int, request: _Request, header: dict[str, Any], payload: bytes) -> None:
        try:
            with self._client.stream("POST", f"{self._path}/requests", content=protocol.encode(header, payload), timeout=STREAM_TIMEOUT) as response:
                request.response = response
                if response.status_code != 200:
                    response.read()
                    request.stream.put(failure(name_for_status(response.status_code), _message(response)))
                    return
                reader = _Chunks(response.iter_bytes())
                accepted = protocol.read_frame(reader)
                request.server_id = accepted[0].get("request") if accepted else None
                request.accepted.set()
                while not request.forgotten and (frame := protocol.read_frame(reader)) is not None:
                    request.stream.put(frame)
                    if frame[0].get("type") in protocol.TERMINAL:
                        return
                if not request.forgotten:
                    request.stream.put(failure("SandboxDied", "the server ended the stream early"))
        except (httpx.HTTPError, protocol.ProtocolError) as exc:
            if not request.forgotten:
                request.stream.put(failure("SandboxDied", f"lost the connection to the sandcell server: {exc}"))
        finally:
            request.accepted.set()
            with self._lock:
                self._requests.pop(request_id, None)

    def pending(self, request_id: int) -> _Request | None:
        with self._lock:
            return self._requests.get(request_id)

    def forget(self, request_id: int) -> None:
        with self._lock:
            request = self._requests.pop(request_id, None)
        if request is not None:
            request.forgotten = True
            if request.response is not None:
                request.response.close()  # the server sees the client go and ends the request


class RemoteCore:
    """The lifecycle half of a remote sandbox; see the module docstring."""

    def __init__(self, client: httpx.Client, description: dict[str, Any]) -> None:
        self._client = client
        self.sandbox_id: str = description["sandbox_id"]
        self._path = f"/v1/sandboxes/{self.sandbox_id}"
        self._describe(description)
        self.policy = Policy(limits=Limits(**description["limits"]), network=description["network"], template=description["template"])
        self.connection = RemoteConnection(client, self._path)
        self._killed: str | None = None

    @classmethod
    def create(cls, api_url: str, api_key: str | None, **body: Any) -> RemoteCore:
        client = httpx.Client(base_url=api_url, headers={"X-API-Key": api_key} if api_key else {}, timeout=CALL_TIMEOUT)
        return cls(client, cls._checked(client.post("/v1/sandboxes", json=body)).json())

    @classmethod
    def connect(cls, api_url: str, api_key: str | None, sandbox_id: str) -> RemoteCore:
        client = httpx.Client(base_url=api_url, headers={"X-API-Key": api_key} if api_key else {}, timeout=CALL_TIMEOUT)
        return cls(client, cls._checked(client.get(f"/v1/sandboxes/{sandbox_id}")).json())

    @staticmethod
    def _checked(response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            raise exception_for_status(response.status_code, f"sandcell server: {_message(response)} (HTTP {response.status_code})")
        return response

    def _describe(self, description: dict[str, Any]) -> None:
        self.metadata: dict[str, str] = description["metadata"]
        self.started_at = datetime.datetime.fromisoformat(description["started_at"])
        self.end_at = datetime.datetime.fromisoformat(description["end_at"]) if description["end_at"] else None
        self.state: str = description["state"]
        self._limits: dict[str, Any] = description["limits"]

    def _refresh(self) -> dict[str, Any] | None:
        response = self._client.get(self._path)
        if response.status_code == 404:
            self._killed = self._killed or _message(response)
            return None
        description: dict[str, Any] = self._checked(response).json()
        self._describe(description)
        return description

    # -- the SandboxBackend -----------------------------------------------------
    blocks = True

    def open(self, header: dict[str, Any], payload: bytes, stream: Stream) -> int:
        return self.connection.open(header, payload, stream)

    def forget(self, request_id: int) -> None:
        self.connection.forget(request_id)

    def wait_started(self) -> None:
        """Nothing to wait for: the server answers once the sandbox is ready."""

    def ensure_running(self) -> None:
        if self._killed:
            raise SandboxException(f"the sandbox is not running: {self._killed}")

    @property
    def running(self) -> bool:
        return self._killed is None and self._refresh() is not None

    @property
    def stop_reason(self) -> str | None:
        """As last heard from the server (``running`` asks it)."""
        return self._killed

    @property
    def paused(self) -> bool:
        return self.state == "paused"

    def kill(self, reason: str = "it was killed") -> None:
        if self._killed is None:
            self._client.delete(self._path)
            self._killed = reason

    def fork(self, timeout: float | None) -> RemoteCore:
        """The server forks it (``POST /v1/sandboxes/{id}/fork``)."""
        return RemoteCore(self._client, self._checked(self._client.post(f"{self._path}/fork", json={"timeout": timeout}, timeout=STREAM_TIMEOUT)).json())

    def set_timeout(self, timeout: float | None) -> None:
        if timeout is None:
            raise SandboxException("a server-side sandbox always has a timeout; pass seconds")
        self._describe(self._checked(self._client.post(f"{self._path}/timeout", json={"timeout": timeout})).json())

    def pause(self) -> None:
        self._describe(self._checked(self._client.post(f"{self._path}/pause")).json())

    def resume(self) -> None:
        self._describe(self._checked(self._client.post(f"{self._path}/resume")).json())

    def info(self) -> SandboxInfo:
        if self._refresh() is None:
            raise SandboxException(f"the sandbox is not running: {self._killed}")
        return SandboxInfo(self.sandbox_id, self.started_at, self.end_at, {}, dict(self.metadata), dict(self._limits), self.state, self.policy.template)

    def _usage(self) -> dict[str, Any]:
        usage: dict[str, Any] = self._checked(self._client.get(f"{self._path}/usage")).json()
        return usage

    def usage(self) -> HostUsage:
        figures = self._usage()
        return HostUsage(figures["cpu_count"], figures["cpu_used_pct"], figures["mem_used"], figures["mem_total"], figures["mem_cache"])

    def memory_bytes(self) -> int | None:
        return self.usage().mem_used

    def cancel(self, request_id: int) -> None:
        """Sent from a thread of its own: it waits for the server to name the request, then on HTTP."""

        request = self.connection.pending(request_id)
        if request is None:
            return

        def send() -> None:
            server_id = request.wait_server_id()
            if server_id is not None:
                try:
                    self._client.post(f"{self._path}/requests/{server_id}/cancel")
                except httpx.HTTPError:
                    pass  # the server is gone: so is the request

        threading.Thread(target=send, name="sandcell-remote-cancel", daemon=True).start()
