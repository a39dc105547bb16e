"""Start and stop a real ``sandcell serve`` on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

MAX_UPLOAD_MB = 8
SANDCELL = Path(sys.executable).with_name("sandcell")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    url: str
    db: Path
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def alive(self) -> bool:
        return self.process.poll() is None and httpx.get(self.url + "/openapi.json", timeout=5).status_code == 200


def start_server(db: Path, log: Path, port: int | None = None, extra: list[str] | None = None, env: dict[str, str] | None = None) -> Server:
    """``env``: variables to set for the server on top of this process's."""
    port = port or free_port()
    command = [str(SANDCELL), "serve", "--port", str(port), "--db", str(db), "--log-level", "info", "--max-upload-mb", str(MAX_UPLOAD_MB), "--pool", "0"]
    command += extra or []
    with log.open("ab") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sandcell serve exited: {log.read_text()[-2000:]}")
        try:
            httpx.get(url + "/openapi.json", timeout=1)
            return Server(url, db, process, log)
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("sandcell serve did not start within 30 s")


@dataclass
class Keys:
    alpha: str
    beta: str
    revoked: str
