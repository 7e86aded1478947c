"""The one runner of durable jobs (claim under a lease → work → complete, retry with backoff, or fail), and
the poke that asks the next step to start now instead of at the next sweep.

Steps hand work to each other only through the `jobs` table; a step that runs jobs (intake, embed, delivery)
describes its work as a `JobStep` and the runner does the rest, the same way for each:

1. one transaction claims due jobs (`FOR UPDATE SKIP LOCKED`, a lease, attempts + 1) and lets the step read
   what it needs (`JobStep.claimed`);
2. the step works on the whole batch outside any transaction (`JobStep.work`: download, encode, deliver);
3. per job, one transaction lets the step write its results (`JobStep.finish`) and completes the job, but
   only while this worker still holds the lease, so a worker that was taken over changes nothing;
4. a `JobFailure` (or any other error) rolls that job's writes back and schedules a retry with backoff and
   jitter, or fails the job for good when it is permanent or its attempts are used up.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any, Generic, Protocol, TypeVar

import requests
from pydantic import SecretStr

from raiox import logs
from raiox.database import Connection
from raiox.models import Job, JobKind, JobStatus
from raiox.repository import heartbeats, jobs
from raiox.services import Services

log = logging.getLogger(__name__)

Batch = TypeVar("Batch")
Report = TypeVar("Report", bound="JobReport")


def default_worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: up to base, 2·base, 4·base … (at least half of each), capped at `cap`."""

    base: float
    cap: float

    def delay(self, attempts: int, retry_after: float | None = None) -> timedelta:
        seconds = random.uniform(0.5, 1.0) * min(self.cap, self.base * 2 ** (attempts - 1))
        if retry_after:  # a server's Retry-After is a floor, never beyond the cap
            seconds = max(seconds, min(retry_after, self.cap))
        return timedelta(seconds=seconds)


class LostLease(RuntimeError):
    """The job was taken over by another worker while this one worked on it."""


class JobFailure(Exception):
    """An attempt that did not succeed: `retryable` when trying again later can help."""

    def __init__(self, message: str, *, retryable: bool = True, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass(frozen=True)
class Done:
    """A job finished: `outcome` names the report counter it adds to, `result` is kept with the job."""

    outcome: str
    result: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Failed:
    """A job that failed for good while keeping what `finish` wrote (e.g. which images could not be read)."""

    error: str


@dataclass(frozen=True)
class Retry:
    """Try the job again after the backoff (at least `retry_after` seconds), keeping what `finish` wrote (what
    already succeeded stays done); fails it for good once its attempts are used up."""

    error: str
    retry_after: float | None = None


@dataclass
class JobReport:
    """What one run did; steps extend it with their own outcome counters (`Done.outcome`)."""

    claimed: int = 0
    retried: int = 0
    failed: int = 0
    lost: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, done: Done) -> None:
        setattr(self, done.outcome, getattr(self, done.outcome) + 1)


class JobStep(Protocol[Batch]):
    """What a step tells the runner about its kind of job."""

    kind: JobKind
    backoff: Backoff

    def claimed(self, conn: Connection, claimed: list[Job]) -> Batch:
        """Inside the claim's transaction: read (and move) what the work needs."""

    def work(self, batch: Batch) -> None:
        """Outside any transaction, once per batch: the slow part (encoding, network calls)."""

    def finish(self, conn: Connection, job: Job, batch: Batch) -> Done | Failed | Retry:
        """Inside the job's own transaction: write its results. Raise JobFailure to roll them back."""

    def failed_for_good(self, conn: Connection, job: Job, error: str) -> None:
        """Inside the transaction that fails the job for good: what the case should show (status, audit)."""


