"""The system view: jobs waiting and failing per kind, when the sweepers, workers and reconciliation last ran,
failed deliveries, cases needing attention, and warnings about the catalog (empty, or nothing embedded by the
encoder in use) — for `raiox status` and the admin page's panel."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from raiox.repository import cases, catalog, heartbeats, jobs
from raiox.repository import reconciliation as reconciliation_sql
from raiox.services import Services

# A heartbeat older than this (the sweepers run every minute) is shown as stale.
STALE_SECONDS = 180


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def encoders_in_use(beats: list[dict[str, Any]]) -> dict[str, str]:
    """Model id → the heartbeat that reported it: the newest report of any embed function or worker, and every
    fresh one (an encoder switched long ago is not warned about forever)."""
    reported = sorted((row for row in beats if row["details"].get("model_id")), key=lambda row: row["seconds_ago"])
    chosen = reported[:1] + [row for row in reported[1:] if row["seconds_ago"] <= STALE_SECONDS]
    found: dict[str, str] = {}
    for row in chosen:
        found.setdefault(str(row["details"]["model_id"]), row["name"])
    return found


def catalog_warnings(size: dict[str, Any], encoders: dict[str, str]) -> list[str]:
    """What keeps every case from getting candidates: no catalog, or an encoder with no references of its own."""
    if not size["implants"] or not size["references"]:
        return ["The catalog is empty: no case can get candidates until one is imported "
                "(raiox catalog import MANIFEST; docs/examples/catalog.csv shows the columns)."]
    return [f"The encoder {model_id} ({reporter}) has no reference images: its cases get no candidates until "
            "`raiox catalog reembed` embeds the catalog with it." for model_id, reporter in encoders.items()
            if not size["references"].get(model_id)]


def system_status(services: Services) -> dict[str, Any]:
    with services.db.transaction() as conn:
        job_rows = jobs.summary(conn)
        beats = heartbeats.all_heartbeats(conn)
        counts = cases.status_counts(conn)
        failed_deliveries = cases.failed_deliveries(conn)
        reconciliation = reconciliation_sql.state(conn)
        size = catalog.catalog_size(conn)
    encoders = encoders_in_use(beats)
    return {
        "catalog": {**size, "encoders": encoders},
        "warnings": catalog_warnings(size, encoders),
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
