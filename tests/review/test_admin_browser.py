"""The admin page in headless Chromium against `raiox dev`: sign in, decide by click and key, watch the queue."""

from __future__ import annotations

import re
from typing import Any

from raiox.review import accounts, decisions
from raiox.services import Services
from review.pages import NAME, one, open_case, ready_cases, row, shot, sign_in


def test_approve_candidate_two_and_watch_it_leave_the_queue(site: tuple, page: Any) -> None:
    from playwright.sync_api import expect

    base, services = site
    _, target, last = ready_cases(services, [("Maria Fernandes", 40), ("Joao Pereira", 41),
                                                 ("Clinica Sorriso Lda", 42)])
    sign_in(page, base)
    expect(page.locator(".case-row")).to_have_count(3)
    expect(page.locator("#queue-count")).to_have_text("3")
    expect(page.locator('.count[data-status="ready"] .count-n')).to_have_text("3")
    expect(page.locator(".case-row").first).to_have_attribute("data-case-id", str(last))  # newest first
    expect(page.locator(".case-view h2")).to_have_text(f"Case #{last}")  # the first case opens by itself
    shot(page, "queue")

    open_case(page, target)
    expect(page.locator(".candidate")).to_have_count(3)
    xray = page.locator(".xray-frame .viewer-film")
    expect(xray).to_be_visible()
    page.wait_for_selector('.viewer-film[data-loaded="true"]')
    page.wait_for_function("() => [...document.querySelectorAll('.thumb img')].every(i => i.naturalWidth)")
    second = page.locator('.candidate[data-rank="2"]')
    chosen_system = second.locator(".system").inner_text()
    page.keyboard.press("2")
    expect(second).to_have_class(re.compile(r"\bselected\b"))
    expect(page.locator("#approve")).to_contain_text(chosen_system)
    page.keyboard.press("c")  # the chosen candidate's reference beside the X-ray
    expect(page.locator('.compare .viewer[data-loaded="true"]')).to_have_count(2)
    page.fill("#note", "apex matches the reference")
    shot(page, "case-view")

    page.locator("#note").blur()
    page.keyboard.press("a")
    expect(row(page, target)).to_have_count(0)
    expect(page.locator(".message.success")).to_contain_text(f"Case #{target} approved")
    expect(page.locator(".case-row")).to_have_count(2)
    expect(page.locator("#queue-count")).to_have_text("2")
    expect(page.locator(".case-view h2")).not_to_have_text(f"Case #{target}")  # the next case is open

    decision = one(services, "SELECT * FROM review_decisions WHERE case_id = %s", target)
    rank_two = one(services, """SELECT implant_id FROM match_results JOIN case_images ON case_images.id = case_image_id
                                 WHERE case_id = %s AND rank = 2""", target)
    assert decision["decision"] == "approved" and decision["chosen_rank"] == 2
    assert decision["implant_id"] == rank_two["implant_id"] and decision["reviewer"] == NAME
    assert decision["note"] == "apex matches the reference"
    learned = one(services, "SELECT * FROM reference_images WHERE source = 'approved_case'")
    assert learned["source_case_id"] == target and learned["implant_id"] == rank_two["implant_id"]
    job = one(services, "SELECT * FROM jobs WHERE kind = 'notify'")
    assert job["case_id"] == target and job["status"] in ("pending", "running", "done", "failed")
    assert one(services, "SELECT status FROM cases WHERE id = %s", target)["status"] == "approved"
    assert one(services, "SELECT count(*) AS n FROM review_decisions")["n"] == 1  # `first` is untouched


