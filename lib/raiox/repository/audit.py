"""SQL for the audit trail (`audit_log`): who did what to a case, and when."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from raiox.database import Connection
from raiox.models import Record
from raiox.repository import rows


class AuditEntry(Record):
    """One step of a case's trail, without its details."""

    at: datetime
    actor: str
    action: str


def record_audit(
    conn: Connection, *, actor: str, action: str, case_id: int | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    conn.execute(
        "INSERT INTO audit_log (actor, action, case_id, details) VALUES (%s, %s, %s, %s)",
        (actor, action, case_id, Jsonb(details or {})),
    )


def audit_trail(conn: Connection, case_id: int) -> list[AuditEntry]:
    """Who did what to the case, and when (its details are left out: the case view shows the trail)."""
    return rows.many(conn, AuditEntry, "SELECT at, actor, action FROM audit_log WHERE case_id = %s ORDER BY id",
                     (case_id,))
