"""The admin page's operations in Chromium against `raiox dev`: sign-out on the server, the cases that need
attention and their retry, the system panel, a case's access history and erasing its patient data."""

from __future__ import annotations

import re
from typing import Any

import requests

from raiox.models import CaseStatus, JobKind
from raiox.repository import cases, findings, images, jobs
from raiox.services import Services
from raiox.tools.local import free_port
from review.pages import NAME, one, open_case, ready_cases, row, shot, sign_in


def _api(page: Any) -> str:
    """The approve API the page talks to: the folder above admin/."""
    return page.url.rsplit("/admin/", 1)[0]


def test_sign_out_ends_the_session_on_the_server(site: tuple, page: Any) -> None:
    from playwright.sync_api import expect

    base, services = site
    ready_cases(services, [("Lia Campos", 46)])
    sign_in(page, base)
    token = page.evaluate("sessionStorage.getItem('raiox.token')")
    bearer = {"Authorization": f"Bearer {token}"}
    assert requests.get(f"{_api(page)}/cases", headers=bearer, timeout=10).status_code == 200
    epoch = one(services, "SELECT session_epoch FROM reviewers WHERE name = %s", NAME)["session_epoch"]

    page.click("#sign-out")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#app")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('raiox.token')") is None
    assert one(services, "SELECT session_epoch FROM reviewers WHERE name = %s", NAME)["session_epoch"] == epoch + 1
    assert requests.get(f"{_api(page)}/cases", headers=bearer, timeout=10).status_code == 401  # the old token


def _failed_case(services: Services, submission_id: str, name: str) -> int:
    """A case whose only X-ray could not be fetched: `failed`, as the fetch step leaves it. Its URL points at a
    closed loopback port, so a retry's fetch is refused (passing trouble) and the case waits, `received`."""
    with services.db.transaction() as conn:
        case, _ = cases.create_case(conn, submission_id=submission_id, submitter_name=name)
        images.add_case_image(conn, case_id=case.id, position=0, source_url=f"http://127.0.0.1:{free_port()}/film.jpg",
                              error="gave up after 5 attempts: connection refused")
        cases.set_case_status(conn, case.id, CaseStatus.FAILED,
                              error="no usable X-ray: gave up after 5 attempts: connection refused")
    return case.id


def test_needs_attention_lists_failed_cases_and_retry_sends_one_back_to_intake(site: tuple, page: Any) -> None:
    from playwright.sync_api import expect

    base, services = site
    ready_cases(services, [("Rosa Lima", 47)])
    broken = _failed_case(services, "attention-1", "Clinica Dente Feliz")
    other = _failed_case(services, "attention-2", "Tiago Nunes")
    sign_in(page, base)
    expect(page.locator("#attention-count")).to_have_text("2")
    expect(page.locator("#attention-count")).to_have_class(re.compile(r"\balert\b"))

    page.click("#tab-attention")
    expect(page.locator(".case-row")).to_have_count(2)
    expect(row(page, broken).locator(".row-error")).to_contain_text("connection refused")
    open_case(page, broken)
    expect(page.locator(".attention-card")).to_contain_text("no usable X-ray")
    expect(page.locator("#approve")).to_have_count(0)  # a failed case cannot be decided
    shot(page, "needs-attention")

    page.click("#retry-case")
    expect(page.locator(".message.success")).to_contain_text(f"Case #{broken} went back to intake (1 X-ray")
    expect(row(page, broken)).to_have_count(0)
    expect(page.locator(".case-row")).to_have_count(1)
    expect(page.locator("#attention-count")).to_have_text("1")
    expect(page.locator(".case-view .badge.big")).not_to_have_text("failed")
    assert one(services, "SELECT status FROM cases WHERE id = %s", broken)["status"] in ("received", "embedding")
    assert one(services, "SELECT status FROM case_images WHERE case_id = %s", broken)["status"] == "pending"
    fetch = one(services, "SELECT status FROM jobs WHERE kind = 'fetch' AND case_id = %s", broken)
    assert fetch["status"] in ("pending", "running")
    retried = one(services, "SELECT actor FROM audit_log WHERE case_id = %s AND action = 'case.retry'", broken)
    assert retried["actor"] == NAME
    assert one(services, "SELECT status FROM cases WHERE id = %s", other)["status"] == "failed"  # untouched

    # The other one gets an answer: rejected with a message the clinic receives as any decision.
    open_case(page, other)
    expect(page.locator("#failed-message")).to_have_value(re.compile("could not read the X-ray"))
    page.fill("#failed-message", "")
    page.click("#reject-failed")
    expect(page.locator(".message.error")).to_contain_text("Write a message for the clinic")
    page.fill("#failed-message", "The link to your X-ray did not work. Please upload the film itself.")
    page.click("#reject-failed")
    expect(page.locator(".message.success")).to_contain_text(f"Case #{other} rejected: the clinic will receive")
    expect(page.locator(".case-row")).to_have_count(0)
    expect(page.locator("#attention-count")).to_have_text("0")
    expect(page.locator(".decision-line")).to_contain_text("The link to your X-ray did not work")
    decided = one(services, "SELECT decision, reason, reviewer FROM review_decisions WHERE case_id = %s", other)
    assert decided == {"decision": "rejected", "reviewer": NAME,
                       "reason": "The link to your X-ray did not work. Please upload the film itself."}
    assert one(services, "SELECT count(*) AS n FROM jobs WHERE kind = 'notify' AND case_id = %s", other)["n"] == 1