def test_override_reject_and_retry_a_failed_delivery(site: tuple, page: Any) -> None:
    from playwright.sync_api import expect

    base, services = site
    overridden, rejected = ready_cases(services, [("Ana Costa", 43), ("Rui Almeida", 44)])
    sign_in(page, base)

    open_case(page, overridden)
    page.keyboard.press("o")
    search = page.locator("#catalog-search")
    expect(search).to_be_focused()
    search.fill("maker s14")
    pick = page.locator(".catalog-item")
    expect(pick).to_have_count(1)
    pick.click()
    expect(page.locator(".override-note")).to_contain_text("S14")
    expect(page.locator(".candidate.selected")).to_have_count(0)
    shot(page, "override")
    page.click("#approve")
    expect(row(page, overridden)).to_have_count(0)
    s14 = one(services, "SELECT id FROM implants WHERE system = 'S14'")["id"]
    decided = one(services, "SELECT * FROM review_decisions WHERE case_id = %s", overridden)
    assert decided["implant_id"] == s14 and decided["chosen_rank"] is None

    open_case(page, rejected)
    page.keyboard.press("r")
    expect(page.locator("#reject-reason")).to_be_focused()
    page.click("#reject-confirm")  # no reason yet: refused in the page, nothing sent
    expect(page.locator(".message.error")).to_contain_text("Write a reason")
    page.fill("#reject-reason", "Two implants overlap on this film")
    page.click("#reject-confirm")
    expect(row(page, rejected)).to_have_count(0)
    expect(page.locator("#no-case")).to_contain_text("All caught up")
    decided = one(services, "SELECT * FROM review_decisions WHERE case_id = %s", rejected)
    assert decided["decision"] == "rejected" and decided["reason"] == "Two implants overlap on this film"
    assert one(services, "SELECT count(*) AS n FROM reference_images WHERE source = 'approved_case'")["n"] == 1

    # The rejected case's delivery fails for good; the reviewer sees it and queues it again.
    with services.db.transaction() as conn:
        conn.execute("""UPDATE jobs SET status = 'failed', attempts = 5, finished_at = now(),
                               last_error = 'Jotform answered 401: check JOTFORM_API_KEY'
                         WHERE kind = 'notify' AND case_id = %s""", (rejected,))
    page.click("#tab-decided")
    expect(page.locator(".case-row")).to_have_count(2)
    expect(row(page, rejected).locator(".delivery")).to_have_text("Delivery failed")
    open_case(page, rejected)
    expect(page.locator(".delivery-card")).to_contain_text("check JOTFORM_API_KEY")
    shot(page, "decided-failed-delivery")
    page.click("#redeliver")
    expect(page.locator(".message.success")).to_contain_text("queued again")
    # A new delivery replaces the failed one (`raiox dev` pokes notify at once; with nowhere to deliver to, it
    # may already have failed again, for its own reason).
    expect(page.locator(".delivery-card")).not_to_contain_text("check JOTFORM_API_KEY")
    with services.db.transaction() as conn:
        states = [r["status"] for r in conn.execute(
            "SELECT status FROM jobs WHERE kind = 'notify' AND case_id = %s ORDER BY id", (rejected,))]
    assert states[0] == "failed" and len(states) == 2


def test_errors_are_explained(site: tuple, page: Any) -> None:
    from playwright.sync_api import expect

    base, services = site
    [case_id] = ready_cases(services, [("Paula Reis", 45)])
    page.goto(f"{base}/admin/")
    page.fill("#login-name", NAME)
    page.fill("#login-password", "not the password")
    page.click("#login-submit")
    expect(page.locator("#login-error")).to_have_text("Wrong name or password")
    shot(page, "login-error")

    sign_in(page, base)
    expect(page.locator(".case-view h2")).to_have_text(f"Case #{case_id}")
    # Someone else decides the case meanwhile: approving here explains what happened.
    other = services.settings.model_copy()
    elsewhere = Services(other)
    try:
        decisions.decide(elsewhere, accounts.Reviewer(id=0, name="olga.reviewer"), case_id,
                      decisions.DecisionBody(action="reject", reason="duplicate submission"))
    finally:
        elsewhere.close()
    page.keyboard.press("a")
    expect(page.locator(".message.error")).to_contain_text("already rejected by olga.reviewer")
    expect(page.locator(".decision")).to_contain_text("duplicate submission")

    # An expired or revoked session sends the reviewer back to sign in, saying why.
    accounts.add_reviewer(services, NAME, "a brand new password", reset=True)
    page.click("#tab-decided")
    expect(page.locator("#login-error")).to_contain_text("sign in again")
