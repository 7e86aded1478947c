"""Delivery targets: the case's Jotform submission and the HMAC-signed custom webhook."""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

import requests

from raiox.adapters.jotform_client import JotformClient, JotformError, parse_result_fields
from raiox.delivery.document import ResultDocument
from raiox.job_runner import JobFailure
from raiox.settings import SECRET_URLS, Settings, check_secret_url

SIGNATURE_HEADER = "X-Raiox-Signature"


class DeliveryError(JobFailure):
    """A delivery attempt that did not land; `retryable` when trying again later can help (network, 5xx, 408,
    429, Jotform's API limit), not for other 4xx or missing settings."""


SIGNATURE_TOLERANCE_SECONDS = 300  # what docs/delivery.md tells receivers to accept


def sign(body: bytes, secret: str, *, timestamp: int | None = None) -> str:
    """The signature header, Stripe-style: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + the exact body>`.
    The time is signed with the body, so a receiver that refuses old timestamps cannot be replayed to."""
    sent_at = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{sent_at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={sent_at},v1={mac}"


def _check_url(url: str, setting: str, settings: Settings) -> None:
    """The settings check it when they are read; again here for a value set later (and in tests)."""
    try:
        check_secret_url(url, setting, SECRET_URLS[setting.lower()])
    except ValueError as exc:
        raise DeliveryError(str(exc), retryable=False) from None


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
