"""The intake step: a parsed submission becomes a case — its X-rays fetched, checked and stored, then the case,
its images, its embed job and an audit row written in one transaction — and embed is asked to start.

Guarantees: nothing is written to the database before every image of the submission has been fetched,
checked and stored; one submission id is one case however often or concurrently it arrives (repeats are
reported as duplicates). Stored objects are content-addressed, so a refused or repeated submission leaves at
most unreferenced copies of bytes, never a half-made case.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from raiox.adapters.fetch import FetchError, FetchPolicy, fetch, split_list
from raiox.adapters.imaging import ImageError, ImageInfo, inspect_image
from raiox.adapters.storage import StoredObject
from raiox.errors import NotPermitted, RaioxError, TooLarge, Unprocessable, UnsupportedFormat
from raiox.intake.submission import ImageSource, Submission
from raiox.job_runner import poke_soon
from raiox.models import CaseStatus, JobKind
from raiox.repository import cases, jobs
from raiox.services import Services

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Receipt:
    """What became of a submission: a new case, or the case it already is (`duplicate`)."""

    case_id: int
    status: CaseStatus
    duplicate: bool
    images: int = 0
    failed_images: int = 0


@dataclass(frozen=True)
class _Outcome:
    source: ImageSource
    stored: StoredObject | None = None
    info: ImageInfo | None = None
    error: str | None = None
    problem: type[RaioxError] = Unprocessable


# Images ---------------------------------------------------------------------------------------------


def _acquire(source: ImageSource, services: Services, policy: FetchPolicy) -> _Outcome:
    """Download (if needed), fully decode and store one image; StorageError propagates (the store is down)."""
    try:
        data = source.data if source.data is not None else fetch(source.url or "", policy)
        info = inspect_image(data, max_pixels=services.settings.raiox_max_image_pixels)
    except (FetchError, ImageError) as exc:
        return _Outcome(source, error=str(exc), problem=_problem(exc))
    return _Outcome(source, stored=services.store.put(data, namespace="xrays", extension=info.kind.extension),
                    info=info)


def acquire_images(submission: Submission, services: Services) -> list[_Outcome]:
    policy = FetchPolicy.from_settings(services.settings)
    with ThreadPoolExecutor(max_workers=min(4, len(submission.images)), thread_name_prefix="fetch") as pool:
        futures = [pool.submit(_acquire, source, services, policy) for source in submission.images]
        return [future.result() for future in futures]


def _problem(error: RaioxError) -> type[RaioxError]:
    """The kind of refusal one image's error is: too large, an unsupported format, or otherwise unusable."""
    return next(kind for kind in (TooLarge, UnsupportedFormat, Unprocessable) if isinstance(error, kind))


def _refusal(outcomes: list[_Outcome]) -> RaioxError:
    """No image was usable: the refusal says why for each; its kind is theirs when they all agree."""
    kinds = {outcome.problem for outcome in outcomes}
    reasons = "; ".join(f"image {n}: {outcome.error}" for n, outcome in enumerate(outcomes, 1))
    kind = kinds.pop() if len(kinds) == 1 else Unprocessable
    return kind(f"no usable X-ray in the submission ({reasons})")


# Database -------------------------------------------------------------------------------------------


def _record(submission: Submission, outcomes: list[_Outcome], services: Services) -> Receipt:
    """Case, images, embed job and audit row in one transaction; the loser of a race answers duplicate."""
    failed = sum(1 for outcome in outcomes if outcome.stored is None)
    with services.db.transaction() as conn:
        case, created = cases.create_case(
            conn,
            submission_id=submission.submission_id,
            form_id=submission.form_id,
            source=submission.source,
            submitter_name=submission.submitter_name,
            submitter_email=submission.submitter_email,
            client_id=submission.client_id,
            raw_payload=submission.raw_payload,
        )
        if not created:
            return Receipt(case.id, case.status, duplicate=True)
        for position, outcome in enumerate(outcomes):
            stored, info = outcome.stored, outcome.info
            cases.add_case_image(
                conn,
                case_id=case.id,
                position=position,
                source_url=outcome.source.url,
                storage_key=stored.key if stored else None,
                sha256=stored.sha256 if stored else None,
                size_bytes=stored.size if stored else None,
                content_type=stored.content_type if stored else None,
                width=info.width if info else None,
                height=info.height if info else None,
                error=outcome.error,
            )
        jobs.enqueue(conn, JobKind.EMBED, case_id=case.id)
        cases.record_audit(
            conn, actor="system:webhook", action="case.received", case_id=case.id,
            details={"source": submission.source, "images": len(outcomes) - failed, "failed_images": failed},
        )
    log.info("case %d from %s submission %s: %d image(s) stored, %d failed",
             case.id, submission.source, submission.submission_id, len(outcomes) - failed, failed)
    return Receipt(case.id, case.status, duplicate=False, images=len(outcomes) - failed, failed_images=failed)


def receive(submission: Submission, services: Services) -> Receipt:
    """The submission as a case (new, or the one it already is); refuses it with the reason when its form is
    not accepted here or none of its X-rays is usable. After a new case commits, embed is poked."""
    settings = services.settings
    allowed_forms = split_list(settings.jotform_form_ids)
    if submission.source == "jotform" and allowed_forms and submission.form_id not in allowed_forms:
        raise NotPermitted(f"form {submission.form_id} is not accepted here")
    with services.db.transaction() as conn:
        existing = cases.case_by_submission_id(conn, submission.submission_id)
    if existing is not None:
        log.info("submission %s is already case %d", submission.submission_id, existing.id)
        return Receipt(existing.id, existing.status, duplicate=True)
    if not submission.images:
        raise Unprocessable("the submission has no X-ray (no upload URL or file)")
    if len(submission.images) > settings.webhook_max_images:
        raise Unprocessable(f"the submission has {len(submission.images)} X-rays; at most "
                            f"{settings.webhook_max_images} are accepted")
    outcomes = acquire_images(submission, services)  # StorageError: the store is down, nothing kept
    if all(outcome.stored is None for outcome in outcomes):
        raise _refusal(outcomes)
    receipt = _record(submission, outcomes, services)
    if not receipt.duplicate:
        poke_soon(settings.embed_url, settings.embed_token, {"case_id": receipt.case_id},
                  what=f"embed poke for case {receipt.case_id}")
    return receipt


