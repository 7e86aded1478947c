"""The webhook core: authenticate, parse, fetch and store the X-rays, then create case, images and embed job at once.

Guarantees: nothing is written to the database before every image of the submission has been fetched,
checked and stored; the case, its images (failed ones with their error), its embed job and the audit row
commit in one transaction; one submission id is one case however often or concurrently it arrives (repeats
answer 200 with `duplicate: true`). Stored objects are content-addressed, so a refused or repeated
submission leaves at most unreferenced copies of bytes, never a half-made case.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from werkzeug.datastructures import FileStorage

from raiox.adapters.fetch import FetchError, FetchPolicy, fetch, split_list
from raiox.adapters.imaging import ImageError, ImageInfo, inspect_image
from raiox.adapters.jotform_payload import JotformPayloadError, is_webhook, parse_webhook, valid_id
from raiox.adapters.storage import StoredObject
from raiox.jobloop import poke
from raiox.models import CaseStatus, JobKind
from raiox.repository import cases, jobs
from raiox.services import Services, get_services
from raiox.settings import Settings
from raiox.web import HttpError, HttpRequest, HttpResponse, json_response, require_secret

log = logging.getLogger(__name__)

_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


class ImageSource(BaseModel):
    """One X-ray of a submission: a URL to download, or bytes uploaded with the request."""

    model_config = ConfigDict(frozen=True)

    url: str | None = None
    data: bytes | None = Field(default=None, repr=False)


class Submission(BaseModel):
    """A parsed intake request, whatever its sender."""

    model_config = ConfigDict(frozen=True)

    source: Literal["jotform", "json", "upload"]
    submission_id: str
    form_id: str | None = None
    submitter_name: str | None = None
    submitter_email: str | None = None
    client_id: str | None = None
    raw_payload: dict[str, Any]
    images: list[ImageSource]


class JsonIntake(BaseModel):
    """The manual's JSON form; `submission_id` is optional (derived from the content when absent)."""

    model_config = ConfigDict(coerce_numbers_to_str=True)

    image_url: str = Field(min_length=1)
    client_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    submission_id: str | None = None


@dataclass(frozen=True)
class _Outcome:
    source: ImageSource
    stored: StoredObject | None = None
    info: ImageInfo | None = None
    error: str | None = None
    status: int = 422


# Parsing --------------------------------------------------------------------------------------------


def _derived_id(prefix: str, content: Any) -> str:
    """A submission id for senders that give none: equal content, equal id (so retries stay idempotent)."""
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()
    return f"{prefix}-{digest[:40]}"


def _checked_id(value: str | None, prefix: str, content: Any) -> str:
    if value is None or not value.strip():
        return _derived_id(prefix, content)
    if not valid_id(value.strip()):
        raise HttpError(400, "submission_id is malformed (letters, digits and _.:- up to 128 characters)")
    return value.strip()


def _parse_json(request: HttpRequest) -> Submission:
    try:
        body = JsonIntake.model_validate(request.json())
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        raise HttpError(400, f"invalid JSON intake: {problems}") from None
    content = {"image_url": body.image_url, "client_id": body.client_id, "metadata": body.metadata}
    return Submission(
        source="json",
        submission_id=_checked_id(body.submission_id, "json", content),
        client_id=body.client_id,
        raw_payload=content,
        images=[ImageSource(url=body.image_url)],
    )


def _parse_upload(fields: Mapping[str, str], files: list[FileStorage], settings: Settings) -> Submission:
    """The `file` fields of a direct multipart upload (one case, one or more X-rays)."""
    try:
        metadata = json.loads(fields.get("metadata") or "{}")
    except json.JSONDecodeError:
        raise HttpError(400, "metadata is not valid JSON") from None
    images: list[ImageSource] = []
    for upload in files:
        data = upload.stream.read(settings.fetch_max_bytes + 1)
        if len(data) > settings.fetch_max_bytes:
            raise HttpError(413, f"an uploaded file is larger than {settings.fetch_max_bytes} bytes")
        images.append(ImageSource(data=data))
    client_id = fields.get("client_id") or None
    content = {
        "client_id": client_id,
        "metadata": metadata,
        "files": [hashlib.sha256(image.data or b"").hexdigest() for image in images],
    }
    return Submission(
        source="upload",
        submission_id=_checked_id(fields.get("submission_id"), "upload", content),
        client_id=client_id,
        raw_payload={**content, "filenames": [upload.filename for upload in files]},
        images=images,
    )


def _parse_jotform(fields: Mapping[str, str], settings: Settings) -> Submission:
    try:
        parsed = parse_webhook(fields, xray_field=settings.jotform_xray_field, name_field=settings.jotform_name_field)
    except JotformPayloadError as exc:
        raise HttpError(400, f"invalid Jotform payload: {exc}") from None
    return Submission(
        source="jotform",
        submission_id=parsed.submission_id,
        form_id=parsed.form_id,
        submitter_name=parsed.submitter_name,
        submitter_email=parsed.submitter_email,
        raw_payload=parsed.raw_payload(),
        images=[ImageSource(url=url) for url in parsed.upload_urls],
    )


