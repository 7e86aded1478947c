"""The approve function: sign-in, tokens, rate limit, lists, decisions and their rules, learning, CORS, entries."""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from unittest.mock import patch
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import requests
from click.testing import CliRunner
from pydantic import SecretStr

from raiox.embed.matching import match_image
from raiox.embed.worker import run_embed_jobs
from raiox.repository.reviewers import Account
from raiox.review import accounts
from raiox.review.http import handle
from raiox.services import Services
from raiox.settings import Settings
from raiox.tools.cli import main as cli
from raiox.web.http import HttpRequest, HttpResponse
from support import case_state, load_function_main, make_xray, submit_case

NAME = "ana.reviewer"
PASSWORD = "correct horse battery"
ADMIN = "https://admin.example.org"


def call(services: Services, method: str, path: str, *, token: str | None = None, body: Any = None,
         query: dict[str, str] | None = None, headers: dict[str, str] | None = None,
         client: str = "198.51.100.7") -> HttpResponse:
    sent = dict(headers or {})
    if token:
        sent["authorization"] = f"Bearer {token}"
    raw = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    if body is not None:
        sent.setdefault("content-type", "application/json")
    request = HttpRequest(method=method, path=path, headers=sent, query=query or {}, body=raw, client=client)
    return handle(request, services)


def sign_in(services: Services, name: str = NAME, password: str = PASSWORD, client: str = "198.51.100.7") -> str:
    answer = call(services, "POST", "/login", body={"name": name, "password": password}, client=client)
    assert answer.status == 200, answer.body
    return str(answer.body["token"])


def ready_case(services: Services, submission_id: str, seed: int) -> int:
    case_id = submit_case(services, submission_id, [make_xray(seed)])
    run_embed_jobs(services)
    assert case_state(services, case_id)["case"].status == "ready"
    return case_id


def rows(services: Services, query: str, *params: Any) -> list[dict[str, Any]]:
    with services.db.transaction() as conn:
        return conn.execute(query, params).fetchall()


@pytest.fixture
def reviewer(catalogued: Services) -> Services:
    """The catalogued services with reviewer NAME; dev mode (token key derived from the local signing key)."""
    assert accounts.add_reviewer(catalogued, NAME, PASSWORD)
    return catalogued


# Sign-in and tokens --------------------------------------------------------------------------------


def test_everything_but_health_and_login_needs_a_token(reviewer: Services) -> None:
    assert call(reviewer, "GET", "/health").body == {"status": "ok"}
    for method, path in [("GET", "/cases"), ("GET", "/cases/1"), ("GET", "/catalog"),
                         ("POST", "/cases/1/decision"), ("POST", "/cases/1/redeliver")]:
        answer = call(reviewer, method, path, body={"action": "reject", "reason": "x"})
        assert answer.status == 401, (method, path)
        assert answer.body == {"error": "sign in first"}
    assert call(reviewer, "GET", "/nowhere").status == 404
    assert call(reviewer, "GET", "/login").status == 405


