"""The erase step's jobs: an erased case's submission is deleted where it came from, with Jotform's API
(`DELETE /submission/{id}`). Jotform unreachable, 5xx, 429 or the daily API limit: retried with backoff; already
gone (404): done; refused (another 4xx) or no JOTFORM_API_KEY: retried too, in case the key is set or fixed
meanwhile, and after ERASE_MAX_ATTEMPTS failed with the reason, on the case's trail and in the system view, until
`raiox case erase` (or the admin page's Erase) is run again."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import requests

from raiox.adapters.jotform_client import JotformClient, JotformError
from raiox.database import Connection
from raiox.job_runner import Backoff, Done, JobFailure, JobReport, JobRunner
from raiox.models import Job, JobKind
from raiox.repository import audit, cases
from raiox.services import Services

log = logging.getLogger(__name__)


@dataclass
class EraseReport(JobReport):
    deleted_at_jotform: int = 0


@dataclass
class EraseBatch:
    submissions: dict[int, str | None]  # job id → the Jotform submission id (None: not a Jotform case)
    outcomes: dict[int, str | JotformError] = field(default_factory=dict)  # job id → what happened


class EraseStep:
    kind = JobKind.ERASE
    backoff = Backoff(base=60.0, cap=6 * 3600.0)

    def __init__(self, services: Services, session: requests.Session) -> None:
        self.services = services
        self.session = session

    def claimed(self, conn: Connection, claimed: list[Job]) -> EraseBatch:
        submissions: dict[int, str | None] = {}
        for job in claimed:
            case = cases.get_case(conn, job.case_id) if job.case_id is not None else None
            submissions[job.id] = case.submission_id if case is not None and case.source == "jotform" else None
        return EraseBatch(submissions)

    def work(self, batch: EraseBatch) -> None:
        settings = self.services.settings
        for job_id, submission_id in batch.submissions.items():
            if submission_id is None:
                batch.outcomes[job_id] = "not a Jotform submission"
                continue
            if settings.jotform_api_key is None:
                batch.outcomes[job_id] = JotformError(
                    "JOTFORM_API_KEY is unset: the submission stays at Jotform until the key is set (or it is "
                    "deleted there by hand)", retryable=True)
                continue
            client = JotformClient(settings.jotform_api_base, settings.jotform_api_key,
                                   timeout=settings.notify_timeout_seconds, session=self.session)
            try:
                client.delete_submission(submission_id)
                batch.outcomes[job_id] = "deleted at Jotform"
            except JotformError as error:
                batch.outcomes[job_id] = "already gone at Jotform" if error.status == 404 else error

    def finish(self, conn: Connection, job: Job, batch: EraseBatch) -> Done:
        outcome = batch.outcomes[job.id]
        if isinstance(outcome, JotformError):
            # A refusal (401, 403) is retried too: a key fixed meanwhile makes the next try work.
            raise JobFailure(f"Jotform: {outcome}", retry_after=outcome.retry_after)
        assert job.case_id is not None
        audit.record_audit(conn, actor="system:erase", action="case.erased_at_source", case_id=job.case_id,
                           details={"outcome": outcome})
        log.info("case %s: %s", job.case_id, outcome)
        return Done("deleted_at_jotform", {"outcome": outcome})

    def failed_for_good(self, conn: Connection, job: Job, error: str) -> None:
        """The case's trail says the submission is still at Jotform and why; erasing again retries."""
        if job.case_id is not None:
            audit.record_audit(conn, actor="system:erase", action="erase_at_source_failed", case_id=job.case_id,
                               details={"error": error, "attempts": job.attempts})


def run_erase_jobs(services: Services, *, worker: str | None = None, limit: int = 20) -> EraseReport:
    """Delete due erased submissions at Jotform, one at a time under its own lease (the notify sweeper and
    `raiox worker` run it)."""
    with requests.Session() as session:
        runner = JobRunner(services, EraseStep(services, session), lease_seconds=services.settings.notify_lease_seconds,
                           per_claim=1, worker=worker)
        return runner.run(EraseReport(), limit=limit)
