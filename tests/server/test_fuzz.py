"""A bounded schemathesis run against a real ``sandcell serve``: no 5xx, no hang, every error ``{code, message}``.

Every operation of ``/openapi.json`` (sandcell's ``/v1`` and E2B's control
plane) gets data that fits its schema and data that does not; sandbox ids
point at a real, running sandbox, so the routes reach one. The number of
examples per operation and mode is ``SANDCELL_FUZZ_EXAMPLES`` (a few here;
``benchmarks/fuzz.py`` runs many more).
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode
from serving import Server, start_server

from sandcell.server.store import Store

EXAMPLES = int(os.environ.get("SANDCELL_FUZZ_EXAMPLES", "6"))
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300 + 30 * EXAMPLES)]
REQUEST_TIMEOUT = 90  # longer than any route may take: past it the server hangs
# Small shares, so that fuzzed creates and forks cost little; killed when the server stops.
SERVER_OPTIONS = ["--kill-on-exit", "--max-sandboxes", "4", "--max-team-memory-mb", "8192", "--max-timeout", "600"]


class Target:
    """A running sandbox of the fuzzing team for the sandbox ids in paths, made again when a case ended it."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.id: str | None = None

    def sandbox_id(self) -> str:
        state = self.client.get(f"/v1/sandboxes/{self.id}").json().get("state") if self.id else None
        if state == "paused":
            self.client.post(f"/v1/sandboxes/{self.id}/resume")
        elif state != "running":
            for listed in self.client.get("/v1/sandboxes").json():  # make room: fuzzed creates fill the team's share
                self.client.delete(f"/v1/sandboxes/{listed['sandbox_id']}")
            created = self.client.post("/v1/sandboxes", json={"timeout": 600})
            assert created.status_code == 201, created.text
            self.id = created.json()["sandbox_id"]
        assert self.id is not None
        return self.id


def check(case: schemathesis.Case, server: Server, key: str, target: Target) -> None:
    if "sandbox_id" in (case.path_parameters or {}):
        case.path_parameters["sandbox_id"] = target.sandbox_id()
    try:
        response = case.call(base_url=server.url, headers={"X-API-Key": key}, timeout=REQUEST_TIMEOUT)
    except Exception as exc:  # a timeout or a dropped connection is the failure to report
        raise AssertionError(f"no answer: {exc}\n{case.as_curl_command()}") from exc
    where = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}\n{case.as_curl_command()}"
    assert response.status_code < 500, where
    if response.status_code >= 400:
        content_type = {name.lower(): values for name, values in response.headers.items()}.get("content-type", [""])[0]
        assert content_type.startswith("application/json"), where
        body = response.json()
        assert isinstance(body, dict) and set(body) == {"code", "message"}, where


def test_the_api_survives_fuzzing(tmp_path: Path) -> None:
    db = tmp_path / "server.db"
    key = Store(db).create_key("fuzz")[1]
    server = start_server(db, tmp_path / "server.log", extra=SERVER_OPTIONS)
    try:
        schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
        with httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=REQUEST_TIMEOUT) as client:
            target = Target(client)
            operations = [result.ok() for result in schema.get_all_operations()]
            assert len(operations) >= 30, "the spec lost operations"
            for operation in operations:
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                    @settings(
                        max_examples=EXAMPLES,
                        deadline=None,
                        database=None,
                        derandomize=True,
                        phases=[Phase.explicit, Phase.generate],
                        suppress_health_check=list(HealthCheck),
                    )
                    @given(case=operation.as_strategy(generation_mode=mode))
                    def fuzz(case: schemathesis.Case) -> None:
                        check(case, server, key, target)

                    try:
                        fuzz()
                    except Unsatisfiable:
                        assert mode == GenerationMode.NEGATIVE, operation.label  # nothing of it can be made invalid (a path of strings)
        assert server.alive()
    finally:
        server.stop()
