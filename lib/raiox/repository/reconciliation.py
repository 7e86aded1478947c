"""SQL for reconciliation with Jotform's API: per form, the newest submission time seen and when it last ran."""

from __future__ import annotations

from datetime import datetime, timedelta

from raiox.database import Connection
from raiox.models import Record
from raiox.repository import rows


class Reconciliation(Record):
    """One form's reconciliation: the newest submission time seen, when it last ran, how it ended, and how many
    submissions it has recorded."""

    form_id: str
    watermark: datetime | None
    last_run_at: datetime | None
    last_error: str | None
    recorded: int


_COLUMNS = "form_id, watermark, last_run_at, last_error, recorded"


def claim_run(conn: Connection, form_id: str, every: timedelta) -> Reconciliation | None:
    """The form's state when its reconciliation is due (never ran, or not within `every`), marking it as
    running now so that a concurrent sweeper skips it; None when it is not due."""
    conn.execute("INSERT INTO jotform_reconciliation (form_id) VALUES (%s) ON CONFLICT DO NOTHING", (form_id,))
    return rows.one(
        conn, Reconciliation,
        f"""UPDATE jotform_reconciliation SET last_run_at = now()
             WHERE form_id = %s AND (last_run_at IS NULL OR last_run_at <= now() - %s)
         RETURNING {_COLUMNS}""",
        (form_id, every),
    )


def finish_run(conn: Connection, form_id: str, *, watermark: datetime | None, recorded: int,
               error: str | None) -> None:
    conn.execute(
        """UPDATE jotform_reconciliation
              SET watermark = greatest(watermark, %s), recorded = recorded + %s, last_error = %s
            WHERE form_id = %s""",
        (watermark, recorded, error, form_id),
    )


def state(conn: Connection) -> list[Reconciliation]:
    return rows.many(conn, Reconciliation, f"SELECT {_COLUMNS} FROM jotform_reconciliation ORDER BY form_id")
