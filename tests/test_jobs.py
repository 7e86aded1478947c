"""The durable jobs table: one live job per case, exclusive claims, leases that expire, retries that stop."""

from __future__ import annotations

import threading
from datetime import timedelta

from raiox.database import Database
from raiox.models import JobKind, JobStatus
from raiox.repository import cases, images, jobs

LEASE = timedelta(minutes=5)


def _cases_with_jobs(db: Database, count: int, max_attempts: int = 5) -> list[int]:
    job_ids = []
    with db.transaction() as conn:
        for number in range(count):
            case, _ = cases.create_case(conn, submission_id=f"job-case-{number}")
            job_ids.append(jobs.enqueue(conn, JobKind.EMBED, case_id=case.id, max_attempts=max_attempts).id)
    return job_ids


def test_one_live_job_per_case_and_kind(db: Database) -> None:
    [job_id] = _cases_with_jobs(db, 1)
    with db.transaction() as conn:
        case_id = jobs.get_job(conn, job_id).case_id
        assert jobs.enqueue(conn, JobKind.EMBED, case_id=case_id).id == job_id
        assert jobs.enqueue(conn, JobKind.NOTIFY, case_id=case_id).id != job_id
        [claimed] = jobs.claim(conn, JobKind.EMBED, worker="w1", limit=5, lease=LEASE)
        assert jobs.complete(conn, claimed.id, worker="w1")
        # Once done, the case may get a new job of the same kind (e.g. re-embedding).
        assert jobs.enqueue(conn, JobKind.EMBED, case_id=case_id).id != job_id


def test_concurrent_claims_never_share_a_job(db: Database) -> None:
    _cases_with_jobs(db, 40)
    barrier = threading.Barrier(4)
    claimed: dict[str, list[int]] = {}

    def worker(name: str) -> None:
        barrier.wait()
        mine: list[int] = []
        while True:
            with db.transaction() as conn:
                batch = jobs.claim(conn, JobKind.EMBED, worker=name, limit=3, lease=LEASE)
                conn.execute("SELECT pg_sleep(0.01)")  # hold the row locks a moment
            if not batch:
                break
            mine.extend(job.id for job in batch)
        claimed[name] = mine

    threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [job_id for ids in claimed.values() for job_id in ids]
    assert len(every) == 40 and len(set(every)) == 40
    assert sum(1 for ids in claimed.values() if ids) >= 2  # the work really was shared


def test_expired_lease_is_taken_over_and_the_old_worker_loses(db: Database) -> None:
    [job_id] = _cases_with_jobs(db, 1)
    with db.transaction() as conn:
        [job] = jobs.claim(conn, JobKind.EMBED, worker="dies", limit=1, lease=LEASE)
        assert jobs.claim(conn, JobKind.EMBED, worker="other", limit=1, lease=LEASE) == []  # leased
        conn.execute("UPDATE jobs SET leased_until = now() - interval '1 second' WHERE id = %s", (job_id,))
        [again] = jobs.claim(conn, JobKind.EMBED, worker="other", limit=1, lease=LEASE)
        assert again.id == job.id and again.attempts == 2 and again.lease_owner == "other"
        assert not jobs.complete(conn, job_id, worker="dies")  # a late finish from the dead worker is ignored
        assert jobs.fail(conn, job_id, worker="dies", error="x", retry_in=None) is None
        assert jobs.complete(conn, job_id, worker="other", result={"results": 3})
        assert jobs.get_job(conn, job_id).status == JobStatus.DONE


def test_failures_retry_after_backoff_then_stop(db: Database) -> None:
    [job_id] = _cases_with_jobs(db, 1, max_attempts=2)
    with db.transaction() as conn:
        jobs.claim(conn, JobKind.EMBED, worker="w", limit=1, lease=LEASE)
        assert jobs.fail(conn, job_id, worker="w", error="timeout", retry_in=timedelta(hours=1)) == "pending"
        assert jobs.claim(conn, JobKind.EMBED, worker="w", limit=1, lease=LEASE) == []  # not due yet
        conn.execute("UPDATE jobs SET run_after = now() WHERE id = %s", (job_id,))
        [job] = jobs.claim(conn, JobKind.EMBED, worker="w", limit=1, lease=LEASE)
        assert job.attempts == 2
        assert jobs.fail(conn, job_id, worker="w", error="timeout again", retry_in=timedelta(0)) == "failed"
        final = jobs.get_job(conn, job_id)
        assert final.status == JobStatus.FAILED and final.last_error == "timeout again"
        assert jobs.claim(conn, JobKind.EMBED, worker="w", limit=1, lease=LEASE) == []


