"""SQL for cases: creation (idempotent on submission id), images, match results, audit, status changes, and the
lists and details the review page reads."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from raiox.database import Connection
from raiox.models import Case, CaseStatus
from raiox.repository import findings
from raiox.repository.catalog import SIZE_COLUMNS

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
    row = conn.execute(
        f"""
        INSERT INTO cases (submission_id, form_id, source, submitter_name, submitter_email, client_id,
                           raw_payload)
        VALUES (%s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (source, submission_id) DO NOTHING
        RETURNING {_CASE_COLUMNS}
        """,
        (submission_id, form_id, source, submitter_name, submitter_email, client_id,
         Jsonb(raw_payload or {})),
    ).fetchone()
    if row is not None:
        return Case.model_validate(row), True
    existing = case_by_submission_id(conn, submission_id, source)
    assert existing is not None
    return existing, False


def case_by_submission_id(conn: Connection, submission_id: str, source: str = "jotform") -> Case | None:
    row = conn.execute(
        f"SELECT {_CASE_COLUMNS} FROM cases WHERE source = %s AND submission_id = %s", (source, submission_id)
    ).fetchone()
    return Case.model_validate(row) if row else None


def get_case(conn: Connection, case_id: int, *, lock: bool = False) -> Case | None:
    """The case; `lock` holds its row until the transaction ends (deciders on one case queue up here)."""
    row = conn.execute(f"SELECT {_CASE_COLUMNS} FROM cases WHERE id = %s {'FOR UPDATE' if lock else ''}",
                       (case_id,)).fetchone()
    return Case.model_validate(row) if row else None


def set_case_status(conn: Connection, case_id: int, status: CaseStatus, *, error: str | None = None) -> Case:
    """Move a case along its lifecycle; the database refuses transitions the lifecycle does not allow."""
    row = conn.execute(
        f"UPDATE cases SET status = %s, error = %s WHERE id = %s RETURNING {_CASE_COLUMNS}",
        (status, error, case_id),
    ).fetchone()
    if row is None:
        raise LookupError(f"no case {case_id}")
    return Case.model_validate(row)


def add_case_image(
    conn: Connection,
    *,
    case_id: int,
    position: int,
    storage_key: str | None = None,
    sha256: str | None = None,
    size_bytes: int | None = None,
    content_type: str | None = None,
    width: int | None = None,
    height: int | None = None,
    source_url: str | None = None,
    upload: bytes | None = None,
    error: str | None = None,
) -> int:
    """Record one X-ray of a case: stored; pending (a URL to fetch, or uploaded bytes waiting to be stored);
    or failed with its error."""
    status = "failed" if error else "stored" if storage_key else "pending"
    row = conn.execute(
        """
        INSERT INTO case_images (case_id, position, source_url, storage_key, sha256, size_bytes,
                                 content_type, width, height, upload, status, error)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        RETURNING id
        """,
        (case_id, position, source_url, storage_key, sha256, size_bytes, content_type, width, height,
         None if error else upload, status, error),
    ).fetchone()
    assert row is not None
    return int(row["id"])


def record_audit(
    conn: Connection, *, actor: str, action: str, case_id: int | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    conn.execute(
        "INSERT INTO audit_log (actor, action, case_id, details) VALUES (%s, %s, %s, %s)",
        (actor, action, case_id, Jsonb(details or {})),
    )


def images_of_cases(conn: Connection, case_ids: list[int]) -> list[dict[str, Any]]:
    return conn.execute(
        """SELECT id, case_id, position, storage_key, status, model_id, pixel_spacing_row_mm, pixel_spacing_col_mm
             FROM case_images WHERE case_id = ANY(%s) ORDER BY case_id, position""",
        (case_ids,),
    ).fetchall()


def save_image_embedding(conn: Connection, image_id: int, model_id: str, embedding: Any) -> None:
    conn.execute(
        """UPDATE case_images SET status = 'embedded', error = NULL, model_id = %s, embedding = %s,
                  embedded_at = now() WHERE id = %s""",
        (model_id, embedding, image_id),
    )


def mark_image_failed(conn: Connection, image_id: int, error: str) -> None:
    conn.execute("UPDATE case_images SET status = 'failed', error = %s, upload = NULL WHERE id = %s",
                 (error[:2000], image_id))


def pending_images(conn: Connection, case_ids: list[int]) -> list[dict[str, Any]]:
    """The X-rays of these cases still waiting to be fetched or stored, with their URL or uploaded bytes."""
    return conn.execute(
        """SELECT id, case_id, position, source_url, upload FROM case_images
            WHERE case_id = ANY(%s) AND status = 'pending' ORDER BY case_id, position""",
        (case_ids,),
    ).fetchall()


def store_image(conn: Connection, image_id: int, *, storage_key: str, sha256: str, size_bytes: int,
                content_type: str, width: int, height: int,
                pixel_spacing_mm: tuple[float, float] | None = None) -> None:
    """A pending X-ray is in object storage now: its key and what it is (with its pixel spacing, row then
    column, when the file says it); the uploaded bytes are dropped."""
    row_mm, col_mm = pixel_spacing_mm or (None, None)
    conn.execute(
        """UPDATE case_images SET status = 'stored', storage_key = %s, sha256 = %s, size_bytes = %s,
                  content_type = %s, width = %s, height = %s, pixel_spacing_row_mm = %s,
                  pixel_spacing_col_mm = %s, upload = NULL, error = NULL
            WHERE id = %s AND status = 'pending'""",
        (storage_key, sha256, size_bytes, content_type, width, height, row_mm, col_mm, image_id),
    )


def note_image_error(conn: Connection, image_id: int, error: str) -> None:
    """Why the last try to fetch a still-pending X-ray failed (it will be tried again)."""
    conn.execute("UPDATE case_images SET error = %s WHERE id = %s AND status = 'pending'", (error[:2000], image_id))


def usable_images(conn: Connection, case_id: int) -> int:
    row = conn.execute("SELECT count(*) AS n FROM case_images WHERE case_id = %s AND status IN ('stored', 'embedded')",
                       (case_id,)).fetchone()
    return int(row["n"]) if row else 0


def image_errors(conn: Connection, case_id: int) -> list[str]:
    return [row["error"] for row in conn.execute(
        "SELECT error FROM case_images WHERE case_id = %s AND error IS NOT NULL ORDER BY position", (case_id,))]


def reopen_failed_images(conn: Connection, case_id: int) -> int:
    """A retry: failed X-rays that came from a URL are fetched again; returns how many."""
    return conn.execute(
        """UPDATE case_images SET status = 'pending', error = NULL
            WHERE case_id = %s AND status = 'failed' AND source_url IS NOT NULL""",
        (case_id,),
    ).rowcount


def match_results_of_case(conn: Connection, case_id: int) -> list[dict[str, Any]]:
    return conn.execute(
        """SELECT case_images.id AS case_image_id, case_images.position, match_results.finding_position,
                  match_results.rank,
                  match_results.similarity, match_results.model_id, implants.id AS implant_id,
                  implants.manufacturer, implants.system, match_results.reference_image_id
             FROM match_results
             JOIN case_images ON case_images.id = match_results.case_image_id
             JOIN implants ON implants.id = match_results.implant_id
            WHERE case_images.case_id = %s
            ORDER BY case_images.position, match_results.model_id, match_results.rank""",
        (case_id,),
    ).fetchall()


def mark_notified(conn: Connection, case_id: int) -> None:
    """Case → `notified` with the time (again, for a redelivery); the lifecycle trigger refuses undecided cases."""
    conn.execute("UPDATE cases SET status = 'notified', notified_at = now() WHERE id = %s", (case_id,))


# Review: lists and details ---------------------------------------------------------------------------


def status_counts(conn: Connection) -> dict[str, int]:
    rows = conn.execute("SELECT status, count(*) AS n FROM cases GROUP BY status").fetchall()
    return {row["status"]: int(row["n"]) for row in rows}


def list_cases(conn: Connection, statuses: list[str], *, limit: int, offset: int) -> list[dict[str, Any]]:
    """Cases in these statuses, most recent activity first (decision time, else arrival), with each one's
    top candidate (rank 1 of its first embedded image) and its decision if any."""
    return conn.execute(
        """
        SELECT cases.id, cases.submission_id, cases.submitter_name, cases.client_id, cases.status,
               cases.error, cases.created_at, cases.updated_at,
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
    ).fetchall()


