"""Helpers for the admin page's browser tests: ready cases, signing in, opening a case, screenshots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raiox.embed.worker import run_embed_jobs
from raiox.services import Services
from support import REPO, make_xray, submit_case

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = REPO / "test-output" / "screenshots"
NAME = "ines.reviewer"
PASSWORD = "browser test password"
VIEWPORT = {"width": 1440, "height": 900}


def ready_cases(services: Services, people: list[tuple[str, int]]) -> list[int]:
    """One ready case per (submitter name, X-ray seed), oldest first."""
    ids = []
    for number, (name, seed) in enumerate(people):
        case_id = submit_case(services, f"browser-{number}-{seed}", [make_xray(seed, size=(480, 600))])
        with services.db.transaction() as conn:
            conn.execute("UPDATE cases SET submitter_name = %s WHERE id = %s", (name, case_id))
        ids.append(case_id)
    run_embed_jobs(services)
    return ids


def one(services: Services, query: str, *params: Any) -> dict[str, Any]:
    with services.db.transaction() as conn:
        rows = conn.execute(query, params).fetchall()
    assert len(rows) == 1, rows
    return rows[0]


def sign_in(page: Any, base: str) -> None:
    page.goto(f"{base}/admin/")
    page.fill("#login-name", NAME)
    page.fill("#login-password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_selector("#app:not([hidden])")


def row(page: Any, case_id: int) -> Any:
    return page.locator(f'.case-row[data-case-id="{case_id}"]')


def open_case(page: Any, case_id: int) -> None:
    # Wait for the click's own answer: the page may already show this case (it opens the first one by itself).
    path = f"/cases/{case_id}"
    with page.expect_response(lambda r: r.request.method == "GET" and r.url.split("?")[0].endswith(path)):
        row(page, case_id).click()
    page.wait_for_selector(f'.case-view h2:text-is("Case #{case_id}")')


def shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
