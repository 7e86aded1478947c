"""Delivery of decisions: the result document, Jotform and the signed custom webhook, the notify job loop."""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import requests
from pydantic import BaseModel, ConfigDict

from raiox.adapters.jotform_client import JotformClient, JotformError, parse_result_fields
from raiox.database import Connection
from raiox.embed.matching import is_low_confidence
from raiox.jobloop import LostLease, default_worker_name, retry_delay
from raiox.models import Job, JobKind, JobStatus
from raiox.repository import cases, jobs
from raiox.repository import delivery as delivery_sql
from raiox.services import Services
from raiox.settings import Settings

log = logging.getLogger(__name__)

# Backoff of a failed delivery: up to 30 s, 1 min, 2 min … 1 h, so a daily API limit is outlasted by the
# default NOTIFY_MAX_ATTEMPTS only partly; the admin page can redeliver once calls are available again.
RETRY_BASE_SECONDS = 30.0
RETRY_CAP_SECONDS = 3600.0
SIGNATURE_HEADER = "X-Raiox-Signature"


class DeliveryError(Exception):
    """A delivery attempt that did not land; `retryable` when trying again later can help."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class ChosenImplant(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    manufacturer: str
    system: str


class ResultDocument(BaseModel):
    """A decision as every target receives it. Built only from the database, so each delivery of one
    decision carries the same content (receivers may deduplicate on `case_id`)."""

    model_config = ConfigDict(frozen=True)

    event: Literal["raiox.decision"] = "raiox.decision"
    case_id: int
    submission_id: str
    form_id: str | None
    decision: Literal["approved", "rejected"]
    implant: ChosenImplant | None
    similarity: float | None  # of the chosen implant, when it was among the case's candidates
    confidence: Literal["low", "normal"] | None  # the machine's ranking, before the reviewer decided
    reviewer: str
    reason: str | None
    note: str | None
    decided_at: datetime

    def field_values(self) -> dict[str, str]:
        """The text each JOTFORM_RESULT_FIELDS key receives; empty where the decision has no such value."""
        implant = self.implant
        return {
            "system": implant.system if implant else "",
            "manufacturer": implant.manufacturer if implant else "",
            "implant": f"{implant.manufacturer} {implant.system}" if implant else "",
            "similarity": f"{self.similarity:.3f}" if self.similarity is not None else "",
            "confidence": self.confidence or "",
            "decision": self.decision,
            "reviewer": self.reviewer,
            "reason": self.reason or "",
            "note": self.note or "",
            "decided_at": self.decided_at.isoformat(),
        }


def load_result(conn: Connection, case_id: int, settings: Settings) -> tuple[ResultDocument, str] | None:
    """The case's result document and the case's source (`jotform`, `json`, `upload`); None if undecided."""
    row = delivery_sql.decision_of_case(conn, case_id)
    if row is None:
        return None
    ranking = [float(r["similarity"]) for r in cases.match_results_of_case(conn, case_id) if r["position"] == 0]
    implant = (ChosenImplant(id=row["implant_id"], manufacturer=row["manufacturer"], system=row["system"])
               if row["implant_id"] is not None else None)
    document = ResultDocument(
        case_id=row["case_id"], submission_id=row["submission_id"], form_id=row["form_id"],
        decision=row["decision"], implant=implant,
        similarity=round(float(row["similarity"]), 4) if row["similarity"] is not None else None,
        confidence=("low" if is_low_confidence(ranking, settings) else "normal") if ranking else None,
        reviewer=row["reviewer"], reason=row["reason"], note=row["note"],
        decided_at=row["decided_at"].astimezone(UTC),
    )
    return document, row["source"]


def sign(body: bytes, secret: str) -> str:
    """The value of the signature header: `sha256=` + hex HMAC-SHA256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _check_url(url: str, setting: str, settings: Settings) -> None:
    scheme = urlsplit(url).scheme
    if scheme != "https" and not (scheme == "http" and settings.raiox_env == "dev"):
        raise DeliveryError(f"{setting} must be an https:// URL", retryable=False)