class JobRunner(Generic[Batch]):
    def __init__(self, services: Services, step: JobStep[Batch], *, lease_seconds: int, per_claim: int,
                 worker: str | None = None) -> None:
        self.services = services
        self.step = step
        self.lease = timedelta(seconds=lease_seconds)
        self.per_claim = per_claim
        self.worker = worker or default_worker_name()

    def run(self, report: Report, *, limit: int | None = None, max_batches: int | None = None,
            deadline: float | None = None) -> Report:
        """Claim and run batches until no job is due, `limit` jobs were claimed, `max_batches` ran, or the
        `deadline` (a `time.monotonic()` value: a function's time limit) has passed."""
        batches = 0
        while ((limit is None or report.claimed < limit) and (max_batches is None or batches < max_batches)
               and (deadline is None or time.monotonic() < deadline)):
            size = self.per_claim if limit is None else min(self.per_claim, limit - report.claimed)
            if not self.run_batch(report, size):
                break
            batches += 1
        return report

    def run_batch(self, report: JobReport, size: int | None = None) -> int:
        """Claim one batch and see each of its jobs through; returns how many were claimed."""
        self._fail_expired_leases(report)
        with self.services.db.transaction() as conn:
            claimed = jobs.claim(conn, self.step.kind, worker=self.worker, limit=size or self.per_claim,
                                 lease=self.lease)
            batch = self.step.claimed(conn, claimed) if claimed else None
        if not claimed:
            return 0
        started = time.perf_counter()
        report.claimed += len(claimed)
        assert batch is not None
        try:
            self.step.work(batch)
        except Exception as exc:  # e.g. out of GPU memory: every job of the batch retries
            log.exception("%s batch of %d job(s) failed", self.step.kind, len(claimed))
            failure = JobFailure(f"{type(exc).__name__}: {exc}")
            for job in claimed:
                self._logged(job, started, partial(self._retry_or_fail, report, job, failure))
            return len(claimed)
        for job in claimed:
            self._logged(job, started, partial(self._finish, report, job, batch))
        return len(claimed)

    def _fail_expired_leases(self, report: JobReport) -> None:
        """Jobs whose worker stopped during every attempt fail for good, and their cases show why (a poison job
        never comes back); each in its own transaction with what its step writes."""
        with self.services.db.transaction() as conn:
            gone = jobs.fail_expired_leases(conn, self.step.kind)
            for job in gone:
                error = job.last_error or "its worker stopped"
                self.step.failed_for_good(conn, job, error)
                report.failed += 1
                report.errors.append(error)
        for job in gone:
            with logs.bound(step=str(self.step.kind), job_id=job.id, case_id=job.case_id):
                log.error("%s job %d (case %s) failed for good: %s", self.step.kind, job.id, job.case_id,
                          job.last_error, extra={"outcome": "failed"})

    def _logged(self, job: Job, started: float, see_through: Callable[[], str]) -> None:
        """One log line per job, with its ids bound for everything logged on the way: step, job and case id,
        outcome, time since the batch was claimed."""
        with logs.bound(step=str(self.step.kind), job_id=job.id, case_id=job.case_id):
            outcome = see_through()
            log.info("%s job %d: %s", self.step.kind, job.id, outcome,
                     extra={"outcome": outcome, "duration_ms": round((time.perf_counter() - started) * 1000, 1)})

    def _finish(self, report: JobReport, job: Job, batch: Batch) -> str:
        try:
            with self.services.db.transaction() as conn:
                outcome = self.step.finish(conn, job, batch)
                if isinstance(outcome, Failed):
                    self._fail(conn, job, outcome.error, retry_in=None)
                elif isinstance(outcome, Retry):
                    status = self._fail(conn, job, outcome.error,
                                        retry_in=self.step.backoff.delay(job.attempts, outcome.retry_after))
                elif not jobs.complete(conn, job.id, worker=self.worker, result=outcome.result):
                    raise LostLease(f"job {job.id}")
        except LostLease:
            # The new owner does the same work again: at least once, never two different answers.
            log.warning("%s job %d was taken over by another worker; this worker's results were discarded",
                        self.step.kind, job.id)
            report.lost += 1
            return "lost"
        except JobFailure as failure:
            return self._retry_or_fail(report, job, failure)
        except Exception as exc:  # one job's failure must not sink the batch
            log.exception("%s job %d failed", self.step.kind, job.id)
            return self._retry_or_fail(report, job, JobFailure(f"{type(exc).__name__}: {exc}"))
        if isinstance(outcome, Failed) or (isinstance(outcome, Retry) and status == JobStatus.FAILED):
            report.failed += 1
            report.errors.append(outcome.error)
            return "failed"
        if isinstance(outcome, Retry):
            report.retried += 1
            report.errors.append(outcome.error)
            return "retried"
        report.add(outcome)
        return outcome.outcome

    def _fail(self, conn: Connection, job: Job, error: str, *, retry_in: timedelta | None) -> str:
        status = jobs.fail(conn, job.id, worker=self.worker, error=error, retry_in=retry_in)
        if status is None:
            raise LostLease(f"job {job.id}")
        if status == JobStatus.FAILED:
            self.step.failed_for_good(conn, job, error)
        return status

    def _retry_or_fail(self, report: JobReport, job: Job, failure: JobFailure) -> str:
        """Back to pending after a backoff (at least a server's Retry-After), or failed for good."""
        retry_in = self.step.backoff.delay(job.attempts, failure.retry_after) if failure.retryable else None
        report.errors.append(str(failure))
        try:
            with self.services.db.transaction() as conn:
                status = self._fail(conn, job, str(failure), retry_in=retry_in)
        except LostLease:
            log.warning("%s job %d was taken over by another worker", self.step.kind, job.id)
            report.lost += 1
            return "lost"
        if status == JobStatus.FAILED:
            log.error("%s job %d (case %s) failed after %d attempt(s): %s", self.step.kind, job.id, job.case_id,
                      job.attempts, failure)
            report.failed += 1
            return "failed"
        log.warning("%s job %d (case %s) attempt %d: %s; retry in %.0f s", self.step.kind, job.id,
                    job.case_id, job.attempts, failure, retry_in.total_seconds() if retry_in else 0)
        report.retried += 1
        return "retried"


