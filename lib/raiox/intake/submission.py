"""What intake receives, whatever its sender: Jotform's webhook fields, the JSON form, or a direct upload,
each turned into one typed `Submission` (or refused with the reason)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import IO, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from raiox.adapters.jotform_payload import JotformPayloadError, parse_webhook, valid_id
from raiox.errors import InvalidInput, TooLarge
from raiox.settings import Settings
from raiox.storable import load_json


class ImageSource(BaseModel):
    """One X-ray of a submission: a URL to download, or bytes uploaded with the request."""

    model_config = ConfigDict(frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    url: str | None = None
    data: bytes | None = Field(default=None, repr=False)


class Submission(BaseModel):
    """A parsed intake request, whatever its sender. It round-trips through JSON (the outage inbox)."""

    model_config = ConfigDict(frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    source: Literal["jotform", "json", "upload"]
    submission_id: str
    form_id: str | None = None
    submitter_name: str | None = None
    submitter_email: str | None = None
    client_id: str | None = None
    raw_payload: dict[str, Any]
    images: list[ImageSource]


class UploadedFile(Protocol):
    """A file of a multipart body (werkzeug's FileStorage is one)."""

    filename: str | None
    stream: IO[bytes]


class JsonIntake(BaseModel):
    """The manual's JSON form; `submission_id` is optional (derived from the content when absent)."""

    model_config = ConfigDict(coerce_numbers_to_str=True)

    image_url: str = Field(min_length=1)
    client_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    submission_id: str | None = None


def _derived_id(prefix: str, content: Any) -> str:
    """A submission id for senders that give none: equal content, equal id (so retries stay idempotent)."""
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()
    return f"{prefix}-{digest[:40]}"


def _checked_id(value: str | None, prefix: str, content: Any) -> str:
    if value is None or not value.strip():
        return _derived_id(prefix, content)
    if not valid_id(value.strip()):
        raise InvalidInput("submission_id is malformed (letters, digits and _.:- up to 128 characters)")
    return value.strip()


def from_json(data: Any) -> Submission:
    try:
        body = JsonIntake.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"invalid JSON intake: {problems}") from None
    content = {"image_url": body.image_url, "client_id": body.client_id, "metadata": body.metadata}
    return Submission(
        source="json",
        submission_id=_checked_id(body.submission_id, "json", content),
        client_id=body.client_id,
        raw_payload=content,
        images=[ImageSource(url=body.image_url)],
    )


def from_upload(fields: Mapping[str, str], files: Sequence[UploadedFile], settings: Settings) -> Submission:
    """The `file` fields of a direct multipart upload (one case, one or more X-rays)."""
    metadata = load_json(fields.get("metadata") or "{}", "metadata")
    images: list[ImageSource] = []
    for upload in files:
        data = upload.stream.read(settings.fetch_max_bytes + 1)
        if len(data) > settings.fetch_max_bytes:
            raise TooLarge(f"an uploaded file is larger than {settings.fetch_max_bytes} bytes")
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


def from_jotform(fields: Mapping[str, str], settings: Settings) -> Submission:
    try:
        parsed = parse_webhook(fields, xray_field=settings.jotform_xray_field, name_field=settings.jotform_name_field)
    except JotformPayloadError as exc:
        raise InvalidInput(f"invalid Jotform payload: {exc}") from None
    return Submission(
        source="jotform",
        submission_id=parsed.submission_id,
        form_id=parsed.form_id,
        submitter_name=parsed.submitter_name,
        submitter_email=parsed.submitter_email,
        raw_payload=parsed.raw_payload(),
        images=[ImageSource(url=url) for url in parsed.upload_urls],
    )