def _classify_status(status: int, target: str, retry_after: str | None) -> DeliveryError:
    retryable = status in (408, 429) or status >= 500
    seconds = float(retry_after) if retryable and retry_after and retry_after.isdigit() else None
    return DeliveryError(f"{target}: HTTP {status}", retryable=retryable, retry_after=seconds)


def send_webhook(document: ResultDocument, settings: Settings, session: requests.Session) -> dict[str, Any]:
    """POST the document as JSON to NOTIFY_WEBHOOK_URL, signed with NOTIFY_WEBHOOK_SECRET; 2xx is success."""
    url = settings.notify_webhook_url
    assert url is not None
    _check_url(url, "NOTIFY_WEBHOOK_URL", settings)
    if settings.notify_webhook_secret is None:
        raise DeliveryError("webhook: NOTIFY_WEBHOOK_SECRET is unset; deliveries are always signed", retryable=False)
    body = document.model_dump_json().encode()
    headers = {"Content-Type": "application/json", "X-Raiox-Event": document.event,
               SIGNATURE_HEADER: sign(body, settings.notify_webhook_secret.get_secret_value())}
    timeout = settings.notify_timeout_seconds
    try:
        response = session.post(url, data=body, headers=headers, timeout=(timeout, timeout), allow_redirects=False)
    except requests.Timeout:
        raise DeliveryError(f"webhook: no answer within {timeout:g} s", retryable=True) from None
    except requests.RequestException as exc:  # its text names the URL, which may carry a credential
        raise DeliveryError(f"webhook: connection failed ({type(exc).__name__})", retryable=True) from None
    if not 200 <= response.status_code < 300:
        raise _classify_status(response.status_code, "webhook", response.headers.get("Retry-After"))
    return {"status": response.status_code}


def send_jotform(document: ResultDocument, settings: Settings, session: requests.Session) -> dict[str, Any]:
    """Write the configured JOTFORM_RESULT_FIELDS into the case's Jotform submission."""
    try:
        fields = parse_result_fields(settings.jotform_result_fields)
    except ValueError as exc:
        raise DeliveryError(f"jotform: {exc}", retryable=False) from None
    if settings.jotform_api_key is None:
        raise DeliveryError("jotform: JOTFORM_API_KEY is unset", retryable=False)
    _check_url(settings.jotform_api_base, "JOTFORM_API_BASE", settings)
    client = JotformClient(settings.jotform_api_base, settings.jotform_api_key,
                           timeout=settings.notify_timeout_seconds, session=session)
    values = document.field_values()
    try:
        answer = client.edit_submission(document.submission_id, {qid: values[key] for key, qid in fields.items()})
    except JotformError as exc:
        raise DeliveryError(f"jotform: {exc}", retryable=exc.retryable, retry_after=exc.retry_after) from None
    return answer.model_dump(exclude_none=True)


def deliver(document: ResultDocument, source: str, settings: Settings, session: requests.Session) -> dict[str, Any]:
    """Send the decision to every target that applies: the Jotform submission (Jotform cases, with
    JOTFORM_RESULT_FIELDS set) and NOTIFY_WEBHOOK_URL. Returns a short summary per target."""
    summary: dict[str, Any] = {}
    if source == "jotform" and settings.jotform_result_fields.strip():
        summary["jotform"] = send_jotform(document, settings, session)
    if settings.notify_webhook_url:
        summary["webhook"] = send_webhook(document, settings, session)
    if not summary:
        hint = ("JOTFORM_RESULT_FIELDS (with JOTFORM_API_KEY) or NOTIFY_WEBHOOK_URL" if source == "jotform"
                else f"NOTIFY_WEBHOOK_URL (the case came from a {source} upload, not from Jotform)")
        raise DeliveryError(f"nowhere to deliver the decision: set {hint}, then redeliver", retryable=False)
    return summary


# The notify job loop ------------------------------------------------------------------------------


@dataclass
class NotifyReport:
    claimed: int = 0
    notified: int = 0
    retried: int = 0
    failed: int = 0
    lost: int = 0
    errors: list[str] = field(default_factory=list)


