"""Jotform's REST API: writing a decision into the submission it came from (`POST /submission/{id}`), reading a
form's submissions, deleting an erased case's submission (`DELETE /submission/{id}`)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from pydantic import BaseModel, SecretStr

# What JOTFORM_RESULT_FIELDS may name; each key's value is described in docs/delivery.md.
RESULT_KEYS = ("system", "manufacturer", "implant", "similarity", "confidence", "decision", "reviewer", "reason",
               "note", "decided_at")
_PAIR = re.compile(r"^\s*([a-z_]+)\s*=\s*(\d+)\s*$")
_RATE_LIMITED = "api-limit exceeded"


class JotformError(Exception):
    """A failed API call; `retryable` when trying again later can help (network, 5xx, 429, API limit)."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


class JotformAnswer(BaseModel):
    """What is kept of a successful call: the status and the daily calls left (never the body)."""

    status: int
    limit_left: int | None = None


class SubmissionsPage(BaseModel):
    """One page of `GET /form/{id}/submissions`: each submission as Jotform's API gives it (`id`, `form_id`,
    `created_at`, `status`, `answers{qid: {name, type, answer}}`), and the daily calls left."""

    submissions: list[dict[str, Any]]
    limit_left: int | None = None


def parse_result_fields(text: str) -> dict[str, int]:
    """`system=12,manufacturer=13,…` → {"system": 12, …}; ValueError naming the bad part."""
    fields: dict[str, int] = {}
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        match = _PAIR.match(part)
        if not match:
            raise ValueError(f"JOTFORM_RESULT_FIELDS: {part!r} is not key=question_id (e.g. system=12)")
        key, qid = match.group(1), int(match.group(2))
        if key not in RESULT_KEYS:
            raise ValueError(f"JOTFORM_RESULT_FIELDS: unknown key {key!r}; known: {', '.join(RESULT_KEYS)}")
        if key in fields:
            raise ValueError(f"JOTFORM_RESULT_FIELDS: {key!r} is given twice")
        if qid in fields.values():
            raise ValueError(f"JOTFORM_RESULT_FIELDS: question {qid} receives two values")
        fields[key] = qid
    return fields


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None


def _limit_left(body: object, response: requests.Response) -> int | None:
    value = body.get("limit-left") if isinstance(body, dict) else None
    value = response.headers.get("limit-left") if value is None else value
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


class JotformClient:
    """Calls one API base (US, EU or HIPAA) with the key in the `APIKEY` header, a timeout on every call,
    and no redirects (a redirect would turn the POST into a GET and carry the key to another host)."""

    def __init__(self, base_url: str, api_key: SecretStr, *, timeout: float,
                 session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = api_key
        self.timeout = timeout
        self._session = session or requests.Session()

    def _redact(self, text: str) -> str:
        return text.replace(self._key.get_secret_value(), "***")

    def edit_submission(self, submission_id: str, answers: Mapping[int, str]) -> JotformAnswer:
        """Set question answers of a submission (`submission[<QID>]=value`, in QID order; only these change)."""
        url = f"{self.base_url}/submission/{quote(submission_id, safe='')}"
        data = [(f"submission[{qid}]", value) for qid, value in sorted(answers.items())]
        try:
            response = self._session.post(url, data=data, headers={"APIKEY": self._key.get_secret_value()},
                                          timeout=(self.timeout, self.timeout), allow_redirects=False)
        except requests.Timeout:
            raise JotformError(f"no answer within {self.timeout:g} s", retryable=True) from None
        except requests.RequestException as exc:  # its text names the URL; the type is enough
            raise JotformError(f"connection failed ({type(exc).__name__})", retryable=True) from None
        return self._answer(response)

    def delete_submission(self, submission_id: str) -> JotformAnswer:
        """Delete a submission (`DELETE /submission/{id}`, as Jotform's own API clients do): its answers, and the
        files uploaded with it as far as Jotform deletes those with it."""
        url = f"{self.base_url}/submission/{quote(submission_id, safe='')}"
        try:
            response = self._session.delete(url, headers={"APIKEY": self._key.get_secret_value()},
                                            timeout=(self.timeout, self.timeout), allow_redirects=False)
        except requests.Timeout:
            raise JotformError(f"no answer within {self.timeout:g} s", retryable=True) from None
        except requests.RequestException as exc:
            raise JotformError(f"connection failed ({type(exc).__name__})", retryable=True) from None
        return self._answer(response)

    def list_submissions(self, form_id: str, *, created_after: str | None, offset: int,
                         limit: int) -> SubmissionsPage:
        """A page of the form's submissions, oldest first, created after `created_after` (Jotform's
        `YYYY-MM-DD HH:MM:SS`) when given."""
        params: dict[str, Any] = {"offset": offset, "limit": limit, "orderby": "created_at,ASC"}
        if created_after:
            params["filter"] = json.dumps({"created_at:gt": created_after})
        url = f"{self.base_url}/form/{quote(form_id, safe='')}/submissions"
        try:
            response = self._session.get(url, params=params, headers={"APIKEY": self._key.get_secret_value()},
                                         timeout=(self.timeout, self.timeout), allow_redirects=False)
        except requests.Timeout:
            raise JotformError(f"no answer within {self.timeout:g} s", retryable=True) from None
        except requests.RequestException as exc:
            raise JotformError(f"connection failed ({type(exc).__name__})", retryable=True) from None
        answer = self._answer(response)
        content = response.json().get("content")
        if not isinstance(content, list):
            raise JotformError("the answer has no list of submissions", retryable=False)
        return SubmissionsPage(submissions=[item for item in content if isinstance(item, dict)],
                               limit_left=answer.limit_left)

    def _answer(self, response: requests.Response) -> JotformAnswer:
        try:
            body = response.json()
        except ValueError:
            body = None
        message = str(body.get("message", "")) if isinstance(body, dict) else response.text[:200]
        status = response.status_code
        # Jotform reports some errors, the API limit among them, as HTTP 200 with the code in the body.
        if isinstance(body, dict) and isinstance(body.get("responseCode"), int) and status < 300:
            status = body["responseCode"]
        detail = self._redact(" ".join(message.split())[:200])
        if _RATE_LIMITED in message.lower():
            raise JotformError(f"HTTP {status}: API-Limit exceeded (the account's daily API calls are used up)",
                               retryable=True, retry_after=_retry_after(response))
        if 200 <= status < 300:
            if not isinstance(body, dict):
                raise JotformError(f"HTTP {status} without a JSON answer", retryable=True)
            return JotformAnswer(status=status, limit_left=_limit_left(body, response))
        if 300 <= status < 400:
            host = urlsplit(response.headers.get("Location", "")).hostname or "elsewhere"
            raise JotformError(f"HTTP {status}: redirected to {host}; is JOTFORM_API_BASE the account's API "
                               "base (US, EU or HIPAA)?", retryable=False)
        retryable = status in (408, 429) or status >= 500
        raise JotformError(f"HTTP {status}: {detail or 'no message'}", retryable=retryable,
                           retry_after=_retry_after(response) if retryable else None, status=status)
