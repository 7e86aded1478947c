"""SQL for reviewers and the sign-in rate limit (failures counted in the database, across instances)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from raiox.database import Connection

_REVIEWER_COLUMNS = "id, name, password_hash, disabled, created_at, password_changed_at"


def add_reviewer(conn: Connection, name: str, password_hash: str) -> int | None:
    """Insert the reviewer; None when the name is taken (names match ignoring case)."""
    row = conn.execute(
        """INSERT INTO reviewers (name, password_hash) VALUES (%s, %s)
           ON CONFLICT (lower(name)) DO NOTHING RETURNING id""",
        (name, password_hash),
    ).fetchone()
    return int(row["id"]) if row else None


def reset_reviewer(conn: Connection, name: str, password_hash: str) -> int | None:
    """New password and enabled again (its old tokens stop working); None when there is no such name."""
    row = conn.execute(
        """UPDATE reviewers SET password_hash = %s, disabled = false, password_changed_at = now()
            WHERE lower(name) = lower(%s) RETURNING id""",
        (password_hash, name),
    ).fetchone()
    return int(row["id"]) if row else None


def disable_reviewer(conn: Connection, name: str) -> bool:
    row = conn.execute(
        "UPDATE reviewers SET disabled = true WHERE lower(name) = lower(%s) RETURNING id", (name,)
    ).fetchone()
    return row is not None


def reviewer_by_name(conn: Connection, name: str) -> dict[str, Any] | None:
    return conn.execute(
        f"SELECT {_REVIEWER_COLUMNS} FROM reviewers WHERE lower(name) = lower(%s)", (name,)
    ).fetchone()


def reviewer_by_id(conn: Connection, reviewer_id: int) -> dict[str, Any] | None:
    return conn.execute(f"SELECT {_REVIEWER_COLUMNS} FROM reviewers WHERE id = %s", (reviewer_id,)).fetchone()


def list_reviewers(conn: Connection) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT id, name, disabled, created_at, password_changed_at FROM reviewers ORDER BY lower(name)"
    ).fetchall()


def lock_sign_in(conn: Connection, name_key: str) -> None:
    """Serialise sign-ins for one name until the transaction ends, so parallel guesses are all counted."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('raiox-login:' || %s, 0))", (name_key,))


def recent_failures(conn: Connection, name_key: str, window: timedelta) -> tuple[int, int]:
    """(failures within the window, seconds until the oldest of them leaves it)."""
    row = conn.execute(
        """SELECT count(*) AS n,
                  coalesce(ceil(extract(epoch FROM min(at) + %(window)s - now())), 0)::int AS retry_after
             FROM login_failures WHERE name_key = %(key)s AND at > now() - %(window)s""",
        {"key": name_key, "window": window},
    ).fetchone()
    assert row is not None
    return int(row["n"]), max(1, int(row["retry_after"]))


def record_failure(conn: Connection, name_key: str, window: timedelta) -> None:
    """Count a failed sign-in and drop every failure that has left the window (any name)."""
    conn.execute("DELETE FROM login_failures WHERE at <= now() - %s", (window,))
    conn.execute("INSERT INTO login_failures (name_key) VALUES (%s)", (name_key,))


def clear_failures(conn: Connection, name_key: str) -> None:
    conn.execute("DELETE FROM login_failures WHERE name_key = %s", (name_key,))