def _retry_or_fail(services: Services, job: Job, worker: str, error: DeliveryError) -> str:
    """Back to pending after a backoff (at least a server's Retry-After), or failed for good; the case
    stays approved/rejected either way."""
    settings = services.settings
    retry_in: timedelta | None = None
    if error.retryable and job.attempts < settings.notify_max_attempts:
        retry_in = retry_delay(job.attempts, base=RETRY_BASE_SECONDS, cap=RETRY_CAP_SECONDS)
        if error.retry_after:
            retry_in = max(retry_in, timedelta(seconds=min(error.retry_after, RETRY_CAP_SECONDS)))
    with services.db.transaction() as conn:
        status = jobs.fail(conn, job.id, worker=worker, error=str(error), retry_in=retry_in)
        if status == JobStatus.FAILED and job.case_id is not None:
            cases.record_audit(conn, actor="system:notify", action="notify_failed", case_id=job.case_id,
                               details={"error": str(error), "attempts": job.attempts})
    if status is None:
        log.warning("notify job %d was taken over by another worker", job.id)
        return "lost"
    if status == JobStatus.FAILED:
        log.error("notify job %d (case %s) failed after %d attempt(s): %s", job.id, job.case_id, job.attempts, error)
    else:
        log.warning("notify job %d (case %s) attempt %d: %s; retry in %.0f s", job.id, job.case_id, job.attempts,
                    error, retry_in.total_seconds() if retry_in else 0)
    return status


def _finish(services: Services, job: Job, worker: str, summary: dict[str, Any]) -> None:
    """Complete the job and mark the case notified in one transaction; nothing changes if the job was lost."""
    assert job.case_id is not None
    with services.db.transaction() as conn:
        if not jobs.complete(conn, job.id, worker=worker, result=summary):
            raise LostLease(f"job {job.id}")
        delivery_sql.mark_notified(conn, job.case_id)
        cases.record_audit(conn, actor="system:notify", action="notified", case_id=job.case_id, details=summary)


def _run_one(services: Services, session: requests.Session, job: Job, worker: str,
             loaded: tuple[ResultDocument, str] | None) -> tuple[str, str | None]:
    """Deliver one claimed job: ("notified" | "pending" | "failed" | "lost", the error if any)."""
    try:
        if loaded is None:
            raise DeliveryError(f"case {job.case_id} has no decision to deliver", retryable=False)
        document, source = loaded
        summary = deliver(document, source, services.settings, session)
        _finish(services, job, worker, {"submission_id": document.submission_id, **summary})
    except DeliveryError as exc:
        return _retry_or_fail(services, job, worker, exc), str(exc)
    except LostLease:
        # The new owner delivers the same content again: at-least-once, never a different answer.
        log.warning("notify job %d was taken over by another worker while delivering", job.id)
        return "lost", None
    log.info("case %s delivered (%s)", job.case_id, ", ".join(sorted(summary)))
    return "notified", None


def run_notify_jobs(services: Services, *, worker: str | None = None, limit: int | None = None) -> NotifyReport:
    """Deliver due notify jobs one at a time (each under its own lease, so a slow target cannot make a
    later job's lease run out) until none is due, or `limit` (default NOTIFY_JOBS_PER_CALL) ran."""
    settings = services.settings
    worker = worker or default_worker_name()
    lease = timedelta(seconds=settings.notify_lease_seconds)
    report = NotifyReport()
    with requests.Session() as session:
        while report.claimed < (limit or settings.notify_jobs_per_call):
            with services.db.transaction() as conn:
                claimed = jobs.claim(conn, JobKind.NOTIFY, worker=worker, limit=1, lease=lease)
                if not claimed:
                    break
                job = claimed[0]
                loaded = load_result(conn, job.case_id, services.settings) if job.case_id is not None else None
            report.claimed += 1
            outcome, error = _run_one(services, session, job, worker, loaded)
            if outcome == "notified":
                report.notified += 1
            elif outcome == JobStatus.PENDING:
                report.retried += 1
            elif outcome == JobStatus.FAILED:
                report.failed += 1
            else:
                report.lost += 1
            if error:
                report.errors.append(error)
    return report
