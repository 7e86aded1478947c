"""Jotform: the webhook payload (form fields with a JSON `rawRequest`) parsed into a typed submission."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

from raiox.adapters.fetch import UPLOAD_PATH
from raiox.errors import InvalidInput
from raiox.storable import load_json

# Webhook fields kept with the case. Left out: `pretty` (a lossy "Label:Value, …" rendering that must
# never be parsed) and `webhookURL` (our own URL, which carries the webhook token).
_KEPT_FIELDS = ("formID", "submissionID", "formTitle", "username", "type", "ip", "event", "teamID", "parent")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_ANSWER_KEY = re.compile(r"^q(\d+)_(.+)$")
_NAME_PARTS = ("prefix", "first", "middle", "last", "suffix")


class JotformPayloadError(ValueError):
    """A webhook payload that is not a usable Jotform submission; the message says why."""


class JotformSubmission(BaseModel):
    """What intake needs from one Jotform submission."""

    model_config = ConfigDict(frozen=True)

    form_id: str
    submission_id: str
    upload_urls: list[str]
    submitter_name: str | None = None
    submitter_email: str | None = None
    answers: dict[str, Any]  # rawRequest, parsed
    fields: dict[str, str]  # the webhook's own fields listed in _KEPT_FIELDS

    def raw_payload(self) -> dict[str, Any]:
        """The submission as stored with the case (no `pretty`, no webhook URL)."""
        return {**self.fields, "rawRequest": self.answers}


def valid_id(value: str) -> bool:
    """A submission or form id we are willing to key a case on."""
    return bool(_ID.match(value))


def is_webhook(fields: Mapping[str, str]) -> bool:
    """Whether form fields look like a Jotform webhook rather than another sender's form post."""
    return "submissionID" in fields or "rawRequest" in fields


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("https://", "http://"))


def _is_upload_url(value: Any) -> bool:
    """An absolute URL of a submission's file: Jotform serves them under /uploads/<user>/<form>/<submission>/."""
    return _is_url(value) and urlsplit(value).path.startswith(UPLOAD_PATH)


def _upload_list(value: Any) -> list[str]:
    if isinstance(value, list) and value and all(_is_upload_url(item) for item in value):
        return list(value)
    return []


def _answer(answers: Mapping[str, Any], key: str) -> Any:
    """The answer under `key`, also found when `key` lacks (or has) the `q<QID>_` prefix."""
    if key in answers:
        return answers[key]
    bare = _ANSWER_KEY.match(key)
    wanted = bare.group(2) if bare else key
    for candidate, value in answers.items():
        if candidate == wanted or ((m := _ANSWER_KEY.match(candidate)) and m.group(2) == wanted):
            return value
    return None


def _upload_urls(answers: Mapping[str, Any], xray_field: str | None) -> list[str]:
    if xray_field:
        # Whatever the configured answer holds goes to the downloader, which refuses bad URLs with a reason.
        value = _answer(answers, xray_field)
        items = value if isinstance(value, list) else [value]
        urls = [item.strip() for item in items if isinstance(item, str) and item.strip()]
    else:
        # Upload answers are lists of absolute URLs under /uploads/ (a lone URL string is metadata such as
        # `uploadServerUrl`; a list of other URLs is some other answer); `temp_upload` holds internal
        # references, not URLs.
        urls = [url for key, value in answers.items() if key != "temp_upload" for url in _upload_list(value)]
    return list(dict.fromkeys(urls))  # the same file listed twice is one X-ray


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, Mapping):  # compound full-name answer
        parts = [str(value[part]).strip() for part in _NAME_PARTS if isinstance(value.get(part), str)]
        return " ".join(part for part in parts if part) or None
    return None


def _name(answers: Mapping[str, Any], name_field: str | None) -> str | None:
    if name_field:
        return _text(_answer(answers, name_field))
    for key, value in answers.items():
        if _ANSWER_KEY.match(key) and isinstance(value, Mapping) and {"first", "last"} <= value.keys():
            return _text(value)
    return None


def _email(answers: Mapping[str, Any]) -> str | None:
    for key, value in answers.items():
        if _ANSWER_KEY.match(key) and "email" in key.lower() and isinstance(value, str) and "@" in value:
            return value.strip()
    return None


def parse_webhook(
    fields: Mapping[str, str], *, xray_field: str | None = None, name_field: str | None = None
) -> JotformSubmission:
    """Parse the webhook's form fields. `xray_field`/`name_field` name the answers to use (rawRequest keys,
    with or without the `q<QID>_` prefix); unset, every upload URL list is taken and the first full-name
    answer names the client. Raises JotformPayloadError."""
    form_id = (fields.get("formID") or "").strip()
    submission_id = (fields.get("submissionID") or "").strip()
    if not submission_id:
        raise JotformPayloadError("submissionID is missing")
    if not valid_id(submission_id):
        raise JotformPayloadError("submissionID is malformed")
    if not form_id:
        raise JotformPayloadError("formID is missing")
    if not valid_id(form_id):
        raise JotformPayloadError("formID is malformed")
    raw = fields.get("rawRequest")
    if raw is None:
        raise JotformPayloadError("rawRequest is missing")
    try:
        answers = load_json(raw, "rawRequest")
    except InvalidInput as exc:
        raise JotformPayloadError(exc.message) from None
    if not isinstance(answers, dict):
        raise JotformPayloadError("rawRequest is not a JSON object")
    return submission_from_answers(form_id, submission_id, answers, xray_field=xray_field, name_field=name_field,
                                   fields={key: fields[key] for key in _KEPT_FIELDS if key in fields})


def submission_from_answers(form_id: str, submission_id: str, answers: dict[str, Any], *, xray_field: str | None,
                            name_field: str | None, fields: dict[str, str] | None = None) -> JotformSubmission:
    """A submission from its answers keyed as in rawRequest (`q<QID>_<name>`), whether they came from the
    webhook or from Jotform's API (reconciliation)."""
    return JotformSubmission(
        form_id=form_id,
        submission_id=submission_id,
        upload_urls=_upload_urls(answers, xray_field),
        submitter_name=_name(answers, name_field),
        submitter_email=_email(answers),
        answers=answers,
        fields=fields or {"formID": form_id, "submissionID": submission_id},
    )
