"""The system view: jobs waiting and failing per kind, when the sweepers, workers and reconciliation last ran,
failed deliveries and cases needing attention — for `raiox status` and the admin page's panel."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from raiox.repository import cases, heartbeats, jobs
from raiox.repository import reconciliation as reconciliation_sql
from raiox.services import Services

# A heartbeat older than this (the sweepers run every minute) is shown as stale.
STALE_SECONDS = 180


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def system_status(services: Services) -> dict[str, Any]:
    with services.db.transaction() as conn:
        job_rows = jobs.summary(conn)
        beats = heartbeats.all_heartbeats(conn)
        counts = cases.status_counts(conn)
        failed_deliveries = cases.failed_deliveries(conn)
        reconciliation = reconciliation_sql.state(conn)
    return {
        "jobs": {row["kind"]: {"due": row["due"], "waiting_to_retry": row["waiting_to_retry"],
                               "running": row["running"], "failed": row["failed"],
                               "oldest_due_seconds": round(row["oldest_due_seconds"], 1)} for row in job_rows},
        "cases": counts,
        "needs_attention": counts.get("failed", 0),
        "failed_deliveries": failed_deliveries,
        "heartbeats": {row["name"]: {"at": _iso(row["at"]), "seconds_ago": round(row["seconds_ago"], 1),
                                     "stale": row["seconds_ago"] > STALE_SECONDS, **row["details"]}
                       for row in beats},
        "reconciliation": [{"form_id": row["form_id"], "last_run_at": _iso(row["last_run_at"]),
                            "watermark": _iso(row["watermark"]), "recorded": row["recorded"],
                            "last_error": row["last_error"]} for row in reconciliation],
    }