def test_the_system_panel_points_at_stale_heartbeats_failed_jobs_and_deliveries(site: tuple, page: Any) -> None:
    from playwright.sync_api import expect

    base, services = site
    [case_id] = ready_cases(services, [("Vera Dias", 48)])
    with services.db.transaction() as conn:
        conn.execute("""INSERT INTO heartbeats (name, at)
                        VALUES ('sweeper:test-fresh', now()), ('worker:gone-host:7', now() - interval '20 minutes')""")
        job = jobs.enqueue(conn, JobKind.FETCH, case_id=case_id)
        conn.execute("UPDATE jobs SET status = 'failed', last_error = 'gave up', finished_at = now() WHERE id = %s",
                     (job.id,))
    sign_in(page, base)
    badge = page.locator("#system-open")
    expect(badge).to_have_class(re.compile(r"\balert\b"))
    expect(badge).to_contain_text("alert")

    badge.click()
    panel = page.locator("#system-panel")
    expect(panel).to_be_visible()
    expect(panel.locator('.beat[data-name="worker:gone-host:7"]')).to_have_class(re.compile(r"\bstale\b"))
    expect(panel.locator('.beat[data-name="worker:gone-host:7"]')).to_contain_text("20 min ago")
    expect(panel.locator('.beat[data-name="sweeper:test-fresh"]')).not_to_have_class(re.compile(r"\bstale\b"))
    expect(panel.locator('tr[data-kind="fetch"] td.bad')).to_have_text("1")
    expect(panel.locator("#system-problems")).to_contain_text("worker:gone-host:7 last reported")
    expect(panel.locator("#system-problems")).to_contain_text("1 fetch job failed for good")
    expect(panel.locator("#system-deliveries")).not_to_have_class(re.compile(r"\bbad\b"))
    shot(page, "system-panel")

    # A delivery fails for good: Refresh shows it.
    with services.db.transaction() as conn:
        conn.execute("UPDATE cases SET status = 'rejected' WHERE id = %s", (case_id,))
        conn.execute("""INSERT INTO jobs (kind, case_id, status, attempts, last_error, finished_at)
                        VALUES ('notify', %s, 'failed', 5, 'Jotform answered 401', now())""", (case_id,))
    page.click("#system-refresh")
    expect(panel.locator("#system-deliveries")).to_have_class(re.compile(r"\bbad\b"))
    expect(panel.locator("#system-deliveries")).to_contain_text("1 failed delivery")
    expect(panel.locator("#system-problems")).not_to_contain_text("catalog")

    # The catalog is emptied: the panel says so (before, it showed "System OK" with nothing to match against).
    with services.db.transaction() as conn:
        conn.execute("DELETE FROM match_results")
        conn.execute("DELETE FROM reference_images")
    page.click("#system-refresh")
    expect(panel.locator("#system-problems")).to_contain_text("The catalog is empty")
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    expect(page.locator("#counts")).to_contain_text("Notified")


def test_the_case_shows_its_access_history_and_its_patient_data_can_be_erased(site: tuple, page: Any) -> None:
    from playwright.sync_api import expect

    base, services = site
    kept, erased = ready_cases(services, [("Bruno Matos", 49), ("Carla Pinto", 50)])
    sign_in(page, base)
    open_case(page, erased)
    history = page.locator("details.history")
    audited = one(services, "SELECT count(*) AS n FROM audit_log WHERE case_id = %s", erased)["n"]
    expect(history.locator("summary")).to_have_text(f"Access history ({audited})")
    expect(history.locator(".history-list")).to_be_hidden()  # folded until asked for
    history.locator("summary").click()
    expect(history.locator(".history-list li").first).to_contain_text(f"{NAME} opened the case")

    page.click("#erase-open")
    typed = page.locator("#erase-confirm-input")
    expect(typed).to_be_focused()
    typed.fill(str(kept))  # another case's number does not unlock the button
    expect(page.locator("#erase-confirm")).to_be_disabled()
    typed.fill(str(erased))
    with services.db.transaction() as conn:
        files = 1 + len(set(findings.crop_keys_of_case(conn, erased)))  # the film and its implants' crops
    shot(page, "erase-confirm")
    page.click("#erase-confirm")
    expect(page.locator(".message.success")).to_contain_text(f"Case #{erased} erased: {files} file(s) deleted")
    expect(page.locator(".case-view .badge.erased")).to_have_text("erased")
    expect(page.locator(".erased-note")).to_contain_text("Patient data erased")
    expect(page.locator("#erase-open")).to_have_count(0)
    expect(row(page, erased).locator(".case-name")).to_have_text("No name")
    expect(page.locator(".history-list li").first).to_contain_text(f"{NAME} opened the case")
    expect(page.locator(".history-list")).to_contain_text(f"{NAME} erased the patient data")
    shot(page, "erased-case")

    case = one(services, "SELECT erased_at, erased_by, submitter_name FROM cases WHERE id = %s", erased)
    assert case["erased_at"] is not None and case["erased_by"] == NAME and case["submitter_name"] is None
    assert one(services, "SELECT count(*) AS n FROM case_images WHERE case_id = %s", erased)["n"] == 0
    assert one(services, "SELECT erased_at FROM cases WHERE id = %s", kept)["erased_at"] is None
