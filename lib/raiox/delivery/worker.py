"""The delivery step's jobs: send each decision to every target that applies, then case → notified."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import requests

from raiox.database import Connection
from raiox.delivery.document import ResultDocument, load_result
from raiox.delivery.targets import DeliveryError, deliver
from raiox.job_runner import Backoff, Done, JobFailure, JobReport, JobRunner
from raiox.models import Job, JobKind
from raiox.repository import audit, cases
from raiox.services import Services

log = logging.getLogger(__name__)


@dataclass
class NotifyReport(JobReport):
    notified: int = 0


@dataclass
class NotifyBatch:
    loaded: dict[int, tuple[ResultDocument, str] | None]  # job id → (document, case source), None if undecided
    sent: dict[int, dict[str, object] | DeliveryError] = field(default_factory=dict)  # job id → summary or error


class NotifyStep:
    kind = JobKind.NOTIFY
    # Up to 30 s, 1 min, 2 min … 1 h, so a daily API limit is outlasted only partly by the default
    # NOTIFY_MAX_ATTEMPTS; the admin page can redeliver once calls are available again.
    backoff = Backoff(base=30.0, cap=3600.0)

    def __init__(self, services: Services, session: requests.Session) -> None:
        self.services = services
        self.session = session

    def claimed(self, conn: Connection, claimed: list[Job]) -> NotifyBatch:
        settings = self.services.settings
        return NotifyBatch({job.id: load_result(conn, job.case_id, settings) if job.case_id is not None else None
                            for job in claimed})

    def work(self, batch: NotifyBatch) -> None:
        """Send outside any transaction, each request with its own timeouts."""
        for job_id, loaded in batch.loaded.items():
            if loaded is None:
                continue
            document, source = loaded
            try:
                batch.sent[job_id] = deliver(document, source, self.services.settings, self.session)
            except DeliveryError as error:
                batch.sent[job_id] = error

    def finish(self, conn: Connection, job: Job, batch: NotifyBatch) -> Done:
        loaded = batch.loaded.get(job.id)
        if loaded is None:
            raise JobFailure(f"case {job.case_id} has no decision to deliver", retryable=False)
        sent = batch.sent[job.id]
        if isinstance(sent, DeliveryError):
            raise sent
        assert job.case_id is not None
        summary = {"submission_id": loaded[0].submission_id, **sent}
        cases.mark_notified(conn, job.case_id)
        audit.record_audit(conn, actor="system:notify", action="notified", case_id=job.case_id, details=summary)
        log.info("case %s delivered (%s)", job.case_id, ", ".join(sorted(sent)))
        return Done("notified", summary)

    def failed_for_good(self, conn: Connection, job: Job, error: str) -> None:
        """The case stays approved/rejected; the admin page shows the error and can redeliver."""
        if job.case_id is not None:
            audit.record_audit(conn, actor="system:notify", action="notify_failed", case_id=job.case_id,
                               details={"error": error, "attempts": job.attempts})


def run_notify_jobs(services: Services, *, worker: str | None = None, limit: int | None = None) -> NotifyReport:
    """Deliver due notify jobs one at a time (each under its own lease, so a slow target cannot make a later
    job's lease run out) until none is due, or `limit` (default NOTIFY_JOBS_PER_CALL) ran."""
    settings = services.settings
    with requests.Session() as session:
        runner = JobRunner(services, NotifyStep(services, session), lease_seconds=settings.notify_lease_seconds,
                           per_claim=1, worker=worker)
        return runner.run(NotifyReport(), limit=limit or settings.notify_jobs_per_call)
