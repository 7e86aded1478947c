"""SQL for the durable jobs table: enqueue, claim with FOR UPDATE SKIP LOCKED, finish, retry or fail."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from raiox.database import Connection
from raiox.models import Job, JobKind, JobStatus, Record
from raiox.repository import rows

_JOB_COLUMNS = """id, kind, case_id, payload, status, attempts, max_attempts, run_after, lease_owner,
                  leased_until, last_error"""


def enqueue(
    conn: Connection,
    kind: JobKind,
    *,
    case_id: int | None = None,
    payload: dict[str, Any] | None = None,
    max_attempts: int = 5,
) -> Job:
    """Add a job, unless the case already has a live (pending or running) job of this kind: then return it."""
    job = rows.one(
        conn, Job,
        f"""
        INSERT INTO jobs (kind, case_id, payload, max_attempts) VALUES (%s, %s, %s, %s)
        ON CONFLICT (kind, case_id) WHERE status IN ('pending', 'running') DO NOTHING
        RETURNING {_JOB_COLUMNS}
        """,
        (kind, case_id, Jsonb(payload or {}), max_attempts),
    )
    if job is None:
        job = rows.one(
            conn, Job,
            f"""SELECT {_JOB_COLUMNS} FROM jobs
                 WHERE kind = %s AND case_id = %s AND status IN ('pending', 'running')""",
            (kind, case_id),
        )
    assert job is not None
    return job


_SUSPECT = "status = 'running' AND leased_until <= now()"  # its worker stopped (died, was killed, hung)


def _claim_where(conn: Connection, kind: JobKind, condition: str, *, worker: str, limit: int,
                 lease: timedelta) -> list[Job]:
    claimed = rows.many(
        conn, Job,
        f"""
        WITH due AS (
            SELECT id FROM jobs
             WHERE kind = %(kind)s AND {condition}
             ORDER BY run_after, id
             LIMIT %(limit)s
             FOR UPDATE SKIP LOCKED
        )
        UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = %(worker)s,
                        leased_until = now() + %(lease)s, updated_at = now()
          FROM due WHERE jobs.id = due.id
        RETURNING jobs.*
        """,
        {"kind": kind, "limit": limit, "worker": worker, "lease": lease},
    )
    return sorted(claimed, key=lambda job: job.id)


def claim(conn: Connection, kind: JobKind, *, worker: str, limit: int, lease: timedelta) -> list[Job]:
    """Lease due jobs to `worker`; concurrent claimers never get the same job (SKIP LOCKED).

    A job whose lease expired (its worker stopped in the middle: perhaps this very job killed it) is claimed
    alone, never beside other work, so a job that kills its worker takes nothing down with it; it goes before
    fresh work, one per claim, while it has attempts left (`fail_expired_leases` ends the others). Otherwise up
    to `limit` pending jobs whose `run_after` has passed."""
    suspect = _claim_where(conn, kind, f"{_SUSPECT} AND attempts < max_attempts", worker=worker, limit=1,
                           lease=lease)
    if suspect:
        return suspect
    return _claim_where(conn, kind, "status = 'pending' AND run_after <= now()", worker=worker, limit=limit,
                        lease=lease)


def fail_expired_leases(conn: Connection, kind: JobKind) -> list[Job]:
    """Fail for good the jobs whose lease expired with no attempt left: each of their attempts ended with its
    worker gone (a film that kills the worker comes back no more). Returns them, with the reason."""
    failed = rows.many(
        conn, Job,
        f"""
        WITH gone AS (
            SELECT id FROM jobs WHERE kind = %(kind)s AND {_SUSPECT} AND attempts >= max_attempts
             FOR UPDATE SKIP LOCKED
        )
        UPDATE jobs SET status = 'failed', finished_at = now(), updated_at = now(),
                        last_error = 'its worker stopped (crashed, was killed or hung) during '
                                     || CASE WHEN attempts > 1 THEN 'each of its ' || attempts || ' attempts'
                                             ELSE 'its only attempt' END
                                     || '; the last lease expired at '
                                     || to_char(leased_until AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"')
                                     || coalesce('; before that: ' || last_error, ''),
                        lease_owner = NULL, leased_until = NULL
          FROM gone WHERE jobs.id = gone.id
        RETURNING jobs.*
        """,
        {"kind": kind},
    )
    return sorted(failed, key=lambda job: job.id)


def complete(conn: Connection, job_id: int, *, worker: str, result: dict[str, Any] | None = None) -> bool:
    """Mark a job done. False when the worker no longer holds it (its lease expired and it was taken over)."""
    row = conn.execute(
        """
        UPDATE jobs SET status = 'done', result = %s, lease_owner = NULL, leased_until = NULL,
                        last_error = NULL, finished_at = now(), updated_at = now()
         WHERE id = %s AND status = 'running' AND lease_owner = %s
        RETURNING id
        """,
        (Jsonb(result) if result is not None else None, job_id, worker),
    ).fetchone()
    return row is not None


def fail(
    conn: Connection, job_id: int, *, worker: str, error: str, retry_in: timedelta | None
) -> str | None:
    """Record a failed attempt: back to pending after `retry_in`, or failed for good when `retry_in` is None
    or the attempts are used up. Returns the new status, or None when the worker no longer holds the job."""
    row = conn.execute(
        """
        UPDATE jobs
           SET status = CASE WHEN %(retry_in)s::interval IS NULL OR attempts >= max_attempts
                             THEN 'failed' ELSE 'pending' END,
               run_after = now() + coalesce(%(retry_in)s::interval, '0'::interval),
               finished_at = CASE WHEN %(retry_in)s::interval IS NULL OR attempts >= max_attempts
                                  THEN now() END,
               last_error = %(error)s, lease_owner = NULL, leased_until = NULL, updated_at = now()
         WHERE id = %(id)s AND status = 'running' AND lease_owner = %(worker)s
        RETURNING status
        """,
        {"retry_in": retry_in, "error": error[:2000], "id": job_id, "worker": worker},
    ).fetchone()
    return str(row["status"]) if row else None


def due_count(conn: Connection, kind: JobKind) -> int:
    """How many jobs of `kind` a claim would take now (pending and due, or running with an expired lease)."""
    row = conn.execute(
        """SELECT count(*) AS n FROM jobs
            WHERE kind = %s AND ((status = 'pending' AND run_after <= now())
                                 OR (status = 'running' AND leased_until <= now()))""",
        (kind,),
    ).fetchone()
    assert row is not None
    return int(row["n"])


def get_job(conn: Connection, job_id: int) -> Job | None:
    return rows.one(conn, Job, f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = %s", (job_id,))


class Delivery(Record):
    """A case's newest notify job: where the answer to its submitter is."""

    case_id: int
    status: JobStatus
    attempts: int
    max_attempts: int
    last_error: str | None
    updated_at: datetime


class KindSummary(Record):
    """The jobs of one kind: due now, waiting to retry, running under a live lease, failed for good, and how long
    the oldest due one has waited."""

    kind: JobKind
    due: int
    waiting_to_retry: int
    running: int
    failed: int
    oldest_due_seconds: float


def latest_status(conn: Connection, kind: JobKind, case_id: int) -> JobStatus | None:
    """The status of the case's newest job of `kind`; None when it has none."""
    row = conn.execute("SELECT status FROM jobs WHERE kind = %s AND case_id = %s ORDER BY id DESC LIMIT 1",
                       (kind, case_id)).fetchone()
    return JobStatus(row["status"]) if row else None


def latest_notify_jobs(conn: Connection, case_ids: list[int]) -> dict[int, Delivery]:
    """The newest notify job of each case (its delivery state)."""
    deliveries = rows.many(
        conn, Delivery,
        """SELECT DISTINCT ON (case_id) case_id, status, attempts, max_attempts, last_error, updated_at
             FROM jobs WHERE kind = 'notify' AND case_id = ANY(%s)
            ORDER BY case_id, id DESC""",
        (case_ids,),
    )
    return {delivery.case_id: delivery for delivery in deliveries}


def summary(conn: Connection) -> list[KindSummary]:
    """Per kind: due now, running under a live lease, failed for good, and how long the oldest due one waited."""
    return rows.many(
        conn, KindSummary,
        """SELECT kind,
                  count(*) FILTER (WHERE (status = 'pending' AND run_after <= now())
                                      OR (status = 'running' AND leased_until <= now())) AS due,
                  count(*) FILTER (WHERE status = 'pending' AND run_after > now()) AS waiting_to_retry,
                  count(*) FILTER (WHERE status = 'running' AND leased_until > now()) AS running,
                  count(*) FILTER (WHERE status = 'failed') AS failed,
                  coalesce(extract(epoch FROM now() - min(run_after) FILTER (
                      WHERE status = 'pending' AND run_after <= now())), 0)::float AS oldest_due_seconds
             FROM jobs GROUP BY kind ORDER BY kind""",
    )
