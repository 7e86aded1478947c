"""Recording a submission: what intake refuses without the network, and the one transaction that makes an
accepted submission a case — its X-rays pending (a URL to fetch, or uploaded bytes), a fetch job and an audit
row. The webhook, the outage inbox's replay and reconciliation with Jotform all record this way."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from raiox.adapters.fetch import FetchPolicy, UnsafeURL, check_url_statically, split_list
from raiox.adapters.imaging import ImageError
from raiox.adapters.sandbox import decode_limits
from raiox.errors import NotPermitted, RaioxError, TooLarge, Unprocessable, UnsupportedFormat
from raiox.intake.submission import Submission
from raiox.models import CaseStatus, JobKind
from raiox.repository import audit, cases, images, jobs
from raiox.services import Services

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Receipt:
    """What became of a submission: a new case, one it already was (`duplicate`), or kept in the inbox while
    the database is unreachable (`queued`, no case id yet)."""

    status: CaseStatus
    case_id: int | None = None
    duplicate: bool = False
    queued: bool = False
    images: int = 0
    refused_images: int = 0


@dataclass(frozen=True)
class Screened:
    """One X-ray as intake takes it: accepted (to fetch, or an upload that decoded), or refused with why."""

    url: str | None
    upload: bytes | None
    refusal: RaioxError | None = None


def screen(submission: Submission, services: Services) -> list[Screened]:
    """What can be refused without the network: URLs the fetch policy never follows, uploads that are no
    usable image. Downloads, DNS and redirects are the fetch step's."""
    policy = FetchPolicy.from_settings(services.settings)
    screened = []
    for source in submission.images:
        try:
            if source.data is not None:  # decoded in a child process under a memory and a time limit
                services.decoders.examine(source.data, decode_limits(services.settings))
            else:
                check_url_statically(source.url or "", policy)
        except (ImageError, UnsafeURL) as refusal:
            screened.append(Screened(source.url, None, refusal))
            continue
        screened.append(Screened(source.url, source.data))
    return screened


def _refusal(screened: list[Screened]) -> RaioxError:
    """No X-ray can be used: the refusal names each one's reason; its kind is theirs when they all agree."""
    kinds = {next(kind for kind in (TooLarge, UnsupportedFormat, Unprocessable) if isinstance(item.refusal, kind))
             for item in screened}
    reasons = "; ".join(f"image {n}: {item.refusal}" for n, item in enumerate(screened, 1))
    kind = kinds.pop() if len(kinds) == 1 else Unprocessable
    return kind(f"no usable X-ray in the submission ({reasons})")


def check(submission: Submission, services: Services) -> list[Screened]:
    """Every refusal intake makes without the database; returns the screened X-rays."""
    settings = services.settings
    allowed_forms = split_list(settings.jotform_form_ids)
    if submission.source == "jotform" and allowed_forms and submission.form_id not in allowed_forms:
        raise NotPermitted(f"form {submission.form_id} is not accepted here")
    if not submission.images:
        raise Unprocessable("the submission has no X-ray (no upload URL or file)")
    if len(submission.images) > settings.webhook_max_images:
        raise Unprocessable(f"the submission has {len(submission.images)} X-rays; at most "
                            f"{settings.webhook_max_images} are accepted")
    screened = screen(submission, services)
    if all(item.refusal is not None for item in screened):
        raise _refusal(screened)
    return screened


def record(submission: Submission, screened: list[Screened], services: Services, *, actor: str) -> Receipt:
    """Case, X-rays, fetch job and audit row in one transaction; the loser of a race gets `duplicate`."""
    with services.db.transaction() as conn:
        case, created = cases.create_case(
            conn, submission_id=submission.submission_id, form_id=submission.form_id, source=submission.source,
            submitter_name=submission.submitter_name, submitter_email=submission.submitter_email,
            client_id=submission.client_id, raw_payload=submission.raw_payload)
        if not created:
            return Receipt(case.status, case.id, duplicate=True)
        for position, item in enumerate(screened):
            images.add_case_image(conn, case_id=case.id, position=position, source_url=item.url, upload=item.upload,
                                  error=str(item.refusal) if item.refusal else None)
        jobs.enqueue(conn, JobKind.FETCH, case_id=case.id, max_attempts=services.settings.fetch_max_attempts)
        refused = sum(1 for item in screened if item.refusal is not None)
        audit.record_audit(conn, actor=actor, action="case.received", case_id=case.id,
                           details={"source": submission.source, "images": len(screened) - refused,
                                    "refused_images": refused})
    log.info("case %d from %s submission %s: %d X-ray(s) to fetch, %d refused", case.id, submission.source,
             submission.submission_id, len(screened) - refused, refused)
    return Receipt(case.status, case.id, images=len(screened) - refused, refused_images=refused)
