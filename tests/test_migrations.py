"""Migrations: idempotent, serialised across processes, and strict about edited history."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from raiox import migrations
from raiox.database import connect


def _ledger(url: str) -> list[int]:
    with connect(url) as conn:
        return [row["version"] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]


def test_migrate_twice_applies_once(empty_db_url: str) -> None:
    first = migrations.migrate(empty_db_url)
    second = migrations.migrate(empty_db_url)
    assert [m.version for m in first] == [m.version for m in migrations.load_migrations()]
    assert second == []
    assert _ledger(empty_db_url) == [m.version for m in first]


def test_two_processes_migrating_at_once_both_succeed(empty_db_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": empty_db_url}
    command = [sys.executable, "-m", "raiox.tools.cli", "db", "migrate"]
    runs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    applied_counts = sorted(out.count("applied 0") for out, _ in outputs)
    assert applied_counts == [0, len(migrations.load_migrations())]
    assert _ledger(empty_db_url) == [m.version for m in migrations.load_migrations()]


def test_edited_migration_is_refused(empty_db_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "sql"
    shutil.copytree(migrations.migrations_dir(), folder)
    migrations.migrate(empty_db_url, folder)
    first = sorted(folder.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(migrations.MigrationError, match="edited after it was applied"):
        migrations.migrate(empty_db_url, folder)


def test_new_migration_file_is_applied_later(empty_db_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "sql"
    shutil.copytree(migrations.migrations_dir(), folder)
    migrations.migrate(empty_db_url, folder)
    (folder / "9999_add_probe.sql").write_text("CREATE TABLE probe (id int);")
    with connect(empty_db_url) as conn:
        assert [m.version for m in migrations.pending_migrations(conn, folder)] == [9999]
    assert [m.version for m in migrations.migrate(empty_db_url, folder)] == [9999]


def test_failed_migration_leaves_nothing_half_applied(empty_db_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "sql"
    shutil.copytree(migrations.migrations_dir(), folder)
    (folder / "9999_broken.sql").write_text("CREATE TABLE half (id int); SELECT no_such_function();")
    with pytest.raises(Exception, match="no_such_function"):
        migrations.migrate(empty_db_url, folder)
    with connect(empty_db_url) as conn:
        assert conn.execute("SELECT to_regclass('half') AS t").fetchone() == {"t": None}
        assert 9999 not in [m.version for m in migrations.applied_migrations(conn)]


def test_badly_named_migration_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "2_oops.sql").write_text("SELECT 1;")
    with pytest.raises(migrations.MigrationError, match="NNNN_lower_snake"):
        migrations.load_migrations(tmp_path)


def test_cli_migrate_and_status_on_embedded_database(raiox_home: Path) -> None:
    """What a fresh machine does: no DATABASE_URL, so pgserver starts one under $RAIOX_HOME/pg."""
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "raiox.tools.cli", *args], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    assert "applied 0001_initial" in run("db", "migrate").stdout
    assert "0 migration(s) applied now" in run("db", "migrate").stdout
    status = json.loads(run("db", "status", "--json").stdout)
    assert status["embedded"] is True
    assert tuple(int(part) for part in status["pgvector"].split(".")[:2]) >= (0, 6)
    assert status["applied"] == [f"{m.version:04d}_{m.name}" for m in migrations.load_migrations()]
    assert status["pending"] == []
    assert (raiox_home / "pg" / "PG_VERSION").exists()
    assert status["storage"] == f"local folder {(raiox_home / 'objects').resolve()}"


def test_status_names_a_database_without_pgvector(empty_db_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": empty_db_url}
    out = subprocess.run([sys.executable, "-m", "raiox.tools.cli", "db", "status"], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert "not installed (run: raiox db migrate)" in out
    assert "pending:    0001_initial, 0002_hnsw_graph_quality" in out
