"""SQL for the migration ledger and the advisory lock that serialises migrators, and what the server says of
itself (its versions and settings)."""

from __future__ import annotations

from datetime import datetime

from raiox.database import Connection
from raiox.models import Record
from raiox.repository import rows

# Any constant works; this one spells "raiox" in ASCII so it is recognisable in pg_locks.
MIGRATION_LOCK_ID = 0x7261696F78


class AppliedMigration(Record):
    """A row of the ledger: a migration applied, its checksum then, and when."""

    version: int
    name: str
    checksum: str
    applied_at: datetime


class ServerInfo(Record):
    """The PostgreSQL version and the pgvector version (None when it is not installed)."""

    postgres: str
    pgvector: str | None


def lock(conn: Connection) -> None:
    conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))


def unlock(conn: Connection) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))


def create_ledger(conn: Connection) -> None:
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version    integer PRIMARY KEY,
            name       text NOT NULL,
            checksum   text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )


def ledger_exists(conn: Connection) -> bool:
    row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL AS present").fetchone()
    return bool(row and row["present"])


def applied(conn: Connection) -> list[AppliedMigration]:
    return rows.many(conn, AppliedMigration,
                     "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version")


def record(conn: Connection, version: int, name: str, checksum: str) -> None:
    conn.execute(
        "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
        (version, name, checksum),
    )


def server_info(conn: Connection) -> ServerInfo:
    """PostgreSQL version and pgvector version (None when not installed)."""
    row = rows.one(
        conn, ServerInfo,
        """
        SELECT current_setting('server_version') AS postgres,
               (SELECT extversion FROM pg_extension WHERE extname = 'vector') AS pgvector
        """,
    )
    assert row is not None
    return row


def server_setting(conn: Connection, name: str) -> str:
    """A server setting as SHOW prints it (`shared_buffers` → `128MB`)."""
    row = conn.execute("SELECT current_setting(%s) AS value", (name,)).fetchone()
    assert row is not None  # current_setting answers one row, or raises for a name it does not know
    return str(row["value"])
