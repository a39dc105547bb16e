"""Prometheus metrics at ``/metrics`` and one structured (JSON) log line per request.

Metrics live in the server's own registry, so several servers in one
process (tests) do not collide, and carry no team names or ids: the
endpoint needs no key.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .deps import SCOPE_SANDBOX
from .manager import SandboxManager

log = logging.getLogger("sandcell.server.access")


class SandboxCollector:
    """Counts read from the manager at scrape time."""

    def __init__(self, manager: SandboxManager) -> None:
        self.manager = manager

    def collect(self) -> Iterator[Any]:
        live = GaugeMetricFamily("sandcell_sandboxes", "Sandboxes this server holds, by state", labels=["state"])
        for state in ("running", "paused"):
            live.add_metric([state], sum(1 for sandbox in self.manager.live() if sandbox.record.state == state))
        yield live
        if self.manager.pool is not None:
            yield GaugeMetricFamily("sandcell_pool_ready", "Started sandboxes waiting in the pool (default kind)", value=self.manager.pool.ready())
        yield CounterMetricFamily("sandcell_sandboxes_created", "Sandboxes created", value=self.manager.created)
        ended = CounterMetricFamily("sandcell_sandboxes_ended", "Sandboxes ended, by how (killed, ended, stopped)", labels=["state"])
        for state, count in sorted(self.manager.ended.items()):
            ended.add_metric([state], count)
        yield ended


class Metrics:
    def __init__(self, manager: SandboxManager) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("sandcell_http_requests", "HTTP requests answered", ["api", "method", "status"], registry=self.registry)
        self.latency = Histogram(
            "sandcell_http_request_duration_seconds",
            "Time to the end of the answer (streams included)",
            ["api"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.registry.register(SandboxCollector(manager))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def api_of(scope: Scope, headers: dict[bytes, bytes]) -> str:
    if b"e2b-sandbox-id" in headers:
        return "e2b-interpreter" if headers.get(b"e2b-sandbox-port") == b"49999" else "e2b-envd"
    path = scope.get("path", "")
    return "v1" if path.startswith("/v1/") else "metrics" if path == "/metrics" else "e2b-control"


class Observed:
    """Wraps the server: serves ``/metrics``, counts and times every request, logs it."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        api = api_of(scope, headers)
        if api == "metrics":
            body = self.metrics.exposition()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        started = time.perf_counter()
        status = 500

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.requests.labels(api, scope["method"], str(status)).inc()
            self.metrics.latency.labels(api).observe(elapsed)
            # The sandbox the data plane resolved and authorised, never a header's claim.
            resolved = scope.get(SCOPE_SANDBOX)
            sandbox = resolved.id if resolved is not None else None
            log.info(
                "request",
                extra={
                    "fields": {
                        "api": api,
                        "method": scope["method"],
                        "path": scope.get("path"),
                        "status": status,
                        "ms": round(elapsed * 1000, 2),
                        "sandbox": sandbox,
                    }
                },
            )


class JsonLines(logging.Formatter):
    """One JSON object per log record: time, level, logger, message, and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str, structured: bool) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines() if structured else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s %(fields)s", defaults={"fields": ""}))
    logger = logging.getLogger("sandcell")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
