"""`raiox db`: the database's schema (migrations) and where it is."""

from __future__ import annotations

import json
from typing import Any

import click

from raiox import migrations
from raiox.adapters.storage import open_store
from raiox.database import connect, database_url
from raiox.repository import migrations as migration_sql
from raiox.settings import Settings, redact_url
from raiox.tools.commands.common import pass_settings


@click.group("db")
def db_group() -> None:
    """Database schema and status."""


@db_group.command("migrate")
@pass_settings
def db_migrate(settings: Settings) -> None:
    """Apply pending migrations from infra/sql (idempotent; safe from two processes at once)."""
    url = database_url(settings)
    applied = migrations.migrate(url)
    for migration in applied:
        click.echo(f"applied {migration.version:04d}_{migration.name}")
    click.echo(f"database {redact_url(url)} is up to date ({len(applied)} migration(s) applied now)")


@db_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@pass_settings
def db_status(settings: Settings, as_json: bool) -> None:
    """Where the database is, its PostgreSQL and pgvector versions, applied and pending migrations."""
    url = database_url(settings)
    with connect(url) as conn:
        info = migration_sql.server_info(conn)
        applied = migrations.applied_migrations(conn)
        pending = migrations.pending_migrations(conn)
    report: dict[str, Any] = {
        "database": redact_url(url),
        "embedded": settings.database_url is None,
        "postgres": info.postgres,
        "pgvector": info.pgvector,
        "applied": [f"{m.version:04d}_{m.name}" for m in applied],
        "pending": [f"{m.version:04d}_{m.name}" for m in pending],
        "storage": open_store(settings).describe(),
    }
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(f"database:   {report['database']}{' (embedded)' if report['embedded'] else ''}")
    click.echo(f"postgres:   {report['postgres']}")
    click.echo(f"pgvector:   {report['pgvector'] or 'not installed (run: raiox db migrate)'}")
    click.echo(f"applied:    {', '.join(report['applied']) or 'none'}")
    click.echo(f"pending:    {', '.join(report['pending']) or 'none'}")
    click.echo(f"storage:    {report['storage']}")
