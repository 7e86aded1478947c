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


def encoders_in_use(beats: list[heartbeats.Heartbeat]) -> dict[str, str]:
    """Model id → the heartbeat that reported it: the newest report of any embed function or worker, and every
    fresh one (an encoder switched long ago is not warned about forever)."""
    reported = sorted((beat for beat in beats if beat.details.get("model_id")), key=lambda beat: beat.seconds_ago)
    chosen = reported[:1] + [beat for beat in reported[1:] if beat.seconds_ago <= STALE_SECONDS]
    found: dict[str, str] = {}
    for beat in chosen:
        found.setdefault(str(beat.details["model_id"]), beat.name)
    return found


def catalog_warnings(size: catalog.CatalogSize, encoders: dict[str, str]) -> list[str]:
    """What keeps every case from getting candidates: no catalog, or an encoder with no references of its own."""
    if not size.implants or not size.references:
        return ["The catalog is empty: no case can get candidates until one is imported "
                "(raiox catalog import MANIFEST; docs/examples/catalog.csv shows the columns), which then ranks "
                "the waiting cases again."]
    return [f"The encoder {model_id} ({reporter}) has no reference images: its cases get no candidates until "
            "`raiox catalog reembed` embeds the catalog with it; then `raiox case rematch` ranks the waiting cases "
            "again." for model_id, reporter in encoders.items()
            if not size.references.get(model_id)]


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
        "catalog": {**size.model_dump(), "encoders": encoders},
        "warnings": catalog_warnings(size, encoders),
        "jobs": {row.kind: {"due": row.due, "waiting_to_retry": row.waiting_to_retry, "running": row.running,
                            "failed": row.failed, "oldest_due_seconds": round(row.oldest_due_seconds, 1)}
                 for row in job_rows},
        "cases": counts,
        "needs_attention": counts.get("failed", 0),
        "failed_deliveries": failed_deliveries,
        "heartbeats": {beat.name: {"at": _iso(beat.at), "seconds_ago": round(beat.seconds_ago, 1),
                                   "stale": beat.seconds_ago > STALE_SECONDS, **beat.details}
                       for beat in beats},
        "reconciliation": [{"form_id": form.form_id, "last_run_at": _iso(form.last_run_at),
                            "watermark": _iso(form.watermark), "recorded": form.recorded,
                            "last_error": form.last_error} for form in reconciliation],
    }
