"""One team's data-plane request can never reach another team's sandbox (security issue, finding 1).

The attacker below holds a sandbox and its token of their own, and knows the
victim's sandbox id; every way of mixing the two must fail, the same way as
for an id that never existed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from e2b_code_interpreter import Sandbox
from sandboxes import SandboxFactory
from serving import Keys, Server

SECRET = "victim-secret-8d1f"


@pytest.fixture
def victim(keys: Keys, make_e2b_sandbox: SandboxFactory[Sandbox]) -> Iterator[Sandbox]:
    sandbox = make_e2b_sandbox(api_key=keys.alpha)
    sandbox.files.write("/home/user/secret.txt", SECRET)
    sandbox.run_code(f"witness = {SECRET!r}")
    yield sandbox
    assert sandbox.files.read("/home/user/secret.txt") == SECRET
    assert sandbox.run_code("witness").text == SECRET


@pytest.fixture
def attacker(keys: Keys, make_e2b_sandbox: SandboxFactory[Sandbox]) -> Sandbox:
    return make_e2b_sandbox(api_key=keys.beta)


def mixed(victim: Sandbox, attacker: Sandbox, port: int) -> list[tuple[str, str]]:
    """The victim's id first, the attacker's own id and token after it."""
    return [
        ("E2b-Sandbox-Id", victim.sandbox_id),
        ("E2b-Sandbox-Id", attacker.sandbox_id),
        ("E2b-Sandbox-Port", str(port)),
        ("X-Access-Token", attacker._envd_access_token),
    ]


def test_repeated_sandbox_headers_are_refused(server: Server, victim: Sandbox, attacker: Sandbox) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        attempts = [
            client.get("/files", params={"path": "/home/user/secret.txt"}, headers=mixed(victim, attacker, 49983)),
            client.post("/files", params={"path": "/home/user/secret.txt"}, content=b"overwritten", headers=mixed(victim, attacker, 49983)),
            client.post("/execute", json={"code": "witness"}, headers=mixed(victim, attacker, 49999)),
            client.post(
                "/filesystem.Filesystem/ListDir",
                json={"path": "/home/user"},
                headers=[*mixed(victim, attacker, 49983), ("Content-Type", "application/json"), ("Connect-Protocol-Version", "1")],
            ),
            client.post(
                "/process.Process/Start",
                content=b"\x00"
                + len(body := json.dumps({"process": {"cmd": "/bin/cat", "args": ["/home/user/secret.txt"]}}).encode()).to_bytes(4, "big")
                + body,
                headers=[*mixed(victim, attacker, 49983), ("Content-Type", "application/connect+json"), ("Connect-Protocol-Version", "1")],
            ),
        ]
        # A repeated port or token is refused as well, even with one sandbox id.
        own = [("E2b-Sandbox-Id", attacker.sandbox_id), ("X-Access-Token", attacker._envd_access_token)]
        attempts.append(client.get("/health", headers=[*own, ("E2b-Sandbox-Port", "49983"), ("E2b-Sandbox-Port", "49999")]))
        attempts.append(client.get("/health", headers=[*own, ("X-Access-Token", "x"), ("E2b-Sandbox-Port", "49983")]))
    for response in attempts:
        assert response.status_code == 400, response.text
        assert "more than once" in response.json()["message"]
        assert SECRET not in response.text


def test_the_log_names_the_sandbox_that_was_authorised(server: Server, attacker: Sandbox, victim: Sandbox) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        client.get(
            "/files", params={"path": "/home/user/secret.txt"}, headers={"E2b-Sandbox-Id": victim.sandbox_id, "X-Access-Token": attacker._envd_access_token}
        )
    lines = [line for line in server.log.read_text().splitlines() if "/files" in line]
    assert lines and victim.sandbox_id not in lines[-1]


def test_unknown_ended_and_unauthorised_ids_look_the_same(server: Server, keys: Keys, victim: Sandbox, attacker: Sandbox) -> None:
    ended = Sandbox.create(timeout=60, api_key=keys.alpha)
    ended_token = ended._envd_access_token
    ended.kill()
    cases = {
        "never existed": ("0" * 20, attacker._envd_access_token),
        "ended": (ended.sandbox_id, ended_token),
        "another team's, with our token": (victim.sandbox_id, attacker._envd_access_token),
        "another team's, without a token": (victim.sandbox_id, None),
    }
    answers = {}
    with httpx.Client(base_url=server.url, timeout=30) as client:  # no API key: the data plane needs none
        for name, (sandbox_id, token) in cases.items():
            headers = {"E2b-Sandbox-Id": sandbox_id, "E2b-Sandbox-Port": "49983"} | ({"X-Access-Token": token} if token else {})
            response = client.get("/files", params={"path": "/home/user/secret.txt"}, headers=headers)
            answers[name] = (response.status_code, response.json()["message"].replace(sandbox_id, "<id>"))
    assert len(set(answers.values())) == 1, answers
    assert "killed" not in next(iter(answers.values()))[1]