def test_login_gives_a_token_and_never_echoes_secrets(reviewer: Services, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = call(reviewer, "POST", "/login", body={"name": NAME, "password": "not it at all"})
    assert wrong.status == 401 and wrong.body == {"error": "wrong name or password"}
    unknown = call(reviewer, "POST", "/login", body={"name": "nobody", "password": PASSWORD})
    assert unknown.status == 401 and unknown.body == wrong.body  # no hint which part was wrong

    answer = call(reviewer, "POST", "/login", body={"name": "ANA.Reviewer", "password": PASSWORD})
    assert answer.status == 200
    assert answer.body["name"] == NAME and answer.body["expires_at"]
    token = answer.body["token"]
    assert call(reviewer, "GET", "/cases", token=token).status == 200
    assert PASSWORD not in json.dumps(answer.body)
    assert PASSWORD not in caplog.text and token not in caplog.text and "not it at all" not in caplog.text
    [stored] = rows(reviewer, "SELECT password_hash FROM reviewers")
    assert stored["password_hash"].startswith("scrypt$") and PASSWORD not in stored["password_hash"]


def test_forged_expired_and_revoked_tokens_are_refused(reviewer: Services) -> None:
    token = sign_in(reviewer)
    payload, _, signature = token.partition(".")
    claims = json.loads(accounts._unb64(payload))
    assert call(reviewer, "GET", "/cases", token=token).status == 200

    forged_claims = accounts._b64(json.dumps({**claims, "exp": claims["exp"] + 10**6}).encode())
    other_key = accounts._sign(b"some other key", payload)
    for forged in (f"{forged_claims}.{signature}", f"{payload}.{other_key}", f"{payload}.", "garbage", "é.ü"):
        answer = call(reviewer, "GET", "/cases", token=forged)
        assert answer.status == 401 and "not valid" in answer.body["error"], forged

    key = accounts.token_key(reviewer.settings)
    [row] = rows(reviewer, "SELECT id, name, password_hash, disabled, session_epoch FROM reviewers")
    ttl = reviewer.settings.review_token_ttl_seconds
    expired, _ = accounts.issue_token(key, Account(**row), ttl, now=time.time() - ttl - 1)
    answer = call(reviewer, "GET", "/cases", token=expired)
    assert answer.status == 401 and "expired" in answer.body["error"]

    # A new password signs the reviewer out everywhere; so does disabling.
    accounts.add_reviewer(reviewer, NAME, "another good password", reset=True)
    assert call(reviewer, "GET", "/cases", token=token).status == 401
    fresh = sign_in(reviewer, password="another good password")
    assert call(reviewer, "GET", "/cases", token=fresh).status == 200
    assert accounts.disable_reviewer(reviewer, NAME)
    assert call(reviewer, "GET", "/cases", token=fresh).status == 401
    assert call(reviewer, "POST", "/login", body={"name": NAME, "password": "another good password"}).status == 401


STRANGER = "203.0.113.9"


def test_wrong_passwords_slow_down_the_guesser_and_never_lock_the_reviewer_out(reviewer: Services) -> None:
    reviewer.settings.review_login_max_failures = 3
    guess = {"name": NAME, "password": "guess guess"}
    for _ in range(3):
        assert call(reviewer, "POST", "/login", body=guess, client=STRANGER).status == 401
    limited = call(reviewer, "POST", "/login", body={"name": NAME, "password": PASSWORD}, client=STRANGER)
    assert limited.status == 429 and "too many wrong passwords" in limited.body["error"]
    assert int(limited.headers["Retry-After"]) == 1  # the first delay: 1 s

    # Another process (a second function instance) sees the same count: it lives in the database.
    other = Services(reviewer.settings.model_copy())
    try:
        assert call(other, "POST", "/login", body=guess, client=STRANGER).status == 429
    finally:
        other.close()
    # The reviewer, from her own address, is not held back by the stranger's guesses.
    sign_in(reviewer, client="198.51.100.7")

    # The delay doubles with each wrong try after the free ones: 1 s, 2 s, 4 s …, never beyond the window.
    for expected_wait in (2, 4, 8):
        with reviewer.db.transaction() as conn:  # the stranger waited (still within the 15-minute window)
            conn.execute("UPDATE login_failures SET at = now() - interval '10 minutes' WHERE client = %s",
                         (STRANGER,))
        assert call(reviewer, "POST", "/login", body=guess, client=STRANGER).status == 401  # waited: checked
        held = call(reviewer, "POST", "/login", body=guess, client=STRANGER)
        assert held.status == 429 and int(held.headers["Retry-After"]) == expected_wait
    assert accounts.throttle_delay(40, 3, 900) == 900

    # Unknown names are slowed alike; one name's failures hold back no other name.
    for _ in range(3):
        call(reviewer, "POST", "/login", body={"name": "ghost", "password": "guess guess"}, client=STRANGER)
    assert call(reviewer, "POST", "/login", body={"name": "ghost", "password": "guess"}, client=STRANGER).status == 429
    accounts.add_reviewer(reviewer, "ben.reviewer", PASSWORD)
    sign_in(reviewer, "ben.reviewer", client=STRANGER)

    # Once the failures leave the window, the count is gone.
    with reviewer.db.transaction() as conn:
        conn.execute("UPDATE login_failures SET at = at - interval '1 day'")
    assert call(reviewer, "POST", "/login", body=guess, client=STRANGER).status == 401
    assert rows(reviewer, "SELECT name_key, client FROM login_failures") == [{"name_key": NAME, "client": STRANGER}]


def test_sign_out_ends_the_session_on_the_server(reviewer: Services) -> None:
    token, elsewhere = sign_in(reviewer), sign_in(reviewer, client="192.0.2.44")
    assert call(reviewer, "GET", "/cases", token=token).status == 200
    assert call(reviewer, "POST", "/logout", token=token).body == {"signed_out": True}
    for ended in (token, elsewhere):  # a copied (leaked) token too
        assert call(reviewer, "GET", "/cases", token=ended).status == 401
    assert call(reviewer, "POST", "/logout").status == 401
    assert call(reviewer, "GET", "/cases", token=sign_in(reviewer)).status == 200


def test_unconfigured_token_secret_refuses_in_production(db_url: str, tmp_path: Path) -> None:
    services = Services(Settings(database_url=db_url, raiox_home=tmp_path / "home", raiox_env="prod",
                                 _env_file=None))
    try:
        assert call(services, "GET", "/health").status == 200
        for method, path in [("POST", "/login"), ("GET", "/cases")]:
            answer = call(services, method, path, body={"name": NAME, "password": PASSWORD}, token="x.y")
            assert answer.status == 503 and "REVIEW_TOKEN_SECRET" in answer.body["error"]
    finally:
        services.close()


def test_bad_requests_get_clear_answers(reviewer: Services) -> None:
    token = sign_in(reviewer)
    case_id = ready_case(reviewer, "bad-1", 30)
    decision = f"/cases/{case_id}/decision"
    assert call(reviewer, "POST", decision, token=token, body=b"{not json").status == 400
    listed = call(reviewer, "POST", decision, token=token, body=[1, 2])
    assert listed.status == 422 and "JSON object" in listed.body["error"]
    both = call(reviewer, "POST", decision, token=token, body={"action": "approve", "rank": 1, "implant_id": 1})
    assert both.status == 422 and "exactly one of `rank`" in both.body["error"]
    extra = call(reviewer, "POST", decision, token=token, body={"action": "approve", "rank": 1, "by": "me"})
    assert extra.status == 422 and "by" in extra.body["error"]
    assert call(reviewer, "POST", decision, token=token, body={"action": "maybe"}).status == 422
    assert call(reviewer, "POST", decision, token=token, body={"action": "reject", "reason": "  "}).status == 422
    assert call(reviewer, "POST", decision, token=token, body={"action": "reject", "rank": 1,
                                                                "reason": "blurred"}).status == 422
    assert call(reviewer, "GET", decision, token=token).status == 405
    assert call(reviewer, "GET", "/cases", token=token, query={"status": "lost"}).status == 400
    assert call(reviewer, "GET", "/cases", token=token, query={"page": "0"}).status == 400
    assert call(reviewer, "GET", "/cases", token=token, query={"per_page": "1000"}).status == 400
    assert call(reviewer, "GET", "/cases/abc", token=token).status == 404
    assert case_state(reviewer, case_id)["case"].status == "ready"


# Lists, details, catalog ---------------------------------------------------------------------------


def test_case_lists_are_newest_first_paged_and_counted(reviewer: Services) -> None:
    token = sign_in(reviewer)
    first, second = ready_case(reviewer, "list-1", 31), ready_case(reviewer, "list-2", 32)
    waiting = submit_case(reviewer, "list-3", [make_xray(33)])  # received: not in the queue
    answer = call(reviewer, "GET", "/cases", token=token)
    assert answer.status == 200
    assert [case["id"] for case in answer.body["cases"]] == [second, first]
    assert answer.body["counts"]["ready"] == 2 and answer.body["counts"]["received"] == 1
    assert answer.body["total"] == 2
    top = answer.body["cases"][0]["top"]
    assert top["manufacturer"] == "Maker" and top["system"].startswith("S") and top["similarity"] > 0
    assert answer.body["cases"][0]["decision"] is None and answer.body["cases"][0]["delivery"] is None

    paged = call(reviewer, "GET", "/cases", token=token, query={"page": "2", "per_page": "1"})
    assert [case["id"] for case in paged.body["cases"]] == [first]
    received = call(reviewer, "GET", "/cases", token=token, query={"status": "received,failed"})
    assert [case["id"] for case in received.body["cases"]] == [waiting]

    call(reviewer, "POST", f"/cases/{first}/decision", token=token, body={"action": "reject", "reason": "blurred"})
    decided = call(reviewer, "GET", "/cases", token=token, query={"status": "decided"}).body
    assert [case["id"] for case in decided["cases"]] == [first]
    assert decided["cases"][0]["decision"]["decision"] == "rejected"
    assert decided["cases"][0]["decision"]["reviewer"] == NAME
    assert decided["cases"][0]["delivery"]["state"] == "queued"


def test_case_detail_has_expiring_urls_and_ranked_candidates(reviewer: Services) -> None:
    token = sign_in(reviewer)
    case_id = ready_case(reviewer, "detail-1", 12)  # the very image of implant S12's reference
    answer = call(reviewer, "GET", f"/cases/{case_id}", token=token)
    assert answer.status == 200 and answer.headers["Cache-Control"] == "no-store"
    detail = answer.body
    assert detail["case"]["status"] == "ready" and detail["decision"] is None
    [image] = detail["images"]
    ranked = image["candidates"]
    assert [c["rank"] for c in ranked] == [1, 2, 3]
    assert ranked[0]["system"] == "S12" and ranked[0]["similarity"] == pytest.approx(1.0, abs=1e-3)
    assert ranked[0]["similarity"] >= ranked[1]["similarity"] >= ranked[2]["similarity"]
    store = reviewer.store
    for url in [image["url"]] + [c["reference_url"] for c in ranked]:
        parts = urlsplit(url)
        key = parts.path.removeprefix("/objects/")
        signed = parse_qs(parts.query)
        store.verify(key, signed["expires"][0], signed["signature"][0])  # raises when forged or expired
        assert int(signed["expires"][0]) <= time.time() + reviewer.settings.raiox_url_expiry_seconds + 1
    assert store.get(urlsplit(image["url"]).path.removeprefix("/objects/")) == make_xray(12)
    assert call(reviewer, "GET", "/cases/999999", token=token).status == 404


def test_catalog_search(reviewer: Services) -> None:
    token = sign_in(reviewer)

    def search(q: str) -> list[str]:
        answer = call(reviewer, "GET", "/catalog", token=token, query={"q": q})
        assert answer.status == 200
        return [implant["system"] for implant in answer.body["implants"]]

    assert search("") == ["S10", "S11", "S12", "S13", "S14"]
    assert search("maker s12") == ["S12"]
    assert search("MAKER") == ["S10", "S11", "S12", "S13", "S14"]
    assert search("s1%") == [] and search("s_2") == []  # wildcards are literal
    assert search("nobel") == []


def test_sizes_and_pixel_spacing_for_the_rulers(reviewer: Services) -> None:
    """Candidates and catalog results carry the system's size ranges (None where the catalog has none), each
    X-ray its pixel spacing when its file gave one, and a catalog result a reference image to compare with."""
    token = sign_in(reviewer)
    case_id = ready_case(reviewer, "sizes-1", 12)
    with reviewer.db.transaction() as conn:
        conn.execute("""UPDATE implants SET diameter_min_mm = 3.3, diameter_max_mm = 4.8, length_min_mm = 8,
                               length_max_mm = 14 WHERE system = 'S12'""")
        conn.execute("""UPDATE case_images SET pixel_spacing_row_mm = 0.1, pixel_spacing_col_mm = 0.125
                         WHERE case_id = %s""", (case_id,))
    [image] = call(reviewer, "GET", f"/cases/{case_id}", token=token).body["images"]
    assert image["pixel_spacing_mm"] == [0.1, 0.125]
    sized = {c["system"]: (c["diameter_mm"], c["length_mm"]) for c in image["candidates"]}
    assert sized.pop("S12") == ([3.3, 4.8], [8.0, 14.0])
    assert set(sized.values()) == {(None, None)}

    [found] = call(reviewer, "GET", "/catalog", token=token, query={"q": "s12"}).body["implants"]
    assert (found["diameter_mm"], found["length_mm"]) == ([3.3, 4.8], [8.0, 14.0])
    parts = urlsplit(found["reference_url"])
    assert reviewer.store.get(parts.path.removeprefix("/objects/")) == make_xray(12)  # the catalog's own film
    other = ready_case(reviewer, "sizes-2", 43)
    assert call(reviewer, "GET", f"/cases/{other}", token=token).body["images"][0]["pixel_spacing_mm"] is None

    # A patient's film learned from an approval is never offered as a system's catalog picture.
    [s13] = rows(reviewer, "SELECT id FROM implants WHERE system = 'S13'")
    assert call(reviewer, "POST", f"/cases/{other}/decision", token=token,
                body={"action": "approve", "implant_id": s13["id"]}).status == 200
    with reviewer.db.transaction() as conn:
        conn.execute("DELETE FROM reference_images WHERE source = 'catalog' AND implant_id = %s", (s13["id"],))
    [learned] = call(reviewer, "GET", "/catalog", token=token, query={"q": "s13"}).body["implants"]
    assert learned["references"] == 1 and learned["reference_url"] is None


# Decisions -----------------------------------------------------------------------------------------


def test_approve_a_candidate_records_everything_in_one_go(reviewer: Services) -> None:
    token = sign_in(reviewer)
    case_id = ready_case(reviewer, "approve-1", 40)  # not in the catalog
    candidates = call(reviewer, "GET", f"/cases/{case_id}", token=token).body["images"][0]["candidates"]
    second = candidates[1]
    answer = call(reviewer, "POST", f"/cases/{case_id}/decision", token=token,
                  body={"action": "approve", "rank": 2, "note": "thread pitch fits"})
    assert answer.status == 200
    assert answer.body["status"] == "approved" and answer.body["implant_id"] == second["implant_id"]
    assert answer.body["reference_images_added"] == 1

    [decided] = rows(reviewer, "SELECT * FROM review_decisions WHERE case_id = %s", case_id)
    assert decided["decision"] == "approved" and decided["implant_id"] == second["implant_id"]
    assert decided["chosen_rank"] == 2 and decided["reviewer"] == NAME and decided["note"] == "thread pitch fits"
    assert case_state(reviewer, case_id)["case"].status == "approved"
    [audit] = rows(reviewer, "SELECT * FROM audit_log WHERE case_id = %s AND action = 'case.approved'", case_id)
    assert audit["actor"] == NAME and audit["details"]["rank"] == 2 and audit["details"]["override"] is False
    [job] = rows(reviewer, "SELECT * FROM jobs WHERE case_id = %s AND kind = 'notify'", case_id)
    assert job["status"] == "pending" and job["id"] == answer.body["notify_job_id"]

    # Learning: the X-ray is now a reference of the chosen implant, with the case image's own embedding.
    [learned] = rows(reviewer, "SELECT * FROM reference_images WHERE source = 'approved_case'")
    [image] = rows(reviewer, "SELECT * FROM case_images WHERE case_id = %s", case_id)
    assert learned["implant_id"] == second["implant_id"] and learned["source_case_id"] == case_id
    assert learned["storage_key"] == image["storage_key"] and learned["model_id"] == image["model_id"]
    assert np.allclose(learned["embedding"].to_numpy(), image["embedding"].to_numpy())
    top = match_image(reviewer, make_xray(40))[0]
    assert top.implant_id == second["implant_id"] and top.similarity == pytest.approx(1.0, abs=1e-3)

    # Decided once.
    again = call(reviewer, "POST", f"/cases/{case_id}/decision", token=token, body={"action": "approve", "rank": 1})
    assert again.status == 409 and f"already approved by {NAME}" in again.body["error"]
    detail = call(reviewer, "GET", f"/cases/{case_id}", token=token).body
    assert detail["decision"]["system"] == second["system"] and detail["delivery"]["state"] == "queued"


def test_the_first_learned_reference_of_a_model_gets_its_index(reviewer: Services) -> None:
    """Cases embedded by a model whose references are only what reviewers approve (no catalog import)."""
    from raiox.repository import catalog

    case_id = ready_case(reviewer, "first-learned-1", 41)
    [image] = rows(reviewer, "SELECT model_id FROM case_images WHERE case_id = %s", case_id)
    with reviewer.db.autocommit() as conn:
        conn.execute(f"DROP INDEX {catalog.model_index_name(image['model_id'])}")
        assert catalog.model_index_state(conn, image["model_id"]) == "missing"
    answer = call(reviewer, "POST", f"/cases/{case_id}/decision", token=sign_in(reviewer),
                  body={"action": "approve", "rank": 1})
    assert answer.status == 200 and answer.body["reference_images_added"] == 1
    with reviewer.db.transaction() as conn:
        assert catalog.model_index_state(conn, image["model_id"]) == "ready"


def test_override_with_a_catalog_implant(reviewer: Services) -> None:
    token = sign_in(reviewer)
    case_id = ready_case(reviewer, "override-1", 41)
    missing = call(reviewer, "POST", f"/cases/{case_id}/decision", token=token,
                   body={"action": "approve", "implant_id": 987654})
    assert missing.status == 422 and "no implant 987654" in missing.body["error"]
    no_rank = call(reviewer, "POST", f"/cases/{case_id}/decision", token=token, body={"action": "approve", "rank": 9})
    assert no_rank.status == 422 and "no candidate of rank 9" in no_rank.body["error"]
    assert case_state(reviewer, case_id)["case"].status == "ready"
    assert rows(reviewer, "SELECT id FROM review_decisions") == []

    [s14] = call(reviewer, "GET", "/catalog", token=token, query={"q": "S14"}).body["implants"]
    answer = call(reviewer, "POST", f"/cases/{case_id}/decision", token=token,
                  body={"action": "approve", "implant_id": s14["id"]})
    assert answer.status == 200 and answer.body["implant_id"] == s14["id"]
    [decided] = rows(reviewer, "SELECT * FROM review_decisions WHERE case_id = %s", case_id)
    assert decided["chosen_rank"] is None and decided["implant_id"] == s14["id"]
    [audit] = rows(reviewer, "SELECT details FROM audit_log WHERE action = 'case.approved'")
    assert audit["details"]["override"] is True
    assert rows(reviewer, "SELECT implant_id FROM reference_images WHERE source = 'approved_case'") == [
        {"implant_id": s14["id"]}]


def test_reject_with_a_reason(reviewer: Services) -> None:
    token = sign_in(reviewer)
    case_id = ready_case(reviewer, "reject-1", 42)
    answer = call(reviewer, "POST", f"/cases/{case_id}/decision", token=token,
                  body={"action": "reject", "reason": "  implant not visible  "})
    assert answer.status == 200 and answer.body["status"] == "rejected" and answer.body["implant_id"] is None
    [decided] = rows(reviewer, "SELECT * FROM review_decisions WHERE case_id = %s", case_id)
    assert decided["decision"] == "rejected" and decided["reason"] == "implant not visible"
    assert rows(reviewer, "SELECT id FROM reference_images WHERE source = 'approved_case'") == []
    assert len(rows(reviewer, "SELECT id FROM jobs WHERE case_id = %s AND kind = 'notify'", case_id)) == 1
    assert "case.rejected" in case_state(reviewer, case_id)["audit"]


def test_only_ready_cases_can_be_decided(reviewer: Services) -> None:
    token = sign_in(reviewer)
    waiting = submit_case(reviewer, "early-1", [make_xray(43)])
    answer = call(reviewer, "POST", f"/cases/{waiting}/decision", token=token,
                  body={"action": "reject", "reason": "too early"})
    assert answer.status == 409 and "only ready cases" in answer.body["error"]
    assert call(reviewer, "POST", "/cases/424242/decision", token=token,
                body={"action": "reject", "reason": "x"}).status == 404
    assert rows(reviewer, "SELECT id FROM review_decisions") == []


def test_learning_can_be_turned_off(reviewer: Services) -> None:
    reviewer.settings.learn_from_approvals = False
    token = sign_in(reviewer)
    case_id = ready_case(reviewer, "nolearn-1", 44)
    answer = call(reviewer, "POST", f"/cases/{case_id}/decision", token=token, body={"action": "approve", "rank": 1})
    assert answer.status == 200 and answer.body["reference_images_added"] == 0
    assert rows(reviewer, "SELECT id FROM reference_images WHERE source = 'approved_case'") == []


def test_two_decisions_at_once_one_wins(reviewer: Services) -> None:
    tokens = [sign_in(reviewer), sign_in(reviewer)]
    case_id = ready_case(reviewer, "race-1", 45)
    bodies = [{"action": "approve", "rank": 1}, {"action": "reject", "reason": "unclear"}]
    barrier = threading.Barrier(2)
    answers: list[HttpResponse] = []

    def decide(token: str, body: dict[str, Any]) -> None:
        barrier.wait()
        answers.append(call(reviewer, "POST", f"/cases/{case_id}/decision", token=token, body=body))

    threads = [threading.Thread(target=decide, args=pair) for pair in zip(tokens, bodies, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answer.status for answer in answers) == [200, 409]
    winner = next(answer for answer in answers if answer.status == 200).body["status"]
    assert len(rows(reviewer, "SELECT id FROM review_decisions WHERE case_id = %s", case_id)) == 1
    assert len(rows(reviewer, "SELECT id FROM jobs WHERE case_id = %s AND kind = 'notify'", case_id)) == 1
    assert case_state(reviewer, case_id)["case"].status == winner
    audits = [a for a in case_state(reviewer, case_id)["audit"] if a in ("case.approved", "case.rejected")]
    assert audits == [f"case.{winner}"]


def test_redeliver_only_a_failed_delivery(reviewer: Services) -> None:
    token = sign_in(reviewer)
    case_id = ready_case(reviewer, "redeliver-1", 46)
    early = call(reviewer, "POST", f"/cases/{case_id}/redeliver", token=token)
    assert early.status == 409 and "before a decision" in early.body["error"]
    call(reviewer, "POST", f"/cases/{case_id}/decision", token=token, body={"action": "approve", "rank": 1})
    queued = call(reviewer, "POST", f"/cases/{case_id}/redeliver", token=token)
    assert queued.status == 409 and "is queued" in queued.body["error"]

    with reviewer.db.transaction() as conn:
        conn.execute("""UPDATE jobs SET status = 'failed', attempts = 5, last_error = 'Jotform said 401',
                               finished_at = now() WHERE case_id = %s AND kind = 'notify'""", (case_id,))
    delivery = call(reviewer, "GET", f"/cases/{case_id}", token=token).body["delivery"]
    assert delivery["state"] == "failed" and delivery["last_error"] == "Jotform said 401"
    answer = call(reviewer, "POST", f"/cases/{case_id}/redeliver", token=token)
    assert answer.status == 202 and answer.body["delivery"] == "queued"
    jobs = rows(reviewer, "SELECT status FROM jobs WHERE case_id = %s AND kind = 'notify' ORDER BY id", case_id)
    assert [job["status"] for job in jobs] == ["failed", "pending"]
    assert call(reviewer, "GET", f"/cases/{case_id}", token=token).body["delivery"]["state"] == "queued"
    assert "case.redeliver" in case_state(reviewer, case_id)["audit"]


class _Recorder(BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, Any]]] = []
    arrived = threading.Event()

    def do_POST(self) -> None:  # http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).received.append((self.headers.get("Authorization", ""), body))
        self.send_response(202)
        self.end_headers()
        type(self).arrived.set()

    def log_message(self, *args: Any) -> None:
        pass


