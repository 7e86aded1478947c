"""Numbered SQL migrations from infra/sql, applied in order under an advisory lock."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from raiox.database import Connection, connect
from raiox.repository import migrations as sql
from raiox.repository.migrations import AppliedMigration

log = logging.getLogger(__name__)

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """A migration file is malformed, or one already applied was edited afterwards."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations_dir() -> Path:
    """infra/sql, reached through the package's `sql` link so it also works from an installed wheel."""
    return Path(str(resources.files("raiox") / "sql"))


def load_migrations(directory: Path | None = None) -> list[Migration]:
    directory = directory or migrations_dir()
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_lower_snake.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version number in {directory}")
    return found


def applied_migrations(conn: Connection) -> list[AppliedMigration]:
    if not sql.ledger_exists(conn):
        return []
    return sql.applied(conn)


def migrate(url: str, directory: Path | None = None) -> list[Migration]:
    """Apply every pending migration, each in its own transaction; return the ones applied now.

    Safe to run twice and from two processes at once: the advisory lock makes the second wait, and it
    then finds nothing left to do. An applied migration whose file changed is an error, not a silent skip.
    """
    available = load_migrations(directory)
    applied_now: list[Migration] = []
    with connect(url, autocommit=True) as conn:
        sql.lock(conn)
        try:
            sql.create_ledger(conn)
            done = {m.version: m for m in applied_migrations(conn)}
            for migration in available:
                previous = done.get(migration.version)
                if previous is not None:
                    if previous.checksum != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.version:04d}_{migration.name} was edited after it was "
                            "applied; add a new numbered migration instead"
                        )
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode())  # bytes: no %-placeholder parsing of the file
                    sql.record(conn, migration.version, migration.name, migration.checksum)
                log.info("applied migration %04d_%s", migration.version, migration.name)
                applied_now.append(migration)
        finally:
            sql.unlock(conn)
    return applied_now


def pending_migrations(conn: Connection, directory: Path | None = None) -> list[Migration]:
    done = {m.version for m in applied_migrations(conn)}
    return [m for m in load_migrations(directory) if m.version not in done]