def case_images(conn: Connection, case_id: int) -> list[dict[str, Any]]:
    return conn.execute(
        """SELECT id, position, storage_key, status, error, width, height, content_type, model_id,
                  pixel_spacing_row_mm, pixel_spacing_col_mm
             FROM case_images WHERE case_id = %s ORDER BY position""",
        (case_id,),
    ).fetchall()


def candidates(conn: Connection, case_id: int) -> list[dict[str, Any]]:
    """Each image's ranked candidates per implant found on it, under the model that embedded it, with the best
    reference's film and crop keys, its measurements, where it came from (a film learned from another case
    names that case) and the implant's size ranges."""
    return conn.execute(
        f"""
        SELECT case_images.id AS case_image_id, match_results.finding_position, match_results.rank,
               match_results.similarity,
               implants.id AS implant_id, implants.manufacturer, implants.system, {SIZE_COLUMNS},
               match_results.reference_image_id, reference_images.storage_key AS reference_storage_key,
               reference_images.crop_key AS reference_crop_key, reference_images.summary AS reference_summary,
               reference_images.source AS reference_source, reference_images.source_case_id AS reference_case_id
          FROM case_images
          JOIN match_results ON match_results.case_image_id = case_images.id
                            AND match_results.model_id = case_images.model_id
          JOIN implants ON implants.id = match_results.implant_id
          LEFT JOIN reference_images ON reference_images.id = match_results.reference_image_id
         WHERE case_images.case_id = %s
         ORDER BY case_images.position, match_results.finding_position, match_results.rank
        """,
        (case_id,),
    ).fetchall()


def candidate_at_rank(conn: Connection, case_id: int, rank: int, image_id: int | None,
                      implant: int = 0) -> dict[str, Any] | None:
    """The catalog implant at `rank` for the given image of the case (or its first embedded image), ranked for
    the implant found at position `implant` on it (0: the most implant-like)."""
    return conn.execute(
        """
        SELECT match_results.implant_id, case_images.id AS case_image_id
          FROM case_images
          JOIN match_results ON match_results.case_image_id = case_images.id
                            AND match_results.model_id = case_images.model_id
         WHERE case_images.case_id = %(case)s AND match_results.rank = %(rank)s
           AND match_results.finding_position = %(implant)s
           AND (%(image)s::bigint IS NULL OR case_images.id = %(image)s)
         ORDER BY case_images.position
         LIMIT 1
        """,
        {"case": case_id, "rank": rank, "image": image_id, "implant": implant},
    ).fetchone()


def audit_trail(conn: Connection, case_id: int) -> list[dict[str, Any]]:
    """Who did what to the case, and when (its details are left out: the case view shows the trail)."""
    return conn.execute("SELECT at, actor, action FROM audit_log WHERE case_id = %s ORDER BY id", (case_id,)).fetchall()


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
