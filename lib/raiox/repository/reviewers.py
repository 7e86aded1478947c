"""SQL for reviewers and the sign-in rate limit (failures counted in the database, across instances)."""

from __future__ import annotations

from datetime import datetime, timedelta

from raiox.database import Connection
from raiox.models import Record
from raiox.repository import rows


class ReviewerListing(Record):
    """A reviewer as `raiox review list` shows one (never the password hash)."""

    name: str
    disabled: bool
    password_changed_at: datetime


class Account(Record):
    """A reviewer's row as sign-in and token checks read it."""

    id: int
    name: str
    password_hash: str
    disabled: bool
    session_epoch: int


_ACCOUNT_COLUMNS = "id, name, password_hash, disabled, session_epoch"


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


def reviewer_by_name(conn: Connection, name: str) -> Account | None:
    return rows.one(conn, Account, f"SELECT {_ACCOUNT_COLUMNS} FROM reviewers WHERE lower(name) = lower(%s)", (name,))


def reviewer_by_id(conn: Connection, reviewer_id: int) -> Account | None:
    return rows.one(conn, Account, f"SELECT {_ACCOUNT_COLUMNS} FROM reviewers WHERE id = %s", (reviewer_id,))


def list_reviewers(conn: Connection) -> list[ReviewerListing]:
    return rows.many(conn, ReviewerListing,
                     "SELECT name, disabled, password_changed_at FROM reviewers ORDER BY lower(name)")


def lock_sign_in(conn: Connection, name_key: str) -> None:
    """Serialise sign-ins for one name until the transaction ends, so parallel guesses are all counted."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('raiox-login:' || %s, 0))", (name_key,))


def recent_failures(conn: Connection, name_key: str, client: str, window: timedelta) -> tuple[int, float]:
    """(failures of this name from this client within the window, seconds since the last of them)."""
    row = conn.execute(
        """SELECT count(*) AS n, coalesce(extract(epoch FROM now() - max(at)), 0)::float AS since
             FROM login_failures WHERE name_key = %(key)s AND client = %(client)s AND at > now() - %(window)s""",
        {"key": name_key, "client": client, "window": window},
    ).fetchone()
    assert row is not None
    return int(row["n"]), float(row["since"])


def recent_failures_of_name(conn: Connection, name_key: str, window: timedelta) -> tuple[int, float]:
    """(failures of this name from every client within the window, seconds until the oldest leaves it)."""
    row = conn.execute(
        """SELECT count(*) AS n, coalesce(extract(epoch FROM min(at) + %(window)s - now()), 0)::float AS frees_in
             FROM login_failures WHERE name_key = %(key)s AND at > now() - %(window)s""",
        {"key": name_key, "window": window},
    ).fetchone()
    assert row is not None
    return int(row["n"]), float(row["frees_in"])


def record_failure(conn: Connection, name_key: str, client: str, window: timedelta) -> int:
    """Count a sign-in try as failed (until `forgive`) and drop every failure that has left the window (any
    name); returns its id."""
    conn.execute("DELETE FROM login_failures WHERE at <= now() - %s", (window,))
    row = conn.execute("INSERT INTO login_failures (name_key, client) VALUES (%s, %s) RETURNING id",
                       (name_key, client)).fetchone()
    assert row is not None
    return int(row["id"])


def forgive(conn: Connection, attempt: int, name_key: str, client: str) -> None:
    """A right password: this try and the client's earlier failures for the name are forgotten."""
    conn.execute("DELETE FROM login_failures WHERE id = %s OR (name_key = %s AND client = %s)",
                 (attempt, name_key, client))


def end_sessions(conn: Connection, reviewer_id: int) -> None:
    """Sign-out: every token issued to the reviewer before now stops working."""
    conn.execute("UPDATE reviewers SET session_epoch = session_epoch + 1 WHERE id = %s", (reviewer_id,))
