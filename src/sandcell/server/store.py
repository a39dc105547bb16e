"""The server's durable state in SQLite: teams, API keys and the sandbox registry.

The registry is what makes a restart honest: every sandbox the server ever
handed out has a row, so after a restart each one is either found again or
reported with the reason it ended, never silently forgotten. The file is
private to the server's user (mode 600): it holds the sandboxes' data-plane
tokens, which clients keep using across a restart.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import json
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KEY_PREFIX = "e2b_"  # the official SDKs expect keys shaped like E2B's

SCHEMA = """
CREATE TABLE IF NOT EXISTS teams (
    id TEXT PRIMARY KEY,
    name TEXT UNIQUE NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams(id),
    name TEXT NOT NULL,
    mask TEXT NOT NULL,
    hash TEXT UNIQUE NOT NULL,
    created_at TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS sandboxes (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams(id),
    template TEXT NOT NULL,
    metadata TEXT NOT NULL,
    limits TEXT NOT NULL,
    allow_internet INTEGER NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    started_at TEXT NOT NULL,
    end_at TEXT,
    ended_at TEXT,
    server_instance TEXT NOT NULL,
    access_token TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS sandboxes_team_state ON sandboxes(team_id, state);
"""

LIVE_STATES = ("running", "paused")


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _iso(moment: datetime.datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _parse(text: str | None) -> datetime.datetime | None:
    return datetime.datetime.fromisoformat(text) if text else None


def hash_key(key: str) -> str:
    # Keys carry 160 random bits, so a plain digest cannot be brute-forced;
    # a slow KDF would only add latency to every request.
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class Team:
    id: str
    name: str


@dataclass
class ApiKey:
    id: str
    team: Team
    name: str
    mask: str
    created_at: datetime.datetime
    last_used_at: datetime.datetime | None
    revoked_at: datetime.datetime | None


@dataclass
class SandboxRecord:
    id: str
    team_id: str
    template: str
    metadata: dict[str, str]
    limits: dict[str, Any]
    allow_internet: bool
    state: str
    started_at: datetime.datetime
    end_at: datetime.datetime | None
    server_instance: str
    reason: str | None = None
    ended_at: datetime.datetime | None = field(default=None)
    # The data-plane token E2B clients hold; kept so they work on after a server restart.
    access_token: str = ""


class Store:
    """One SQLite file; safe to share between the event loop and worker threads."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._server_lock: int | None = None
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(sandboxes)")}
            if "access_token" not in columns:  # a registry from before tokens were kept
                self._db.execute("ALTER TABLE sandboxes ADD COLUMN access_token TEXT NOT NULL DEFAULT ''")
            # Its sandboxes get a token of their own: an empty one must never be what opens a sandbox.
            for (sandbox_id,) in self._db.execute("SELECT id FROM sandboxes WHERE access_token = ''").fetchall():
                self._db.execute("UPDATE sandboxes SET access_token = ? WHERE id = ?", (secrets.token_urlsafe(24), sandbox_id))
        if str(path) != ":memory:":
            Path(path).chmod(0o600)  # it holds key hashes and sandbox metadata

    def claim_for_server(self) -> None:
        """Make this process the one server of this registry (until it exits).

        Two servers on one registry would each take the other's sandboxes
        for lost; ``sandcell keys`` needs no claim and works beside a server.
        """
        if self.path == ":memory:" or self._server_lock is not None:
            return
        handle = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise RuntimeError(f"another sandcell serve is using the registry {self.path}") from None
        self._server_lock = handle

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _rows(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _run(self, sql: str, *args: Any) -> int:
        with self._lock:
            return self._db.execute(sql, args).rowcount

    # teams and keys

    def team(self, name: str, create: bool = False) -> Team | None:
        rows = self._rows("SELECT id, name FROM teams WHERE name = ?", name)
        if rows:
            return Team(rows[0]["id"], rows[0]["name"])
        if not create:
            return None
        team = Team("team_" + secrets.token_hex(8), name)
        self._run("INSERT INTO teams (id, name, created_at) VALUES (?, ?, ?)", team.id, team.name, _iso(now()))
        return team

    def create_key(self, team_name: str, name: str = "default") -> tuple[ApiKey, str]:
        """A new key for the team (created if new); the secret is returned only here."""
        team = self.team(team_name, create=True)
        assert team is not None
        secret = KEY_PREFIX + secrets.token_hex(20)
        key = ApiKey("key_" + secrets.token_hex(6), team, name, secret[:8] + "…" + secret[-4:], now(), None, None)
        self._run(
            "INSERT INTO api_keys (id, team_id, name, mask, hash, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            key.id,
            team.id,
            name,
            key.mask,
            hash_key(secret),
            _iso(key.created_at),
        )
        return key, secret

    def _key_from_row(self, row: sqlite3.Row) -> ApiKey:
        return ApiKey(
            row["id"],
            Team(row["team_id"], row["team_name"]),
            row["name"],
            row["mask"],
            datetime.datetime.fromisoformat(row["created_at"]),
            _parse(row["last_used_at"]),
            _parse(row["revoked_at"]),
        )

    _KEY_SELECT = "SELECT k.*, t.name AS team_name FROM api_keys k JOIN teams t ON t.id = k.team_id"

    def keys(self, team_name: str | None = None) -> list[ApiKey]:
        if team_name is None:
            rows = self._rows(self._KEY_SELECT + " ORDER BY k.created_at")
        else:
            rows = self._rows(self._KEY_SELECT + " WHERE t.name = ? ORDER BY k.created_at", team_name)
        return [self._key_from_row(row) for row in rows]

    def revoke_key(self, key_id: str) -> bool:
        return self._run("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", _iso(now()), key_id) == 1

    def authenticate(self, secret: str) -> Team | None:
        """The team owning a valid, unrevoked key; ``None`` for anything else."""
        rows = self._rows(self._KEY_SELECT + " WHERE k.hash = ? AND k.revoked_at IS NULL", hash_key(secret))
        if not rows:
            return None
        key = self._key_from_row(rows[0])
        if key.last_used_at is None or (now() - key.last_used_at).total_seconds() > 60:
            self._run("UPDATE api_keys SET last_used_at = ? WHERE id = ?", _iso(now()), key.id)
        return key.team

    # the sandbox registry

    def add_sandbox(self, record: SandboxRecord) -> None:
        self._run(
            "INSERT INTO sandboxes (id, team_id, template, metadata, limits, allow_internet, state, reason,"
            " started_at, end_at, ended_at, server_instance, access_token) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            record.id,
            record.team_id,
            record.template,
            json.dumps(record.metadata),
            json.dumps(record.limits),
            int(record.allow_internet),
            record.state,
            record.reason,
            _iso(record.started_at),
            _iso(record.end_at),
            _iso(record.ended_at),
            record.server_instance,
            record.access_token,
        )

    def update_sandbox(self, sandbox_id: str, **changes: Any) -> None:
        columns = {"state", "reason", "end_at", "ended_at", "server_instance"}
        if not changes or not set(changes) <= columns:
            raise ValueError(f"cannot update {sorted(set(changes) - columns)}")
        values = [_iso(value) if isinstance(value, datetime.datetime) else value for value in changes.values()]
        assignments = ", ".join(f"{column} = ?" for column in changes)
        self._run(f"UPDATE sandboxes SET {assignments} WHERE id = ?", *values, sandbox_id)  # noqa: S608 - the column names are checked against ``columns``

    def _record(self, row: sqlite3.Row) -> SandboxRecord:
        return SandboxRecord(
            id=row["id"],
            team_id=row["team_id"],
            template=row["template"],
            metadata=json.loads(row["metadata"]),
            limits=json.loads(row["limits"]),
            allow_internet=bool(row["allow_internet"]),
            state=row["state"],
            started_at=datetime.datetime.fromisoformat(row["started_at"]),
            end_at=_parse(row["end_at"]),
            server_instance=row["server_instance"],
            reason=row["reason"],
            ended_at=_parse(row["ended_at"]),
            access_token=row["access_token"],
        )

    def sandbox(self, sandbox_id: str) -> SandboxRecord | None:
        rows = self._rows("SELECT * FROM sandboxes WHERE id = ?", sandbox_id)
        return self._record(rows[0]) if rows else None

    def sandboxes(self, team_id: str | None = None, states: tuple[str, ...] | None = None) -> Iterator[SandboxRecord]:
        sql, args = "SELECT * FROM sandboxes WHERE 1 = 1", []
        if team_id is not None:
            sql += " AND team_id = ?"
            args.append(team_id)
        if states:
            sql += f" AND state IN ({', '.join('?' for _ in states)})"
            args.extend(states)
        for row in self._rows(sql + " ORDER BY started_at", *args):
            yield self._record(row)
