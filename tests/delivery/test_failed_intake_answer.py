"""A case whose intake failed still gets an answer: the reviewer rejects it with a message through the approve
API, and the clinic receives it as any decision (its Jotform submission and the signed webhook), with retries."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from delivery import test_delivery
from delivery.test_delivery import WEBHOOK_SECRET, case_row, form, make_due, notify_job
from fakes import FakeServer, Reply
from raiox.delivery.worker import run_notify_jobs
from raiox.models import CaseStatus
from raiox.repository import cases, images
from raiox.review import accounts
from raiox.review.http import handle
from raiox.services import Services
from raiox.web.http import HttpRequest, HttpResponse

# That module's fixtures: its fake Jotform, its webhook receiver, services delivering to them.
jotform, receiver, notifier = test_delivery.jotform, test_delivery.receiver, test_delivery.notifier
NAME, PASSWORD = "dr.ana", "a long enough password"
MESSAGE = "We could not open the X-ray you sent (the link had expired). Please send the film again."


def _failed_case(services: Services, submission_id: str) -> int:
    """As the fetch step leaves a case whose only X-ray could not be fetched."""
    with services.db.transaction() as conn:
        case, _ = cases.create_case(conn, submission_id=submission_id, submitter_name="Clinica Sorriso")
        images.add_case_image(conn, case_id=case.id, position=0, source_url="https://files.example.org/film.jpg",
                              error="gave up after 5 attempts: HTTP 404")
        cases.set_case_status(conn, case.id, CaseStatus.FAILED, error="no usable X-ray: HTTP 404")
    return case.id


def _api(services: Services, method: str, path: str, body: Any = None, token: str | None = None) -> HttpResponse:
    headers = {"content-type": "application/json"} if body is not None else {}
    if token:
        headers["authorization"] = f"Bearer {token}"
    return handle(HttpRequest(method=method, path=path, headers=headers, query={},
                              body=json.dumps(body).encode() if body is not None else b"", client="198.51.100.9"),
                  services)


def test_a_failed_case_is_rejected_with_a_message_that_reaches_the_clinic(
        notifier: Services, jotform: FakeServer, receiver: FakeServer, tmp_path: Path) -> None:
    notifier.settings.notify_webhook_url = f"{receiver.url}/hook"
    notifier.settings.notify_webhook_secret = SecretStr(WEBHOOK_SECRET)
    accounts.add_reviewer(notifier, NAME, PASSWORD)
    token = _api(notifier, "POST", "/login", {"name": NAME, "password": PASSWORD}).body["token"]
    case_id = _failed_case(notifier, "sub-unreadable")

    approve = _api(notifier, "POST", f"/cases/{case_id}/decision", {"action": "approve", "rank": 1}, token)
    assert approve.status == 409 and "reject it with a message" in approve.body["error"]
    assert _api(notifier, "POST", f"/cases/{case_id}/decision", {"action": "reject"}, token).status == 422
    rejected = _api(notifier, "POST", f"/cases/{case_id}/decision", {"action": "reject", "reason": MESSAGE}, token)
    assert rejected.status == 200 and rejected.body["status"] == "rejected", rejected.body
    again = _api(notifier, "POST", f"/cases/{case_id}/decision", {"action": "reject", "reason": "twice"}, token)
    assert again.status == 409 and "already rejected" in again.body["error"]
    detail = _api(notifier, "GET", f"/cases/{case_id}", token=token).body
    assert detail["case"]["status"] == "rejected" and detail["case"]["error"] == "no usable X-ray: HTTP 404"
    assert detail["decision"]["reason"] == MESSAGE and detail["delivery"]["state"] in ("queued", "sending")

    # Jotform is down at first: the same retries as any decision.
    jotform.will(Reply(503, {"responseCode": 503, "message": "Service Unavailable"}))
    first = run_notify_jobs(notifier)
    assert (first.claimed, first.retried, first.notified) == (1, 1, 0)
    assert notify_job(notifier, case_id)["last_error"].startswith("jotform: HTTP 503")
    assert case_row(notifier, case_id)["status"] == CaseStatus.REJECTED
    make_due(notifier, case_id)
    assert run_notify_jobs(notifier).notified == 1

    assert [r.path for r in jotform.requests] == ["/submission/sub-unreadable"] * 2
    written = form(jotform.requests[-1])
    assert written["submission[16]"] == ["rejected"] and written["submission[18]"] == [MESSAGE]
    assert written["submission[12]"] == [""] and written["submission[15]"] == [NAME]
    [hook] = receiver.requests
    fields = dict(part.split("=", 1) for part in hook.headers["x-raiox-signature"].split(","))
    expected = hmac.new(WEBHOOK_SECRET.encode(), f"{fields['t']}.".encode() + hook.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(fields["v1"], expected)
    document = json.loads(hook.body)
    assert {k: document[k] for k in ("case_id", "submission_id", "decision", "implant", "reason", "similarity",
                                      "confidence")} == {
        "case_id": case_id, "submission_id": "sub-unreadable", "decision": "rejected", "implant": None,
        "reason": MESSAGE, "similarity": None, "confidence": None}
    state = case_row(notifier, case_id)
    assert state["status"] == CaseStatus.NOTIFIED and state["audit"][-1] == "notified"
    assert "case.rejected" in state["audit"]
    final = _api(notifier, "GET", f"/cases/{case_id}", token=token).body
    assert final["delivery"]["state"] == "notified"