def parse_submission(request: HttpRequest, settings: Settings) -> Submission:
    """Jotform's webhook (multipart or urlencoded), the JSON form, or a direct multipart `file` upload."""
    media_type = request.content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        return _parse_json(request)
    if media_type in _FORM_TYPES:
        fields, files = request.form(max_memory=settings.webhook_max_body_bytes)
        if is_webhook(fields):
            return _parse_jotform(fields, settings)
        if files.getlist("file"):
            return _parse_upload(fields, files.getlist("file"), settings)
        raise HttpError(400, "the form has neither Jotform's fields (submissionID, rawRequest) nor a `file` upload")
    raise HttpError(415, "send multipart/form-data (Jotform or a `file` upload) or application/json")


# Images ---------------------------------------------------------------------------------------------


def _acquire(source: ImageSource, services: Services, policy: FetchPolicy) -> _Outcome:
    """Download (if needed), fully decode and store one image; StorageError propagates (the store is down)."""
    try:
        data = source.data if source.data is not None else fetch(source.url or "", policy)
        info = inspect_image(data, max_pixels=services.settings.raiox_max_image_pixels)
    except (FetchError, ImageError) as exc:
        return _Outcome(source, error=str(exc), status=exc.status)
    return _Outcome(source, stored=services.store.put(data, namespace="xrays", extension=info.kind.extension),
                    info=info)


def acquire_images(submission: Submission, services: Services) -> list[_Outcome]:
    policy = FetchPolicy.from_settings(services.settings)
    with ThreadPoolExecutor(max_workers=min(4, len(submission.images)), thread_name_prefix="fetch") as pool:
        futures = [pool.submit(_acquire, source, services, policy) for source in submission.images]
        return [future.result() for future in futures]


def _refusal(outcomes: list[_Outcome]) -> HttpError:
    statuses = {outcome.status for outcome in outcomes}
    reasons = "; ".join(f"image {n}: {outcome.error}" for n, outcome in enumerate(outcomes, 1))
    return HttpError(statuses.pop() if len(statuses) == 1 else 422, f"no usable X-ray in the submission ({reasons})")


# Database -------------------------------------------------------------------------------------------


def _duplicate(case_id: int, status: CaseStatus) -> HttpResponse:
    return json_response(200, {"case_id": case_id, "status": status, "duplicate": True})


def _record(submission: Submission, outcomes: list[_Outcome], services: Services) -> HttpResponse:
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
            return _duplicate(case.id, case.status)
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
    return json_response(202, {"case_id": case.id, "status": case.status, "images": len(outcomes) - failed,
                               "failed_images": failed, "duplicate": False})


def poke_embed(settings: Settings, case_id: int) -> threading.Thread | None:
    """Ask embed to start now, in the background; if this fails the job still waits in the table."""
    return poke(settings.embed_url, settings.embed_token, {"case_id": case_id}, what=f"embed poke for case {case_id}")


# The handler ----------------------------------------------------------------------------------------


def handle_webhook(request: HttpRequest, services: Services) -> HttpResponse:
    """POST from Jotform (or the JSON / upload senders): 202 new case, 200 duplicate, 4xx refused, 503 retry."""
    settings = services.settings
    if request.method != "POST":
        raise HttpError(405, "use POST", headers={"Allow": "POST"})
    require_secret(request.query.get("token"), settings.webhook_token, setting="WEBHOOK_TOKEN",
                   dev=settings.raiox_env == "dev")
    if len(request.body) > settings.webhook_max_body_bytes:
        raise HttpError(413, f"the request body is larger than {settings.webhook_max_body_bytes} bytes")
    submission = parse_submission(request, settings)
    allowed_forms = split_list(settings.jotform_form_ids)
    if submission.source == "jotform" and allowed_forms and submission.form_id not in allowed_forms:
        raise HttpError(403, f"form {submission.form_id} is not accepted here")
    with services.db.transaction() as conn:
        existing = cases.case_by_submission_id(conn, submission.submission_id)
    if existing is not None:
        log.info("submission %s is already case %d", submission.submission_id, existing.id)
        return _duplicate(existing.id, existing.status)
    if not submission.images:
        raise HttpError(422, "the submission has no X-ray (no upload URL or file)")
    if len(submission.images) > settings.webhook_max_images:
        raise HttpError(422, f"the submission has {len(submission.images)} X-rays; at most "
                             f"{settings.webhook_max_images} are accepted")
    outcomes = acquire_images(submission, services)  # StorageError: 503 (run_handler), nothing kept
    if all(outcome.stored is None for outcome in outcomes):
        raise _refusal(outcomes)
    response = _record(submission, outcomes, services)
    if response.status == 202:
        poke_embed(settings, response.body["case_id"])
    return response


def webhook_handler(request: HttpRequest) -> HttpResponse:
    """`handle_webhook` with the process-wide services (what the function entry files call)."""
    return handle_webhook(request, get_services())
