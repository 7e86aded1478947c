"""Delivery of decisions to a real local HTTP server playing Jotform (and a custom webhook, and embed):
exact requests, retry schedule, final states, admin-visible failures, lease takeover, no leaked secrets."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl

import pytest
import requests
from click.testing import CliRunner
from pydantic import SecretStr

from fakes import FakeServer, Recorded, Reply
from raiox.adapters.jotform_client import parse_result_fields
from raiox.delivery.targets import SIGNATURE_TOLERANCE_SECONDS
from raiox.delivery.worker import NotifyStep, run_notify_jobs
from raiox.embed.worker import run_embed_jobs
from raiox.models import CaseStatus, JobKind
from raiox.repository import cases, catalog, jobs
from raiox.services import Services
from raiox.settings import Settings
from support import load_function_main, make_xray, submit_case

API_KEY = "jf-key-0123456789abcdef"
FIELDS = "system=12,manufacturer=13,similarity=14,reviewer=15,decision=16,note=17,reason=18"
API_LIMIT = {"message": "API-Limit exceeded", "content": "", "limit-left": 0}
WEBHOOK_SECRET = "whsec-fedcba9876543210"
NOTIFY_TOKEN = "notify-test-token"


@pytest.fixture
def jotform() -> Iterator[FakeServer]:
    server = FakeServer()
    server.api_key = API_KEY
    yield server
    server.close()


@pytest.fixture
def receiver() -> Iterator[FakeServer]:
    server = FakeServer()
    server.default = Reply(204, "")
    yield server
    server.close()


def configure(settings: Settings, jotform: FakeServer) -> None:
    settings.jotform_api_base = jotform.url
    settings.jotform_api_key = SecretStr(API_KEY)
    settings.jotform_result_fields = FIELDS
    settings.notify_timeout_seconds = 1.0


@pytest.fixture
def notifier(db_url: str, tmp_path: Path, jotform: FakeServer) -> Iterator[Services]:
    """Services on this test's database (no encoder), delivering to the fake Jotform."""
    built = Services(Settings(database_url=db_url, raiox_home=tmp_path / "home", raiox_env="dev", _env_file=None))
    configure(built.settings, jotform)
    yield built
    built.close()


# Cases with decisions (what the approve API leaves behind) -----------------------------------------


def ready_case(services: Services, submission_id: str, *, source: str = "jotform") -> int:
    """A `ready` case without X-rays (so without candidates)."""
    with services.db.transaction() as conn:
        case, _ = cases.create_case(conn, submission_id=submission_id, source=source)
        cases.set_case_status(conn, case.id, CaseStatus.EMBEDDING)
        cases.set_case_status(conn, case.id, CaseStatus.READY)
    return case.id


def decide(services: Services, case_id: int, *, implant: str | None = None, reviewer: str = "dr.ana",
           reason: str | None = None, note: str | None = None) -> int:
    """The decision, the case status and the notify job in one transaction; approved when `implant` (a
    system name, created if missing) is given, else rejected. Returns the notify job id."""
    with services.db.transaction() as conn:
        implant_id = catalog.upsert_implant(conn, "Maker", implant).id if implant else None
        status = CaseStatus.APPROVED if implant else CaseStatus.REJECTED
        conn.execute("""INSERT INTO review_decisions (case_id, decision, implant_id, reviewer, reason, note)
                        VALUES (%s, %s, %s, %s, %s, %s)""", (case_id, status, implant_id, reviewer, reason, note))
        cases.set_case_status(conn, case_id, status)
        return jobs.enqueue(conn, JobKind.NOTIFY, case_id=case_id,
                            max_attempts=services.settings.notify_max_attempts).id


def notify_job(services: Services, case_id: int) -> dict[str, Any]:
    """The case's newest notify job, as the admin page reads it."""
    with services.db.transaction() as conn:
        row = conn.execute("""SELECT *, extract(epoch FROM run_after - updated_at) AS delay FROM jobs
                               WHERE kind = 'notify' AND case_id = %s ORDER BY id DESC LIMIT 1""",
                           (case_id,)).fetchone()
    assert row is not None
    return row


def case_row(services: Services, case_id: int) -> dict[str, Any]:
    with services.db.transaction() as conn:
        row = conn.execute("SELECT status, notified_at FROM cases WHERE id = %s", (case_id,)).fetchone()
        row["audit"] = [r["action"] for r in conn.execute(
            "SELECT action FROM audit_log WHERE case_id = %s ORDER BY id", (case_id,))]
        row["audit_text"] = json.dumps([r["details"] for r in conn.execute(
            "SELECT details FROM audit_log WHERE case_id = %s", (case_id,))])
    return row


