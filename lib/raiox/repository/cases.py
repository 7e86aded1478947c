"""SQL for cases: creation (idempotent on submission id), status changes, the list the review page reads,
erasure and retention. A case's X-rays, rankings and trail are in `images`, `matches` and `audit`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from psycopg.types.json import Jsonb

from raiox.database import Connection
from raiox.models import Case, CaseStatus, Record
from raiox.repository import findings, rows

_CASE_COLUMNS = """id, submission_id, form_id, source, submitter_name, submitter_email, client_id,
                   status, error, created_at, updated_at, notified_at, erased_at"""


def create_case(
    conn: Connection,
    *,
    submission_id: str,
    form_id: str | None = None,
    source: str = "jotform",
    submitter_name: str | None = None,
    submitter_email: str | None = None,
    client_id: str | None = None,
    raw_payload: dict[str, Any] | None = None,
) -> tuple[Case, bool]:
    """Create the case, or return the one that already has this submission id; returns (case, created).

    Two transactions racing on the same submission id both end with the same single case: the loser's
    INSERT waits for the winner's commit, then does nothing and reads the winner's row.
    """
    case = rows.one(
        conn, Case,
        f"""
        INSERT INTO cases (submission_id, form_id, source, submitter_name, submitter_email, client_id,
                           raw_payload)
        VALUES (%s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (source, submission_id) DO NOTHING
        RETURNING {_CASE_COLUMNS}
        """,
        (submission_id, form_id, source, submitter_name, submitter_email, client_id,
         Jsonb(raw_payload or {})),
    )
    if case is not None:
        return case, True
    existing = case_by_submission_id(conn, submission_id, source)
    assert existing is not None
    return existing, False


def case_by_submission_id(conn: Connection, submission_id: str, source: str = "jotform") -> Case | None:
    return rows.one(conn, Case, f"SELECT {_CASE_COLUMNS} FROM cases WHERE source = %s AND submission_id = %s",
                    (source, submission_id))


def get_case(conn: Connection, case_id: int, *, lock: bool = False) -> Case | None:
    """The case; `lock` holds its row until the transaction ends (deciders on one case queue up here)."""
    return rows.one(conn, Case, f"SELECT {_CASE_COLUMNS} FROM cases WHERE id = %s {'FOR UPDATE' if lock else ''}",
                    (case_id,))


def case_ids_with_status(conn: Connection, status: CaseStatus, among: Sequence[int] | None = None) -> list[int]:
    """The cases in `status` (of `among`, if given), their rows held until the transaction ends so that no
    decision moves them meanwhile."""
    if among is None:
        found = conn.execute("SELECT id FROM cases WHERE status = %s ORDER BY id FOR UPDATE", (status,))
    else:
        found = conn.execute("SELECT id FROM cases WHERE status = %s AND id = ANY(%s) ORDER BY id FOR UPDATE",
                             (status, list(among)))
    return [row["id"] for row in found]


def set_case_status(conn: Connection, case_id: int, status: CaseStatus, *, error: str | None = None) -> Case:
    """Move a case along its lifecycle; the database refuses transitions the lifecycle does not allow."""
    case = rows.one(conn, Case, f"UPDATE cases SET status = %s, error = %s WHERE id = %s RETURNING {_CASE_COLUMNS}",
                    (status, error, case_id))
    if case is None:
        raise LookupError(f"no case {case_id}")
    return case


def mark_notified(conn: Connection, case_id: int) -> None:
    """Case → `notified` with the time (again, for a redelivery); the lifecycle trigger refuses undecided cases."""
    conn.execute("UPDATE cases SET status = 'notified', notified_at = now() WHERE id = %s", (case_id,))


# Review: lists and details ---------------------------------------------------------------------------


def status_counts(conn: Connection) -> dict[str, int]:
    counted = conn.execute("SELECT status, count(*) AS n FROM cases GROUP BY status").fetchall()
    return {row["status"]: int(row["n"]) for row in counted}


class CaseListing(Record):
    """A case as the review list shows it: its top candidate (rank 1 of its first embedded image) and its
    decision (with the chosen implant's names), None where it has none."""

    id: int
    submission_id: str
    submitter_name: str | None
    client_id: str | None
    status: CaseStatus
    error: str | None
    created_at: datetime
    images: int
    top_manufacturer: str | None
    top_system: str | None
    top_similarity: float | None
    decision: Literal["approved", "rejected"] | None
    chosen_rank: int | None
    reviewer: str | None
    reason: str | None
    decided_at: datetime | None
    decided_manufacturer: str | None
    decided_system: str | None


def list_cases(conn: Connection, statuses: list[str], *, limit: int, offset: int) -> list[CaseListing]:
    """Cases in these statuses, most recent activity first (decision time, else arrival), with each one's
    top candidate (rank 1 of its first embedded image) and its decision if any."""
    return rows.many(
        conn, CaseListing,
        """
        SELECT cases.id, cases.submission_id, cases.submitter_name, cases.client_id, cases.status,
               cases.error, cases.created_at,
               (SELECT count(*) FROM case_images WHERE case_images.case_id = cases.id) AS images,
               top.manufacturer AS top_manufacturer, top.system AS top_system,
               top.similarity AS top_similarity,
               decided.decision, decided.chosen_rank, decided.reviewer, decided.reason, decided.decided_at,
               decided_implant.manufacturer AS decided_manufacturer, decided_implant.system AS decided_system
          FROM cases
          LEFT JOIN review_decisions AS decided ON decided.case_id = cases.id
          LEFT JOIN implants AS decided_implant ON decided_implant.id = decided.implant_id
          LEFT JOIN LATERAL (
                SELECT implants.manufacturer, implants.system, match_results.similarity
                  FROM case_images
                  JOIN match_results ON match_results.case_image_id = case_images.id
                                    AND match_results.model_id = case_images.model_id
                  JOIN implants ON implants.id = match_results.implant_id
                 WHERE case_images.case_id = cases.id AND match_results.rank = 1
                   AND match_results.finding_position = 0
                 ORDER BY case_images.position
                 LIMIT 1
          ) AS top ON true
         WHERE cases.status = ANY(%s)
         ORDER BY coalesce(decided.decided_at, cases.created_at) DESC, cases.id DESC
         LIMIT %s OFFSET %s
        """,
        (statuses, limit, offset),
    )


# Erasure -------------------------------------------------------------------------------------------


def erase_case(conn: Connection, case_id: int, actor: str) -> list[str]:
    """Remove what is personal of a case: its X-rays' rows (and the references learned from them), the
    submitter's fields and payload, free texts of its decision and audit details; stop its live jobs. The case
    keeps its id, status, decision (implant, reviewer, time) and the trail of who did what. Returns the storage
    keys those X-rays and their implants' crops used."""
    keys = [row["storage_key"] for row in conn.execute(
        """SELECT storage_key FROM case_images WHERE case_id = %(case)s AND storage_key IS NOT NULL
           UNION SELECT storage_key FROM reference_images WHERE source_case_id = %(case)s""", {"case": case_id})]
    keys += findings.crop_keys_of_case(conn, case_id)
    conn.execute("DELETE FROM reference_images WHERE source_case_id = %s", (case_id,))
    conn.execute("DELETE FROM case_images WHERE case_id = %s", (case_id,))
    conn.execute(
        """UPDATE cases SET submitter_name = NULL, submitter_email = NULL, client_id = NULL,
                  raw_payload = '{}'::jsonb, error = NULL, erased_at = now(), erased_by = %s
            WHERE id = %s""",
        (actor, case_id),
    )
    conn.execute(
        """UPDATE review_decisions SET note = NULL,
                  reason = CASE WHEN reason IS NULL THEN NULL ELSE '(erased)' END
            WHERE case_id = %s""",
        (case_id,),
    )
    conn.execute("UPDATE audit_log SET details = '{}'::jsonb WHERE case_id = %s", (case_id,))
    # Every job of the case: live ones stop; what any job kept (payload, result, error text) goes.
    conn.execute(
        """UPDATE jobs SET status = CASE WHEN status IN ('pending', 'running') THEN 'failed' ELSE status END,
                  last_error = CASE WHEN status IN ('pending', 'running') THEN 'the case was erased'
                                    WHEN last_error IS NOT NULL THEN '(erased)' END,
                  payload = '{}'::jsonb, result = NULL, lease_owner = NULL, leased_until = NULL,
                  finished_at = coalesce(finished_at, now()), updated_at = now()
            WHERE case_id = %s""",
        (case_id,),
    )
    return keys


def past_retention(conn: Connection, *, notified: int, undelivered: int, undecided: int, failed: int,
                   stalled: int, limit: int = 500) -> list[int]:
    """Cases not erased yet whose status has been theirs longer than its retention period in days (0: kept):
    delivered (`notified`, since delivery), decided but undelivered, ready but undecided, failed, and stalled in
    intake (`received`, `embedding`, with no job holding a live lease)."""
    return [row["id"] for row in conn.execute(
        """SELECT id FROM cases c
            WHERE erased_at IS NULL AND (
                  (status = 'notified' AND %(notified)s > 0
                   AND notified_at < now() - make_interval(days => %(notified)s))
               OR (status IN ('approved', 'rejected') AND %(undelivered)s > 0
                   AND updated_at < now() - make_interval(days => %(undelivered)s))
               OR (status = 'ready' AND %(undecided)s > 0
                   AND updated_at < now() - make_interval(days => %(undecided)s))
               OR (status = 'failed' AND %(failed)s > 0
                   AND updated_at < now() - make_interval(days => %(failed)s))
               OR (status IN ('received', 'embedding') AND %(stalled)s > 0
                   AND updated_at < now() - make_interval(days => %(stalled)s)
                   AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.case_id = c.id AND jobs.status = 'running'
                                                      AND jobs.leased_until > now())))
            ORDER BY id LIMIT %(limit)s""",
        {"notified": notified, "undelivered": undelivered, "undecided": undecided, "failed": failed,
         "stalled": stalled, "limit": limit})]


def failed_deliveries(conn: Connection) -> int:
    """Decided cases whose newest delivery failed for good (the admin page can redeliver them)."""
    row = conn.execute(
        """SELECT count(*) AS n FROM cases
            WHERE status IN ('approved', 'rejected')
              AND (SELECT status FROM jobs WHERE kind = 'notify' AND case_id = cases.id ORDER BY id DESC LIMIT 1)
                  = 'failed'"""
    ).fetchone()
    return int(row["n"]) if row else 0