def test_a_decision_pokes_notify_and_survives_a_dead_one(reviewer: Services) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        reviewer.settings.notify_url = f"http://127.0.0.1:{server.server_port}/notify"
        reviewer.settings.notify_token = SecretStr("notify-secret")
        token = sign_in(reviewer)
        case_id = ready_case(reviewer, "poke-1", 47)
        assert call(reviewer, "POST", f"/cases/{case_id}/decision", token=token,
                    body={"action": "approve", "rank": 1}).status == 200
        assert _Recorder.arrived.wait(30)
        assert _Recorder.received == [("Bearer notify-secret", {"case_id": case_id})]
    finally:
        server.shutdown()
        server.server_close()
    # Nobody listens any more: the decision still stands, the job waits in the table.
    other = ready_case(reviewer, "poke-2", 48)
    assert call(reviewer, "POST", f"/cases/{other}/decision", token=token,
                body={"action": "reject", "reason": "no implant"}).status == 200


# CORS ----------------------------------------------------------------------------------------------


def test_cors_allows_only_the_admin_origin(reviewer: Services) -> None:
    reviewer.settings.admin_origin = f"{ADMIN}, http://localhost:5500"
    allowed = call(reviewer, "OPTIONS", "/cases", headers={"origin": ADMIN,
                                                          "access-control-request-method": "GET"})
    assert allowed.status == 204
    assert allowed.headers["Access-Control-Allow-Origin"] == ADMIN
    assert "Authorization" in allowed.headers["Access-Control-Allow-Headers"]
    assert "POST" in allowed.headers["Access-Control-Allow-Methods"]

    refused = call(reviewer, "OPTIONS", "/cases", headers={"origin": "https://evil.example"})
    assert refused.status == 403 and "Access-Control-Allow-Origin" not in refused.headers

    answer = call(reviewer, "POST", "/login", body={"name": NAME, "password": PASSWORD},
                  headers={"origin": "http://localhost:5500"})
    assert answer.status == 200 and answer.headers["Access-Control-Allow-Origin"] == "http://localhost:5500"
    error = call(reviewer, "GET", "/cases", headers={"origin": ADMIN})
    assert error.status == 401 and error.headers["Access-Control-Allow-Origin"] == ADMIN  # readable errors
    other = call(reviewer, "GET", "/health", headers={"origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers

    reviewer.settings.admin_origin = None
    assert call(reviewer, "OPTIONS", "/cases", headers={"origin": ADMIN}).status == 403


# Entry points and the CLI --------------------------------------------------------------------------

SECRET = "review-test-secret"


@pytest.fixture
def env_services(reviewer: Services, process_services: Any) -> Services:
    """The process-wide services the entry files use, configured through the environment (prod mode)."""
    return process_services({"RAIOX_ENV": "prod", "REVIEW_TOKEN_SECRET": SECRET, "ADMIN_ORIGIN": ADMIN},
                            unset=("NOTIFY_URL", "LEARN_FROM_APPROVALS"))


def test_digitalocean_entry(reviewer: Services, env_services: Services) -> None:
    main = load_function_main("approve")
    case_id = ready_case(reviewer, "do-1", 49)

    def event(method: str, path: str, body: str = "", query: str = "", token: str | None = None) -> dict:
        headers = {"content-type": "application/json", **({"authorization": f"Bearer {token}"} if token else {})}
        return {"http": {"method": method, "path": path, "headers": headers, "body": body, "queryString": query}}

    assert main(event("GET", "/cases"))["statusCode"] == 401
    signed = main(event("POST", "/login", json.dumps({"name": NAME, "password": PASSWORD})), None)
    assert signed["statusCode"] == 200
    token = signed["body"]["token"]
    listed = main(event("GET", "/cases", query="status=ready&page=1", token=token))
    assert listed["statusCode"] == 200 and [c["id"] for c in listed["body"]["cases"]] == [case_id]
    json.dumps(listed)  # the platform serialises the answer: nothing in it may be a datetime
    decided = main(event("POST", f"/cases/{case_id}/decision", json.dumps({"action": "approve", "rank": 3}),
                         token=token))
    assert decided["statusCode"] == 200 and decided["body"]["status"] == "approved"
    assert decided["headers"]["Cache-Control"] == "no-store"

    # `web: true` merges a JSON body's fields into the event.
    merged = main({"name": NAME, "password": PASSWORD,
                   "http": {"method": "POST", "path": "/login", "headers": {"origin": ADMIN}}})
    assert merged["statusCode"] == 200 and merged["headers"]["Access-Control-Allow-Origin"] == ADMIN
    # A token signed with the dev key is worthless where REVIEW_TOKEN_SECRET is set.
    assert main(event("GET", "/cases", token=sign_in(reviewer)))["statusCode"] == 401


def test_over_http(reviewer: Services, env_services: Services, serve_function: Any) -> None:
    base = serve_function("approve")
    case_id = ready_case(reviewer, "http-1", 50)
    assert requests.get(f"{base}/health", timeout=10).json() == {"status": "ok"}
    assert requests.get(f"{base}/cases", timeout=10).status_code == 401
    preflight = requests.options(f"{base}/cases/{case_id}/decision", timeout=10,
                                 headers={"Origin": ADMIN, "Access-Control-Request-Method": "POST",
                                          "Access-Control-Request-Headers": "authorization,content-type"})
    assert preflight.status_code == 204 and preflight.headers["Access-Control-Allow-Origin"] == ADMIN
    token = requests.post(f"{base}/login", json={"name": NAME, "password": PASSWORD}, timeout=10).json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    detail = requests.get(f"{base}/cases/{case_id}", headers=auth, timeout=10)
    assert detail.status_code == 200 and len(detail.json()["images"][0]["candidates"]) == 3
    decided = requests.post(f"{base}/cases/{case_id}/decision", headers=auth, timeout=10,
                            json={"action": "reject", "reason": "two implants overlap"})
    assert decided.status_code == 200 and decided.json()["status"] == "rejected"
    again = requests.post(f"{base}/cases/{case_id}/decision", headers=auth, timeout=10,
                          json={"action": "reject", "reason": "again"})
    assert again.status_code == 409


def test_reviewer_cli(reviewer: Services, env_services: Services) -> None:
    runner = CliRunner()
    added = runner.invoke(cli, ["reviewer", "add", "cara.reviewer", "--password-stdin"],
                          input="a long enough password\n")
    assert added.exit_code == 0, added.output
    assert "reviewer cara.reviewer added" in added.output and "a long enough password" not in added.output
    assert sign_in(reviewer, "cara.reviewer", "a long enough password")

    no_terminal = runner.invoke(cli, ["reviewer", "add", "dan.reviewer"], input="typed twice secret\n")
    assert no_terminal.exit_code == 1 and "no terminal" in no_terminal.output
    assert "--password-stdin" in no_terminal.output
    with patch("raiox.tools.commands.review.stdin_is_terminal", return_value=True):  # as at a terminal
        prompted = runner.invoke(cli, ["reviewer", "add", "dan.reviewer"],
                                 input="typed twice secret\ntyped twice secret\n")
        assert prompted.exit_code == 0, prompted.output
        assert sign_in(reviewer, "dan.reviewer", "typed twice secret")
        mismatch = runner.invoke(cli, ["reviewer", "add", "eve.reviewer"], input="first password\nsecond password\n")
        assert mismatch.exit_code != 0
    empty = runner.invoke(cli, ["reviewer", "add", "eve.reviewer", "--password-stdin"], input="")
    assert empty.exit_code == 1 and "no password on standard input" in empty.output

    taken = runner.invoke(cli, ["reviewer", "add", "CARA.reviewer", "--password-stdin"], input="another password!\n")
    assert taken.exit_code != 0 and "exists" in taken.output
    short = runner.invoke(cli, ["reviewer", "add", "fay", "--password-stdin"], input="short\n")
    assert short.exit_code != 0 and "at least 10 characters" in short.output
    bad_name = runner.invoke(cli, ["reviewer", "add", "no spaces", "--password-stdin"], input="long enough pw\n")
    assert bad_name.exit_code != 0 and "reviewer name" in bad_name.output

    assert runner.invoke(cli, ["reviewer", "disable", "cara.reviewer"]).exit_code == 0
    listed = runner.invoke(cli, ["reviewer", "list"]).output
    assert "cara.reviewer" in listed and "disabled" in listed and NAME in listed
    assert runner.invoke(cli, ["reviewer", "disable", "nobody"]).exit_code != 0


def test_dev_gets_a_fresh_local_reviewer_each_start(catalogued: Services) -> None:
    name, first = accounts.ensure_local_reviewer(catalogued)
    token = sign_in(catalogued, name, first)
    again, second = accounts.ensure_local_reviewer(catalogued)
    assert again == name and second != first
    assert call(catalogued, "POST", "/login", body={"name": name, "password": first}).status == 401
    assert call(catalogued, "GET", "/cases", token=token).status == 401  # the old session ended
    sign_in(catalogued, name, second)


def test_a_film_learned_from_another_case_is_shown_only_with_an_audit_row_on_that_case(reviewer: Services) -> None:
    """Case A is approved, so its film becomes a reference; case B (the same film) matches it. Opening B hands
    the reviewer a URL of A's film: A's trail says who saw it, and in which case."""
    token = sign_in(reviewer)
    first = ready_case(reviewer, "learned-source-1", 44)
    assert call(reviewer, "POST", f"/cases/{first}/decision", token=token,
                body={"action": "approve", "rank": 1}).status == 200
    second = ready_case(reviewer, "learned-viewer-1", 44)
    [top, *_] = call(reviewer, "GET", f"/cases/{second}", token=token).body["images"][0]["candidates"]
    assert (top["reference_source"], top["reference_case_id"]) == ("approved_case", first)
    assert top["reference_url"]
    [shown] = rows(reviewer, "SELECT actor, details FROM audit_log WHERE case_id = %s "
                             "AND action = 'case.film_shown_as_reference'", first)
    assert shown == {"actor": NAME, "details": {"shown_in_case": second}}
    history = call(reviewer, "GET", f"/cases/{first}", token=token).body["history"]
    assert (NAME, "case.film_shown_as_reference") in [(entry["actor"], entry["action"]) for entry in history]


def test_a_name_has_a_ceiling_of_wrong_passwords_across_every_client(reviewer: Services) -> None:
    """A guesser who poses as a new address for each try is bounded by the per-name ceiling, which needs no
    address header; it holds for everyone, the reviewer too, until the window has passed."""
    reviewer.settings.review_login_max_failures_per_name = 4
    guess = {"name": NAME, "password": "guess guess"}
    for n in range(4):
        assert call(reviewer, "POST", "/login", body=guess, client=f"203.0.113.{n}").status == 401
    for client in ("203.0.113.200", "198.51.100.7"):
        held = call(reviewer, "POST", "/login", body={"name": NAME, "password": PASSWORD}, client=client)
        assert held.status == 429 and 1 <= int(held.headers["Retry-After"]) <= 900
    with reviewer.db.transaction() as conn:
        conn.execute("UPDATE login_failures SET at = at - interval '1 day'")
    sign_in(reviewer, client="198.51.100.7")


def test_scrypt_runs_with_no_pooled_connection_held(reviewer: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a pool of one connection, the password check itself can still take that connection: sign-in gave it
    back before hashing."""
    one = Services(reviewer.settings.model_copy(update={"database_pool_max": 1, "database_timeout_seconds": 2}))
    checked = []
    real = accounts.verify_password

    def verify_with_the_pool_free(password: str, stored: str) -> bool:
        with one.db.transaction() as conn:  # would wait 2 s and fail if login still held the only connection
            conn.execute("SELECT 1")
        checked.append(True)
        return real(password, stored)

    monkeypatch.setattr(accounts, "verify_password", verify_with_the_pool_free)
    try:
        assert call(one, "POST", "/login", body={"name": NAME, "password": PASSWORD}).status == 200
        assert call(one, "POST", "/login", body={"name": NAME, "password": "wrong wrong"}).status == 401
    finally:
        one.close()
    assert checked == [True, True]