def beat(services: Services, name: str, **details: Any) -> None:
    """Say that a sweeper, worker or function ran just now (the system view shows when each last did)."""
    with services.db.transaction() as conn:
        heartbeats.beat(conn, name, details)


def due_jobs(services: Services, *kinds: JobKind) -> int:
    """How many jobs of these kinds a claim would take now."""
    with services.db.transaction() as conn:
        return sum(jobs.due_count(conn, kind) for kind in kinds)


# The poke: only a speed-up. If it fails, the job still waits in the table for the sweeper. ----------------


def poke(url: str, token: SecretStr | None, body: dict[str, Any], *, what: str,
         timeout: tuple[float, float] = (2.0, 5.0)) -> str:
    """POST `body` to the next step (Bearer `token`); says what happened: `HTTP <status>`, `running` (it took
    the request and is still working when the read timeout ends), or why it failed."""
    headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
    try:
        response = requests.post(url, json=body, headers=headers, timeout=timeout)
    except requests.ConnectTimeout:
        log.warning("%s could not connect in time; the job waits for the sweeper", what)
        return "connect timeout"
    except requests.Timeout:
        return "running"
    except requests.RequestException as exc:  # the URL is not logged: it may carry credentials
        log.warning("%s failed (%s); the job waits for the sweeper", what, type(exc).__name__)
        return f"failed ({type(exc).__name__})"
    if response.status_code >= 400:
        log.warning("%s answered HTTP %d; the job waits for the sweeper", what, response.status_code)
    return f"HTTP {response.status_code}"


def poke_soon(url: str | None, token: SecretStr | None, body: dict[str, Any], *, what: str) -> threading.Thread | None:
    """`poke` in a background thread, after a commit; returns the thread (None when no URL is set)."""
    if not url:
        return None
    thread = threading.Thread(target=poke, args=(url, token, body), kwargs={"what": what},
                              name=what.replace(" ", "-"), daemon=True)
    thread.start()
    return thread