def make_due(services: Services, case_id: int) -> None:
    with services.db.transaction() as conn:
        conn.execute("UPDATE jobs SET run_after = now() WHERE kind = 'notify' AND case_id = %s", (case_id,))


def form(request: Recorded) -> dict[str, list[str]]:
    return parse_qs(request.body.decode(), keep_blank_values=True)


# The Jotform request -------------------------------------------------------------------------------


def test_an_approval_lands_in_jotform_exactly(catalogued: Services, jotform: FakeServer) -> None:
    configure(catalogued.settings, jotform)
    case_id = submit_case(catalogued, "5981234567890", [make_xray(11)])
    run_embed_jobs(catalogued)
    decide(catalogued, case_id, implant="S11", reviewer="dr.ana", note="Bone level, 4.1 mm & ok=yes")

    report = run_notify_jobs(catalogued)
    assert (report.claimed, report.notified, report.retried, report.failed) == (1, 1, 0, 0)
    [sent] = jotform.requests
    assert (sent.method, sent.path) == ("POST", "/submission/5981234567890")
    assert sent.headers["apikey"] == API_KEY and "apikey" not in sent.path.lower()
    assert sent.headers["content-type"] == "application/x-www-form-urlencoded"
    assert sent.body.decode() == (
        "submission%5B12%5D=S11&submission%5B13%5D=Maker&submission%5B14%5D=1.000&submission%5B15%5D=dr.ana"
        "&submission%5B16%5D=approved&submission%5B17%5D=Bone+level%2C+4.1+mm+%26+ok%3Dyes&submission%5B18%5D=")

    state = case_row(catalogued, case_id)
    assert state["status"] == CaseStatus.NOTIFIED and state["notified_at"] is not None
    assert state["audit"][-1] == "notified"
    job = notify_job(catalogued, case_id)
    assert (job["status"], job["attempts"], job["last_error"]) == ("done", 1, None)
    assert job["result"] == {"submission_id": "5981234567890", "jotform": {"status": 200, "limit_left": 987}}

    # Delivering the same decision again writes the same values (at-least-once, idempotent content).
    with catalogued.db.transaction() as conn:
        jobs.enqueue(conn, JobKind.NOTIFY, case_id=case_id)
    assert run_notify_jobs(catalogued).notified == 1
    assert jotform.requests[1].body == sent.body
    assert case_row(catalogued, case_id)["status"] == CaseStatus.NOTIFIED


def test_a_rejection_and_an_implant_that_was_not_proposed(notifier: Services, jotform: FakeServer) -> None:
    notifier.settings.jotform_result_fields = ",".join(reversed(FIELDS.split(",")))  # sent in QID order anyway
    rejected = ready_case(notifier, "sub-rejected")
    decide(notifier, rejected, reviewer="dr.bo", reason="film too dark")
    overridden = ready_case(notifier, "sub-override")
    decide(notifier, overridden, implant="Unlisted X")  # no candidates at all: no similarity
    assert run_notify_jobs(notifier).notified == 2
    by_path = {request.path: form(request) for request in jotform.requests}
    assert by_path["/submission/sub-rejected"] == {
        "submission[12]": [""], "submission[13]": [""], "submission[14]": [""], "submission[15]": ["dr.bo"],
        "submission[16]": ["rejected"], "submission[17]": [""], "submission[18]": ["film too dark"]}
    assert by_path["/submission/sub-override"]["submission[12]"] == ["Unlisted X"]
    assert by_path["/submission/sub-override"]["submission[14]"] == [""]
    assert [key for key, _ in parse_qsl(jotform.requests[0].body.decode(), keep_blank_values=True)] == [
        f"submission[{qid}]" for qid in range(12, 19)]


def test_result_fields_format() -> None:
    assert parse_result_fields(" system = 12, note=17 ,") == {"system": 12, "note": 17}
    assert parse_result_fields("") == {}
    for bad, message in [("system:12", "not key=question_id"), ("colour=3", "unknown key 'colour'"),
                         ("note=1,note=2", "given twice"), ("note=4,reason=4", "question 4 receives two")]:
        with pytest.raises(ValueError, match=message):
            parse_result_fields(bad)


