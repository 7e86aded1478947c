"""SQL for review: reviewers, the sign-in rate limit, case lists and details, decisions, delivery status."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from raiox.database import Connection

# Reviewers -----------------------------------------------------------------------------------------

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


# Sign-in rate limit --------------------------------------------------------------------------------


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


# Case lists and details ----------------------------------------------------------------------------


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
                 ORDER BY case_images.position
                 LIMIT 1
          ) AS top ON true
         WHERE cases.status = ANY(%s)
         ORDER BY coalesce(decided.decided_at, cases.created_at) DESC, cases.id DESC
         LIMIT %s OFFSET %s
        """,
        (statuses, limit, offset),
    ).fetchall()


def case_row(conn: Connection, case_id: int, *, lock: bool = False) -> dict[str, Any] | None:
    """The case; `lock` holds its row until the transaction ends (deciders on one case queue up here)."""
    return conn.execute(
        f"""SELECT id, submission_id, submitter_name, submitter_email, client_id, status, error, created_at,
                   updated_at, notified_at
              FROM cases WHERE id = %s {"FOR UPDATE" if lock else ""}""",
        (case_id,),
    ).fetchone()


def case_images(conn: Connection, case_id: int) -> list[dict[str, Any]]:
    return conn.execute(
        """SELECT id, position, storage_key, status, error, width, height, content_type, model_id
             FROM case_images WHERE case_id = %s ORDER BY position""",
        (case_id,),
    ).fetchall()


def candidates(conn: Connection, case_id: int) -> list[dict[str, Any]]:
    """Each image's ranked candidates under the model that embedded it, with the best reference's key."""
    return conn.execute(
        """
        SELECT case_images.id AS case_image_id, match_results.rank, match_results.similarity,
               implants.id AS implant_id, implants.manufacturer, implants.system,
               match_results.reference_image_id, reference_images.storage_key AS reference_storage_key
          FROM case_images
          JOIN match_results ON match_results.case_image_id = case_images.id
                            AND match_results.model_id = case_images.model_id
          JOIN implants ON implants.id = match_results.implant_id
          LEFT JOIN reference_images ON reference_images.id = match_results.reference_image_id
         WHERE case_images.case_id = %s
         ORDER BY case_images.position, match_results.rank
        """,
        (case_id,),
    ).fetchall()


def candidate_at_rank(conn: Connection, case_id: int, rank: int, image_id: int | None) -> dict[str, Any] | None:
    """The implant at `rank` for the given image of the case, or for its first embedded image."""
    return conn.execute(
        """
        SELECT match_results.implant_id, case_images.id AS case_image_id
          FROM case_images
          JOIN match_results ON match_results.case_image_id = case_images.id
                            AND match_results.model_id = case_images.model_id
         WHERE case_images.case_id = %(case)s AND match_results.rank = %(rank)s
           AND (%(image)s::bigint IS NULL OR case_images.id = %(image)s)
         ORDER BY case_images.position
         LIMIT 1
        """,
        {"case": case_id, "rank": rank, "image": image_id},
    ).fetchone()


def decision(conn: Connection, case_id: int) -> dict[str, Any] | None:
    return conn.execute(
        """SELECT review_decisions.id, review_decisions.decision, review_decisions.implant_id,
                  implants.manufacturer, implants.system, review_decisions.chosen_rank, review_decisions.reviewer,
                  review_decisions.reason, review_decisions.note, review_decisions.decided_at
             FROM review_decisions LEFT JOIN implants ON implants.id = review_decisions.implant_id
            WHERE review_decisions.case_id = %s""",
        (case_id,),
    ).fetchone()


def latest_notify_jobs(conn: Connection, case_ids: list[int]) -> dict[int, dict[str, Any]]:
    """The newest notify job of each case (its delivery state)."""
    rows = conn.execute(
        """SELECT DISTINCT ON (case_id) case_id, id, status, attempts, max_attempts, last_error, run_after,
                  updated_at, finished_at
             FROM jobs WHERE kind = 'notify' AND case_id = ANY(%s)
            ORDER BY case_id, id DESC""",
        (case_ids,),
    ).fetchall()
    return {int(row["case_id"]): row for row in rows}


def search_implants(conn: Connection, words: list[str], *, limit: int) -> list[dict[str, Any]]:
    """Implants whose "manufacturer system" contains every word (ignoring case), with reference counts."""
    patterns = ["%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%" for word in words]
    return conn.execute(
        """
        SELECT implants.id, implants.manufacturer, implants.system, implants.implant_type, implants.connection,
               (SELECT count(*) FROM reference_images WHERE reference_images.implant_id = implants.id)
                   AS references
          FROM implants
         WHERE (implants.manufacturer || ' ' || implants.system) ILIKE ALL(%s)
         ORDER BY lower(implants.manufacturer), lower(implants.system)
         LIMIT %s
        """,
        (patterns, limit),
    ).fetchall()


def implant_exists(conn: Connection, implant_id: int) -> bool:
    return conn.execute("SELECT 1 FROM implants WHERE id = %s", (implant_id,)).fetchone() is not None


# Decisions -----------------------------------------------------------------------------------------


def insert_decision(
    conn: Connection, *, case_id: int, decision: str, implant_id: int | None, chosen_rank: int | None,
    reviewer: str, reason: str | None, note: str | None,
) -> dict[str, Any]:
    row = conn.execute(
        """INSERT INTO review_decisions (case_id, decision, implant_id, chosen_rank, reviewer, reason, note)
           VALUES (%s, %s, %s, %s, %s, %s, %s)
           RETURNING id, decided_at""",
        (case_id, decision, implant_id, chosen_rank, reviewer, reason, note),
    ).fetchone()
    assert row is not None
    return row


def embedded_images(conn: Connection, case_id: int) -> list[dict[str, Any]]:
    """The case's embedded X-rays with what a reference needs: key, sha256, model id and embedding."""
    return conn.execute(
        """SELECT id, storage_key, sha256, model_id, embedding FROM case_images
            WHERE case_id = %s AND status = 'embedded' AND embedding IS NOT NULL AND sha256 IS NOT NULL
            ORDER BY position""",
        (case_id,),
    ).fetchall()
