"""``/metrics`` for Prometheus, and one JSON log line per request."""

from __future__ import annotations

import json

import httpx
from e2b_code_interpreter import Sandbox
from prometheus_client.parser import text_string_to_metric_families
from serving import Server


def samples(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(server.url + "/metrics").text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value for family in text_string_to_metric_families(text) for sample in family.samples}


def test_metrics_count_sandboxes_and_requests(server: Server) -> None:
    before = samples(server)
    sandbox = Sandbox.create(timeout=60)
    sandbox.run_code("1")
    during = samples(server)
    assert during[("sandcell_sandboxes", (("state", "running"),))] >= 1
    assert during[("sandcell_sandboxes_created_total", ())] == before.get(("sandcell_sandboxes_created_total", ()), 0) + 1
    created = ("sandcell_http_requests_total", (("api", "e2b-control"), ("method", "POST"), ("status", "201")))
    assert during[created] >= before.get(created, 0) + 1
    assert during[("sandcell_http_requests_total", (("api", "e2b-interpreter"), ("method", "POST"), ("status", "200")))] >= 1
    sandbox.kill()
    after = samples(server)
    assert after[("sandcell_sandboxes_ended_total", (("state", "killed"),))] >= 1


def test_every_request_is_one_json_log_line(server: Server) -> None:
    sandbox = Sandbox.create(timeout=60)
    sandbox.kill()
    records = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
    created = [record for record in records if record.get("path") == "/v2/sandboxes" and record.get("status") == 201]
    assert created and created[-1]["api"] == "e2b-control" and created[-1]["ms"] > 0 and created[-1]["level"] == "info"
    assert any(record.get("msg", "").startswith(f"sandbox {sandbox.sandbox_id} created") for record in records)