# Retries, failures, the admin page's view ---------------------------------------------------------


def test_transient_failures_retry_with_growing_backoff(notifier: Services, jotform: FakeServer,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    case_id = ready_case(notifier, "sub-flaky")
    decide(notifier, case_id, implant="S1")
    jotform.will(Reply(503, {"responseCode": 503, "message": "Service Unavailable"}),
                 Reply(429, {"responseCode": 429, "message": "Too many requests"}),
                 Reply(hang=True),
                 Reply(200, API_LIMIT),  # Jotform's limit answered as HTTP 200 with the error in the body
                 Reply(403, "API-Limit exceeded"),  # or as any status, in plain text
                 Reply(502, "<html>bad gateway</html>"))
    expected_errors = ["jotform: HTTP 503: Service Unavailable", "jotform: HTTP 429: Too many requests",
                       "jotform: no answer within 1 s", "jotform: HTTP 200: API-Limit exceeded",
                       "jotform: HTTP 403: API-Limit exceeded", "jotform: HTTP 502"]
    delays = []
    for attempt, error in enumerate(expected_errors, start=1):
        report = run_notify_jobs(notifier)
        assert (report.claimed, report.retried) == (1, 1)
        job = notify_job(notifier, case_id)
        assert (job["status"], job["attempts"]) == ("pending", attempt)
        assert job["last_error"].startswith(error)
        ceiling = min(NotifyStep.backoff.cap, NotifyStep.backoff.base * 2 ** (attempt - 1))
        assert ceiling / 2 <= float(job["delay"]) <= ceiling
        delays.append(float(job["delay"]))
        assert run_notify_jobs(notifier).claimed == 0  # not due before its time
        make_due(notifier, case_id)
    assert delays == sorted(delays)

    assert run_notify_jobs(notifier).notified == 1
    assert len(jotform.requests) == 7 and len({r.body for r in jotform.requests}) == 1
    state = case_row(notifier, case_id)
    assert state["status"] == CaseStatus.NOTIFIED and state["notified_at"] is not None
    assert notify_job(notifier, case_id)["status"] == "done"
    assert API_KEY not in caplog.text


def test_retry_after_is_honoured(notifier: Services, jotform: FakeServer) -> None:
    case_id = ready_case(notifier, "sub-later")
    decide(notifier, case_id, implant="S1")
    jotform.will(Reply(429, {"responseCode": 429, "message": "slow down"}, headers={"Retry-After": "900"}))
    run_notify_jobs(notifier)
    assert float(notify_job(notifier, case_id)["delay"]) >= 900


def test_retries_stop_at_the_maximum_then_a_redelivery_succeeds(notifier: Services, jotform: FakeServer) -> None:
    notifier.settings.notify_max_attempts = 3
    case_id = ready_case(notifier, "sub-down")
    decide(notifier, case_id, implant="S1")
    jotform.default = Reply(500, {"responseCode": 500, "message": "Internal error"})
    outcomes = []
    for _ in range(3):
        report = run_notify_jobs(notifier)
        outcomes.append((report.retried, report.failed))
        make_due(notifier, case_id)
    assert outcomes == [(1, 0), (1, 0), (0, 1)]
    # What the admin page shows: the job failed with its error; the case is still approved.
    job = notify_job(notifier, case_id)
    assert (job["status"], job["attempts"]) == ("failed", 3)
    assert job["last_error"] == "jotform: HTTP 500: Internal error"
    state = case_row(notifier, case_id)
    assert state["status"] == CaseStatus.APPROVED and state["notified_at"] is None
    assert state["audit"][-1] == "notify_failed"
    assert run_notify_jobs(notifier).claimed == 0  # failed for good: nothing runs by itself

    # Redeliver (what the approve API's button does): a new job, delivered once Jotform is back.
    jotform.default = Reply()
    with notifier.db.transaction() as conn:
        jobs.enqueue(conn, JobKind.NOTIFY, case_id=case_id, max_attempts=3)
    assert run_notify_jobs(notifier).notified == 1
    assert case_row(notifier, case_id)["status"] == CaseStatus.NOTIFIED
    assert notify_job(notifier, case_id)["status"] == "done" and len(jotform.requests) == 4


def test_a_rejected_key_fails_at_once_and_is_never_logged_or_stored(notifier: Services, jotform: FakeServer,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong_key = "jf-wrong-key-that-must-not-leak"
    notifier.settings.jotform_api_key = SecretStr(wrong_key)
    case_id = ready_case(notifier, "sub-key")
    decide(notifier, case_id, implant="S1")
    report = run_notify_jobs(notifier)
    assert (report.claimed, report.failed, report.retried) == (1, 1, 0)
    job = notify_job(notifier, case_id)
    assert (job["status"], job["attempts"]) == ("failed", 1)
    assert job["last_error"] == "jotform: HTTP 401: You're not authorized: invalid key ***"
    assert jotform.requests[0].headers["apikey"] == wrong_key  # it was sent, only in the header
    state = case_row(notifier, case_id)
    assert state["status"] == CaseStatus.APPROVED
    for text in (caplog.text, json.dumps(job, default=str), state["audit_text"], json.dumps(report.errors)):
        assert wrong_key not in text and API_KEY not in text


@pytest.mark.parametrize("status", [400, 404])
def test_other_client_errors_fail_at_once(notifier: Services, jotform: FakeServer, status: int) -> None:
    case_id = ready_case(notifier, f"sub-{status}")
    decide(notifier, case_id, implant="S1")
    jotform.will(Reply(status, {"responseCode": status, "message": "Submission not found"}))
    assert run_notify_jobs(notifier).failed == 1
    assert notify_job(notifier, case_id)["last_error"] == f"jotform: HTTP {status}: Submission not found"


def test_a_crashed_workers_job_is_delivered_after_its_lease(notifier: Services, jotform: FakeServer) -> None:
    case_id = ready_case(notifier, "sub-crash")
    decide(notifier, case_id, implant="S1")
    with notifier.db.transaction() as conn:  # a worker claims the job, then dies before delivering
        [dead] = jobs.claim(conn, JobKind.NOTIFY, worker="dead", limit=1, lease=timedelta(minutes=2))
    assert run_notify_jobs(notifier).claimed == 0 and jotform.requests == []
    with notifier.db.transaction() as conn:
        conn.execute("UPDATE jobs SET leased_until = now() - interval '1 second' WHERE id = %s", (dead.id,))
    assert run_notify_jobs(notifier, worker="alive").notified == 1
    assert len(jotform.requests) == 1
    assert case_row(notifier, case_id)["status"] == CaseStatus.NOTIFIED
    job = notify_job(notifier, case_id)
    assert (job["status"], job["attempts"]) == ("done", 2)
    with notifier.db.transaction() as conn:  # the dead worker coming back cannot overwrite anything
        assert not jobs.complete(conn, dead.id, worker="dead")


def test_nowhere_to_deliver_fails_with_a_clear_error(notifier: Services) -> None:
    notifier.settings.jotform_result_fields = ""
    case_id = ready_case(notifier, "sub-nowhere")
    decide(notifier, case_id, implant="S1")
    upload = ready_case(notifier, "sub-upload", source="upload")
    decide(notifier, upload, implant="S1")
    assert run_notify_jobs(notifier).failed == 2
    assert "set JOTFORM_RESULT_FIELDS" in notify_job(notifier, case_id)["last_error"]
    assert "set NOTIFY_WEBHOOK_URL" in notify_job(notifier, upload)["last_error"]


# The signed custom webhook -------------------------------------------------------------------------


def test_the_custom_webhook_gets_a_signed_document(notifier: Services, jotform: FakeServer,
                                                   receiver: FakeServer) -> None:
    notifier.settings.notify_webhook_url = f"{receiver.url}/hook"
    notifier.settings.notify_webhook_secret = SecretStr(WEBHOOK_SECRET)
    case_id = ready_case(notifier, "sub-hook")
    decide(notifier, case_id, implant="BLT", note="ok")
    upload = ready_case(notifier, "sub-upload", source="upload")
    decide(notifier, upload, reason="not an implant")
    assert run_notify_jobs(notifier).notified == 2

    assert [r.path for r in jotform.requests] == ["/submission/sub-hook"]  # the upload case has no Jotform
    first, second = receiver.requests
    assert (first.method, first.path, first.headers["content-type"]) == ("POST", "/hook", "application/json")
    # How a receiver verifies: HMAC-SHA256 of the exact body bytes with the shared secret.
    # What docs/delivery.md gives receivers: t and v1 from the header, HMAC of "t." + body, a fresh t.
    fields = dict(part.split("=", 1) for part in first.headers["x-raiox-signature"].split(","))
    expected = hmac.new(WEBHOOK_SECRET.encode(), f"{fields['t']}.".encode() + first.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(fields["v1"], expected)
    assert abs(time.time() - int(fields["t"])) <= SIGNATURE_TOLERANCE_SECONDS
    assert first.headers["x-raiox-event"] == "raiox.decision"
    document = json.loads(first.body)
    assert document.pop("decided_at").endswith("Z")  # UTC
    assert document == {"event": "raiox.decision", "case_id": case_id, "submission_id": "sub-hook",
                        "form_id": None, "decision": "approved", "implant": {
                            "id": document["implant"]["id"], "manufacturer": "Maker", "system": "BLT"},
                        "similarity": None, "confidence": None, "reviewer": "dr.ana", "reason": None, "note": "ok"}
    assert json.loads(second.body)["decision"] == "rejected"
    assert json.loads(second.body)["reason"] == "not an implant"
    assert WEBHOOK_SECRET.encode() not in first.body + second.body
    assert notify_job(notifier, case_id)["result"] == {
        "submission_id": "sub-hook", "jotform": {"status": 200, "limit_left": 987}, "webhook": {"status": 204}}


def test_webhook_failures_retry_or_fail(notifier: Services, receiver: FakeServer) -> None:
    notifier.settings.jotform_result_fields = ""
    notifier.settings.notify_webhook_url = f"{receiver.url}/hook"
    notifier.settings.notify_webhook_secret = SecretStr(WEBHOOK_SECRET)
    case_id = ready_case(notifier, "sub-hook-down")
    decide(notifier, case_id, implant="S1")
    receiver.will(Reply(503, ""), Reply(410, ""))
    assert run_notify_jobs(notifier).retried == 1
    assert notify_job(notifier, case_id)["last_error"] == "webhook: HTTP 503"
    make_due(notifier, case_id)
    assert run_notify_jobs(notifier).failed == 1
    assert notify_job(notifier, case_id)["last_error"] == "webhook: HTTP 410"

    notifier.settings.notify_webhook_secret = None  # never sent unsigned
    unsigned = ready_case(notifier, "sub-unsigned")
    decide(notifier, unsigned, implant="S1")
    assert run_notify_jobs(notifier).failed == 1
    assert "NOTIFY_WEBHOOK_SECRET is unset" in notify_job(notifier, unsigned)["last_error"]
    assert len(receiver.requests) == 2


# Entry points: the DigitalOcean main, functions-framework over HTTP, the sweeper, `raiox worker` -----


@pytest.fixture
def env_notifier(process_services: Any, jotform: FakeServer) -> Services:
    """The process-wide services the entry files use, configured through the environment."""
    return process_services({"RAIOX_ENV": "dev", "NOTIFY_TOKEN": NOTIFY_TOKEN, "JOTFORM_API_BASE": jotform.url,
                             "JOTFORM_API_KEY": API_KEY, "JOTFORM_RESULT_FIELDS": FIELDS,
                             "NOTIFY_TIMEOUT_SECONDS": "1", "EMBED_TOKEN": "embed-secret"},
                            unset=("EMBED_URL", "NOTIFY_WEBHOOK_URL"))


def _web_event(headers: dict[str, str], body: str = "") -> dict[str, Any]:
    return {"http": {"method": "POST", "path": "", "headers": headers, "body": body, "queryString": ""}}


def test_digitalocean_entry(env_notifier: Services, jotform: FakeServer) -> None:
    main = load_function_main("notify")
    case_id = ready_case(env_notifier, "sub-do")
    decide(env_notifier, case_id, implant="S1")
    assert main(_web_event({}))["statusCode"] == 401
    assert main(_web_event({"authorization": "Bearer wrong"}))["statusCode"] == 401
    assert jotform.requests == []
    ran = main(_web_event({"authorization": f"Bearer {NOTIFY_TOKEN}"}, json.dumps({"case_id": case_id})), None)
    assert ran["statusCode"] == 200 and ran["body"]["notify"]["notified"] == 1
    assert case_row(env_notifier, case_id)["status"] == CaseStatus.NOTIFIED
    bad = main(_web_event({"authorization": f"Bearer {NOTIFY_TOKEN}"}, '{"sweep": "sometimes"}'))
    assert bad["statusCode"] == 400


def test_over_http(env_notifier: Services, jotform: FakeServer, serve_function: Any) -> None:
    base = serve_function("notify")
    assert requests.get(f"{base}/health", timeout=10).json() == {"status": "ok"}
    assert requests.get(base, timeout=10).status_code == 405
    assert requests.post(base, json={}, timeout=10).status_code == 401
    case_id = ready_case(env_notifier, "sub-http")
    decide(env_notifier, case_id, reason="blurred")
    auth = {"Authorization": f"Bearer {NOTIFY_TOKEN}"}
    ran = requests.post(base, headers=auth, json={"case_id": case_id}, timeout=30)
    assert ran.status_code == 200 and ran.json()["notify"]["notified"] == 1
    assert form(jotform.requests[0])["submission[16]"] == ["rejected"]
    assert requests.post(base, headers=auth, data="[1]", timeout=10).status_code == 400


def test_unconfigured_token_refuses_in_production(env_notifier: Services) -> None:
    env_notifier.settings.raiox_env = "prod"
    env_notifier.settings.notify_token = None
    answer = load_function_main("notify")(_web_event({}))
    assert answer["statusCode"] == 503 and "NOTIFY_TOKEN" in answer["body"]["error"]


def test_the_scheduled_sweeper_delivers_and_pokes_embed(env_notifier: Services, jotform: FakeServer) -> None:
    embed = FakeServer()
    embed.default = Reply(200, {"ready": 1})
    try:
        env_notifier.settings.embed_url = f"{embed.url}/embed"
        main = load_function_main("notify")
        # Nothing due: no poke. A scheduled trigger's event is its parameters; no `http`, no token.
        assert main({"sweep": True})["body"] == {"notify": {"claimed": 0, "notified": 0, "retried": 0, "failed": 0,
                                                            "lost": 0, "errors": []}, "embed": {"due": 0}}
        assert embed.requests == []

        decided = ready_case(env_notifier, "sub-sweep")
        decide(env_notifier, decided, implant="S1")
        waiting = submit_case(env_notifier, "sub-embed-waiting", [make_xray(3)])  # its poke was lost
        swept = main({"sweep": True})
        assert swept["statusCode"] == 200
        assert swept["body"]["notify"]["notified"] == 1 and swept["body"]["embed"] == {"due": 1, "poke": "HTTP 200"}
        [poke] = embed.requests
        assert (poke.path, poke.headers["authorization"], json.loads(poke.body)) == (
            "/embed", "Bearer embed-secret", {"sweep": True})
        assert case_row(env_notifier, decided)["status"] == CaseStatus.NOTIFIED

        # A running embed job whose lease expired (its worker died) is due too; one still leased is not.
        with env_notifier.db.transaction() as conn:
            [job] = jobs.claim(conn, JobKind.EMBED, worker="gpu", limit=1, lease=timedelta(minutes=5))
            assert job.case_id == waiting
        assert main({"sweep": True})["body"]["embed"] == {"due": 0}
        with env_notifier.db.transaction() as conn:
            conn.execute("UPDATE jobs SET leased_until = now() - interval '1 second' WHERE id = %s", (job.id,))
        assert main({"sweep": True})["body"]["embed"]["due"] == 1 and len(embed.requests) == 2
    finally:
        embed.close()


def test_raiox_worker_runs_embed_and_notify_jobs(env_notifier: Services, catalogued: Services,
                                                 jotform: FakeServer, tiny_encoder: Any,
                                                 tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from raiox.tools.cli import main

    monkeypatch.setenv("RAIOX_CLIP_MODEL", "raiox-tiny-vit")
    monkeypatch.setenv("RAIOX_CLIP_PRETRAINED", str(tiny_checkpoint))
    env_notifier._built["encoder"] = tiny_encoder  # the same weights the environment names
    embedding = submit_case(env_notifier, "sub-worker-embed", [make_xray(12)])
    decided = ready_case(env_notifier, "sub-worker-notify")
    decide(env_notifier, decided, implant="S1")
    result = CliRunner().invoke(main, ["worker", "--once"], catch_exceptions=False)
    assert result.exit_code == 0
    assert case_row(env_notifier, embedding)["status"] == CaseStatus.READY
    assert case_row(env_notifier, decided)["status"] == CaseStatus.NOTIFIED
    printed = json.loads(result.stdout.strip().splitlines()[0])
    assert printed["embed"]["ready"] == 1 and printed["notify"]["notified"] == 1