def test_permanent_failure_does_not_retry(db: Database) -> None:
    [job_id] = _cases_with_jobs(db, 1)
    with db.transaction() as conn:
        jobs.claim(conn, JobKind.EMBED, worker="w", limit=1, lease=LEASE)
        assert jobs.fail(conn, job_id, worker="w", error="not an image", retry_in=None) == "failed"


def _expire(conn, *job_ids: int) -> None:  # type: ignore[no-untyped-def]
    conn.execute("UPDATE jobs SET leased_until = now() - interval '1 second' WHERE id = ANY(%s)", (list(job_ids),))


def test_a_job_whose_worker_stopped_on_every_attempt_fails_with_the_reason(db: Database) -> None:
    [job_id] = _cases_with_jobs(db, 1, max_attempts=2)
    with db.transaction() as conn:
        for attempt in (1, 2):  # each time, the worker dies holding it
            [job] = jobs.claim(conn, JobKind.EMBED, worker=f"dies-{attempt}", limit=5, lease=LEASE)
            assert (job.id, job.attempts) == (job_id, attempt)
            _expire(conn, job_id)
        assert jobs.claim(conn, JobKind.EMBED, worker="next", limit=5, lease=LEASE) == []  # never a third time
        [failed] = jobs.fail_expired_leases(conn, JobKind.EMBED)
        assert failed.id == job_id and failed.status == JobStatus.FAILED
        assert "its worker stopped (crashed, was killed or hung) during each of its 2 attempts" in failed.last_error
        assert jobs.get_job(conn, job_id).status == JobStatus.FAILED
        assert jobs.fail_expired_leases(conn, JobKind.EMBED) == [] and jobs.due_count(conn, JobKind.EMBED) == 0


def test_a_taken_over_job_runs_alone_never_beside_fresh_work(db: Database) -> None:
    suspect_id, *fresh_ids = _cases_with_jobs(db, 4)
    with db.transaction() as conn:
        [dead] = jobs.claim(conn, JobKind.EMBED, worker="dies", limit=1, lease=LEASE)
        assert dead.id == suspect_id
        _expire(conn, suspect_id)
        [alone] = jobs.claim(conn, JobKind.EMBED, worker="w", limit=5, lease=LEASE)  # fresh work is due too
        assert (alone.id, alone.attempts) == (suspect_id, 2)
        assert [job.id for job in jobs.claim(conn, JobKind.EMBED, worker="w", limit=5, lease=LEASE)] == fresh_ids


def test_the_runner_fails_a_poison_job_and_its_case_needs_attention(services) -> None:  # type: ignore[no-untyped-def]
    from raiox.intake.worker import run_fetch_jobs
    from raiox.models import CaseStatus

    with services.db.transaction() as conn:
        case, _ = cases.create_case(conn, submission_id="poison-case")
        images.add_case_image(conn, case_id=case.id, position=0, source_url="https://files.jotform.com/uploads/p.jpg",
                              upload=None, error=None)
        job = jobs.enqueue(conn, JobKind.FETCH, case_id=case.id, max_attempts=1)
        jobs.claim(conn, JobKind.FETCH, worker="killed", limit=1, lease=LEASE)
        _expire(conn, job.id)
    report = run_fetch_jobs(services)
    assert report.failed == 1 and report.claimed == 0
    with services.db.transaction() as conn:
        assert cases.get_case(conn, case.id).status == CaseStatus.FAILED
        assert "its worker stopped" in cases.get_case(conn, case.id).error
        audit = conn.execute("SELECT action FROM audit_log WHERE case_id = %s", (case.id,)).fetchall()
    assert [row["action"] for row in audit] == ["fetch_failed"]
