"""The `raiox` command line: thin commands over the library, each printing what it did."""

from __future__ import annotations

import json
import logging
import os

import click

from raiox import logs, migrations
from raiox.adapters.storage import open_store
from raiox.database import connect, database_url
from raiox.repository import migrations as migration_sql
from raiox.settings import Settings, redact_url
from raiox.tools.commands.bench import bench_group
from raiox.tools.commands.common import Invocation, pass_settings
from raiox.tools.commands.deploy import deploy_group
from raiox.tools.commands.embedding import catalog_group, match_command, worker_command
from raiox.tools.commands.intake import reconcile_command, simulate_webhook
from raiox.tools.commands.local import batch_test_command, demo_command, dev_command
from raiox.tools.commands.quality import eval_command, render_cache_command, render_films_command, train_command
from raiox.tools.commands.review import case_group, reviewer_group, status_command


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log progress to stderr.")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """Raiox: identify dental implant systems on X-rays."""
    # Text for people at a terminal, unless RAIOX_LOG_FORMAT asks for JSON (a worker whose logs are collected).
    logs.configure(json=os.environ.get("RAIOX_LOG_FORMAT", "text").lower() == "json",
                   level=logging.INFO if verbose else logging.WARNING)
    invocation = ctx.ensure_object(Invocation)
    ctx.call_on_close(invocation.close)


@main.group()
def db() -> None:
    """Database schema and status."""


@db.command("migrate")
@pass_settings
def db_migrate(settings: Settings) -> None:
    """Apply pending migrations from infra/sql (idempotent; safe from two processes at once)."""
    url = database_url(settings)
    applied = migrations.migrate(url)
    for migration in applied:
        click.echo(f"applied {migration.version:04d}_{migration.name}")
    click.echo(f"database {redact_url(url)} is up to date ({len(applied)} migration(s) applied now)")


@db.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@pass_settings
def db_status(settings: Settings, as_json: bool) -> None:
    """Where the database is, its PostgreSQL and pgvector versions, applied and pending migrations."""
    url = database_url(settings)
    with connect(url) as conn:
        info = migration_sql.server_info(conn)
        applied = migrations.applied_migrations(conn)
        pending = migrations.pending_migrations(conn)
    report = {
        "database": redact_url(url),
        "embedded": settings.database_url is None,
        "postgres": info["postgres"],
        "pgvector": info["pgvector"],
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


# Commands live beside their pipeline step (tools/commands/), registered here.
for command in (catalog_group, match_command, worker_command, simulate_webhook, reconcile_command, dev_command,
                demo_command, batch_test_command, eval_command, train_command, render_films_command,
                render_cache_command, reviewer_group, deploy_group, bench_group, case_group, status_command):
    main.add_command(command)


if __name__ == "__main__":
    main()
