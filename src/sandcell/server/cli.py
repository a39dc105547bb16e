"""``sandcell serve`` and ``sandcell keys``: run the server and manage its API keys."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

DEFAULT_DB = Path(os.environ.get("SANDCELL_DB", Path.home() / ".local/share/sandcell/server.db"))
DB_OPTION = typer.Option(DEFAULT_DB, "--db", envvar="SANDCELL_DB", help="the server's SQLite file (keys and the sandbox registry)")

console = Console()
keys = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)


def serve(
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(49982, help="port to listen on"),
    db: Path = DB_OPTION,
    log_level: str = typer.Option("info", help="debug, info, warning or error"),
    log_format: str = typer.Option("json", help="json (one object per line) or text"),
    max_upload_mb: int = typer.Option(512, help="largest file upload accepted, in MiB"),
    max_sandboxes: int = typer.Option(100, help="live sandboxes allowed per team"),
    max_uploads: int = typer.Option(4, help="file uploads streaming in at once per team; more wait for one to end"),
    upload_wait: float = typer.Option(30, help="seconds an upload waits for one of its team's slots before it is refused (429)"),
    max_memory_mb: int | None = typer.Option(None, help="most memory one sandbox may ask for, MiB (default: half the machine's)"),
    max_cpus: float | None = typer.Option(None, help="most CPUs one sandbox may ask for (default: the machine's)"),
    max_pids: int | None = typer.Option(None, help="most processes one sandbox may ask for (default: 4096)"),
    max_disk_mb: int | None = typer.Option(None, help="largest /home/user (and /tmp) one sandbox may ask for, MiB (default: half the machine's memory)"),
    max_open_files: int | None = typer.Option(None, help="most open files one sandbox may ask for (default: 65536)"),
    max_output_mb: int | None = typer.Option(None, help="most output per run one sandbox may ask for, MiB (default: 256)"),
    max_timeout: float = typer.Option(24 * 3600, help="longest sandbox lifetime a client may ask for, seconds"),
    max_team_memory_mb: int | None = typer.Option(None, help="memory limits one team's live sandboxes may hold together, MiB (default: the machine's memory)"),
    max_server_memory_mb: int | None = typer.Option(
        None, help="memory limits all sandboxes may hold, pooled ones too, MiB (default: twice the machine's memory)"
    ),
    orphan_grace: float = typer.Option(600, help="seconds sandboxes wait for the server to come back after it stops (or dies)"),
    kill_on_exit: bool = typer.Option(False, "--kill-on-exit", help="kill every sandbox when the server stops, instead of leaving them for the next start"),
    pool: int = typer.Option(2, help="sandboxes kept started, with numpy, pandas and matplotlib imported (about 100 MiB each): create takes one in ~15 ms"),
    client_patience: float = typer.Option(30, help="seconds a stream of output waits for a client that reads nothing, before it drops the rest of that output"),
) -> None:
    """Run the sandbox server: native REST API and E2B-compatible API on one port."""
    import dataclasses

    import uvicorn

    from .app import create_app
    from .manager import ServerConfig
    from .observability import configure_logging
    from .quotas import machine_maxima

    console.print(f"[dim]sandcell server on http://{host}:{port}, registry {db}[/dim]")
    console.print(f"[dim]E2B SDKs: E2B_API_URL=http://{host}:{port} E2B_SANDBOX_URL=http://{host}:{port} E2B_API_KEY=<a key from `sandcell keys create`>[/dim]")
    asked: dict[str, Any] = {
        "memory_mb": max_memory_mb,
        "cpus": max_cpus,
        "pids": max_pids,
        "disk_mb": max_disk_mb,
        "open_files": max_open_files,
        "output_mb": max_output_mb,
    }
    shares: dict[str, Any] = {"max_team_memory_mb": max_team_memory_mb, "max_server_memory_mb": max_server_memory_mb}
    try:
        maxima = dataclasses.replace(machine_maxima(), **{name: value for name, value in asked.items() if value is not None})
        config = ServerConfig(
            max_upload_bytes=max_upload_mb * 1024 * 1024,
            max_uploads_per_team=max_uploads,
            upload_wait=upload_wait,
            max_sandboxes_per_team=max_sandboxes,
            orphan_grace=orphan_grace,
            kill_on_exit=kill_on_exit,
            pool_size=pool,
            client_patience=client_patience,
            max_limits=maxima,
            max_timeout=max_timeout,
            **{name: value for name, value in shares.items() if value is not None},
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    configure_logging(log_level, structured=log_format == "json")
    uvicorn.run(create_app(db, config), host=host, port=port, log_level=log_level, access_log=False, timeout_graceful_shutdown=5)


@keys.command("create")
def create_key(
    team: str = typer.Option("default", help="the team that owns the key and its sandboxes"),
    name: str = typer.Option("default", help="a label for the key"),
    db: Path = DB_OPTION,
) -> None:
    """Create a key; it is shown once, only its hash is stored."""
    from .store import Store

    key, secret = Store(db).create_key(team, name)
    console.print(f"[dim]key {key.id} for team {key.team.name}[/dim]", highlight=False)
    print(secret)


@keys.command("list")
def list_keys(team: str = typer.Option(None, help="only this team's keys"), db: Path = DB_OPTION) -> None:
    """List keys (masked), with their team and when they were last used."""
    from .store import Store

    table = Table("id", "team", "name", "key", "created", "last used", "revoked")
    for key in Store(db).keys(team):
        table.add_row(
            key.id,
            key.team.name,
            key.name,
            key.mask,
            f"{key.created_at:%Y-%m-%d %H:%M}",
            f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "-",
            f"{key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "-",
        )
    console.print(table)


@keys.command("revoke")
def revoke_key(key_id: str = typer.Argument(..., help="the key's id, as `keys list` shows it"), db: Path = DB_OPTION) -> None:
    """Revoke a key: requests with it are refused from now on."""
    from .store import Store

    if not Store(db).revoke_key(key_id):
        console.print(f"[red]no active key {key_id}[/red]")
        raise typer.Exit(1)
    console.print(f"revoked {key_id}")
