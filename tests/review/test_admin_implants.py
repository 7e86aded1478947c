"""The admin page per implant in headless Chromium: a chip and an outline per implant found, each implant's own
candidates and decision, the warning when no implant stood out, the reference crops and the shape table."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest

from raiox.embed.worker import run_embed_jobs
from raiox.services import Services
from raiox.tools.implant_designs import SceneOptions, random_systems
from raiox.tools.render import render_film
from review.pages import NAME, shot, sign_in
from support import submit_case

# One implant of a random system beside one neighbour, on a plain lower-jaw film stored as an 8-bit PNG.
PAIR = SceneOptions(neighbours=1, upper_jaw=False, restoration="none", photographed=False, quarter_turns=0,
                    mirrored=False, bits=8, jpeg_quality=0)
PAIR_SEED = 4  # the canonicaliser finds exactly two implants on this film


@pytest.fixture
def page(browser: Any) -> Any:
    """A page that records Content-Security-Policy violations in `window.__violations`."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(20_000)
    opened.add_init_script("window.__violations = [];"
                           "document.addEventListener('securitypolicyviolation', e => "
                           "window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));")
    yield opened
    context.close()


def ready_case(services: Services, submission_id: str, film: bytes) -> int:
    case_id = submit_case(services, submission_id, [film])
    run_embed_jobs(services)
    return case_id


def film_without_metal() -> bytes:
    """A dark film with a soft gradient and grain: nothing on it is bright enough to be metal."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(5)
    film = 70 + 30 * np.linspace(0, 1, 480)[None, :] + rng.normal(0, 8, size=(600, 480))
    out = io.BytesIO()
    Image.fromarray(np.clip(film, 0, 255).astype(np.uint8), mode="L").save(out, format="PNG")
    return out.getvalue()


def rows(services: Services, query: str, *params: Any) -> list[dict[str, Any]]:
    with services.db.transaction() as conn:
        return conn.execute(query, params).fetchall()


def ranked(services: Services, case_id: int) -> dict[int, list[dict[str, Any]]]:
    """Per implant position, the candidates as the embed step ranked them (system, implant id, similarity)."""
    found: dict[int, list[dict[str, Any]]] = {}
    for row in rows(services, """SELECT finding_position, rank, implant_id, system, similarity
                                   FROM match_results JOIN case_images ON case_images.id = case_image_id
                                   JOIN implants ON implants.id = implant_id
                                  WHERE case_id = %s AND match_results.model_id = case_images.model_id
                                  ORDER BY finding_position, rank""", case_id):
        found.setdefault(row["finding_position"], []).append(row)
    return found


def shows_candidates(page: Any, listed: list[dict[str, Any]]) -> None:
    """The candidate cards on screen are `listed`'s systems in order, each with its similarity to 3 decimals (the
    page rounds what the API sent: a value half-way between two thousandths may come out either side)."""
    shown = page.evaluate("""() => [...document.querySelectorAll('.candidate')].map(card => [
      card.querySelector('.system').textContent, card.querySelector('.sim').textContent.replace('similarity ', '')])""")
    assert [system for system, _ in shown] == [row["system"] for row in listed]
    assert [float(similarity) for _, similarity in shown] == pytest.approx(
        [float(row["similarity"]) for row in listed], abs=1e-3)


def outline_fits_its_box(page: Any, position: int) -> None:
    """The outline of implant `position` covers, on screen, its box's corners mapped through the film's view."""
    geometry = page.evaluate("""(position) => {
      const outline = document.querySelector(`.viewer-film .film-layer .implant-outline[data-implant="${position}"]`);
      const m = document.querySelector('.viewer-film .film-layer').getScreenCTM();
      const points = Array.from({length: outline.points.numberOfItems}, (_, i) => outline.points.getItem(i));
      const corners = points.map(p => [m.a * p.x + m.c * p.y + m.e, m.b * p.x + m.d * p.y + m.f]);
      const box = outline.getBoundingClientRect();
      return {corners, box: [box.left, box.top, box.right, box.bottom]};
    }""", position)
    xs = [x for x, _ in geometry["corners"]]
    ys = [y for _, y in geometry["corners"]]
    left, top, right, bottom = geometry["box"]
    assert right - left > 10 and bottom - top > 10
    for drawn, mapped in ((left, min(xs)), (top, min(ys)), (right, max(xs)), (bottom, max(ys))):
        assert drawn == pytest.approx(mapped, abs=3)


def no_violations(page: Any) -> None:
    assert page.evaluate("window.__violations") == []


def test_each_implant_has_a_chip_an_outline_and_its_own_candidates_and_the_decision_names_it(
        site: tuple, page: Any) -> None:
    from playwright.sync_api import expect

    base, services = site
    design = random_systems(1, seed=PAIR_SEED)[0]
    case_id = ready_case(services, "two-implants", render_film(design, PAIR_SEED, PAIR)[0])
    found = rows(services, """SELECT image_findings.position, found, summary FROM image_findings
                                JOIN case_images ON case_images.id = case_image_id
                               WHERE case_id = %s ORDER BY image_findings.position""", case_id)
    assert [(row["position"], row["found"]) for row in found] == [(0, True), (1, True)]
    (image,) = rows(services, "SELECT id FROM case_images WHERE case_id = %s", case_id)
    lists = ranked(services, case_id)
    assert sorted(lists) == [0, 1] and all(len(listed) == 3 for listed in lists.values())
    # The rank whose system differs between the two implants: approving it tells which implant was meant.
    rank = next(r for r in (1, 2, 3) if lists[0][r - 1]["implant_id"] != lists[1][r - 1]["implant_id"])
    # What the shape encoder read (open_clip models, as in tests, read nothing): thread forms that disagree.
    read = {"values": {"thread_profile": "square", "apex": "round", "connection": "conical", "thread_leads": 2,
                       "microthreads": True, "apex_vent": False, "taper": 0.12}, "confidence": {"thread_profile": 0.91}}
    with services.db.transaction() as conn:
        conn.execute("""UPDATE image_findings SET summary = jsonb_set(summary, '{read}', %s::jsonb)
                         WHERE position = 1 AND case_image_id = %s""", (json.dumps(read), image["id"]))
        conn.execute("""UPDATE reference_images SET summary = jsonb_set(summary, '{read}', %s::jsonb)
                         WHERE id = (SELECT reference_image_id FROM match_results WHERE case_image_id = %s
                                        AND finding_position = 1 AND rank = %s)""",
                     (json.dumps({"values": {**read["values"], "thread_profile": "v"}, "confidence": {}}),
                      image["id"], rank))

    sign_in(page, base)  # the only case opens by itself
    page.wait_for_selector(f'.case-view h2:text-is("Case #{case_id}")')
    page.wait_for_selector('.viewer-film[data-loaded="true"]')
    chips = page.locator(".implant-chip")
    expect(chips).to_have_count(2)
    expect(chips.nth(0)).to_contain_text("Implant 1")
    expect(chips.nth(1)).to_contain_text("Implant 2")
    expect(chips.nth(0)).to_have_attribute("aria-pressed", "true")
    page.wait_for_function("() => [...document.querySelectorAll('.implant-thumb img, .thumb img')]"
                           ".every(i => i.complete && i.naturalWidth)")
    assert page.evaluate("[...document.querySelectorAll('.implant-thumb img')].map(i => i.naturalHeight)") == [256, 256]
    outlines = page.locator(".viewer-film .film-layer .implant-outline")
    expect(outlines).to_have_count(2)
    expect(page.locator(".viewer-film .implant-outline.selected")).to_have_attribute("data-implant", "0")
    expect(page.locator(".viewer-film .implant-label")).to_have_text(["2", "1"])  # the selected one drawn last
    shows_candidates(page, lists[0])
    expect(page.locator("#no-implant")).to_have_count(0)
    outline_fits_its_box(page, 0)
    shot(page, "implants-first")

    page.keyboard.press("2")
    expect(page.locator('.candidate[data-rank="2"]')).to_have_class(re.compile(r"\bselected\b"))
    page.keyboard.press("u")  # outlines off and on again
    expect(outlines).to_have_count(0)
    expect(page.locator("#outlines")).to_have_attribute("aria-pressed", "false")
    page.locator("#outlines").click()
    expect(outlines).to_have_count(2)

    chips.nth(1).click()  # the second implant: its candidates, the rank back to 1
    expect(chips.nth(1)).to_have_attribute("aria-pressed", "true")
    expect(chips.nth(0)).to_have_attribute("aria-pressed", "false")
    expect(page.locator(".viewer-film .implant-outline.selected")).to_have_attribute("data-implant", "1")
    expect(page.locator('.candidate[data-rank="1"]')).to_have_class(re.compile(r"\bselected\b"))
    shows_candidates(page, lists[1])
    assert [row["implant_id"] for row in lists[1]] != [row["implant_id"] for row in lists[0]]
    page.keyboard.press("n")  # N cycles: back to the first, Shift+N the other way
    expect(chips.nth(0)).to_have_attribute("aria-pressed", "true")
    shows_candidates(page, lists[0])
    page.keyboard.press("Shift+N")
    expect(chips.nth(1)).to_have_attribute("aria-pressed", "true")

    page.keyboard.press("]")  # the outlines follow the view: turned, flipped and zoomed
    page.keyboard.press("v")
    page.keyboard.press("+")
    outline_fits_its_box(page, 1)
    outline_fits_its_box(page, 0)
    shot(page, "implants-second-turned")
    page.keyboard.press("0")

    page.keyboard.press("f")  # the full-screen compare is about the selected implant too
    expect(page.locator("#full-compare h2")).to_contain_text("Implant 2")
    expect(page.locator(".full-panes .viewer-film .implant-outline")).to_have_count(2)
    expect(page.locator("#full-compare .target")).to_have_count(3)
    expect(page.locator("#target-1")).to_contain_text(lists[1][0]["system"])
    page.keyboard.press("Escape")
    expect(page.locator("#full-compare")).to_have_count(0)

    page.keyboard.press(str(rank))
    table = page.locator("#shape-table")
    expect(table).to_be_visible()
    expect(table.locator("thead th").nth(2)).to_have_text(f"{lists[1][rank - 1]['system']} (reference)")
    for key in ("thread_form", "pitch", "depth", "collar", "taper", "apex", "vent", "connection", "microthreads",
                "leads"):
        expect(table.locator(f'tr[data-row="{key}"]')).to_have_count(1)
    thread_form = table.locator('tr[data-row="thread_form"]')
    expect(thread_form.locator("td").nth(0)).to_have_text("read square (91 %)")
    expect(thread_form.locator("td").nth(1)).to_have_text("read v")
    expect(thread_form).to_have_class(re.compile(r"\bdiffers\b"))
    expect(table.locator('tr[data-row="leads"]')).not_to_have_class(re.compile(r"\bdiffers\b"))
    measured = found[1]["summary"]["measured"]
    expect(table.locator('tr[data-row="pitch"] td').nth(0)).to_contain_text(f"{measured['pitch_per_diameter']:.3f}")
    expect(table.locator("caption")).to_contain_text("outer diameter")
    shot(page, "implants-shape-table")

    with page.expect_request(lambda request: request.method == "POST" and request.url.endswith("/decision")) as sent:
        page.keyboard.press("a")
    assert sent.value.post_data_json == {"action": "approve", "rank": rank, "image_id": image["id"], "implant": 1}
    expect(page.locator(".message.success")).to_contain_text(f"Case #{case_id} approved as")
    (decision,) = rows(services, "SELECT * FROM review_decisions WHERE case_id = %s", case_id)
    assert decision["decision"] == "approved" and decision["chosen_rank"] == rank and decision["reviewer"] == NAME
    assert decision["implant_id"] == lists[1][rank - 1]["implant_id"] != lists[0][rank - 1]["implant_id"]

    page.locator("#tab-decided").click()  # decided, the case opens on the implant whose candidate was approved
    page.locator(f'.case-row[data-case-id="{case_id}"]').click()
    page.wait_for_selector(f'.case-view h2:text-is("Case #{case_id}")')
    expect(chips.nth(1)).to_have_attribute("aria-pressed", "true")
    expect(page.locator(".candidate.selected")).to_have_attribute("data-rank", str(rank))
    no_violations(page)


def test_a_film_without_metal_warns_that_the_whole_film_was_compared(site: tuple, page: Any) -> None:
    from playwright.sync_api import expect

    base, services = site
    case_id = ready_case(services, "no-metal", film_without_metal())
    found = rows(services, """SELECT found FROM image_findings JOIN case_images ON case_images.id = case_image_id
                               WHERE case_id = %s""", case_id)
    assert [row["found"] for row in found] == [False]

    with page.expect_response(lambda response: response.url.endswith(f"/cases/{case_id}")) as opened:
        sign_in(page, base)
    detail = opened.value.json()
    page.wait_for_selector('.viewer-film[data-loaded="true"]')
    warning = page.locator("#no-implant")
    expect(warning).to_have_text("No implant stood out on this X-ray: the whole film was compared. Check the "
                                 "candidates carefully, or pick from the catalog.")
    expect(page.locator(".implant-chip")).to_have_count(1)
    expect(page.locator(".implant-chip")).to_contain_text("whole film")
    expect(page.locator(".viewer-film .implant-outline")).to_have_count(0)  # the fallback is no implant to outline
    expect(page.locator("#outlines")).to_have_count(0)
    expect(page.locator(".candidate")).to_have_count(3)
    assert warning.bounding_box()["y"] < page.locator(".candidate").first.bounding_box()["y"]  # above them
    # Each card shows its reference's straightened implant, not the reference film.
    candidates = detail["images"][0]["implants"][0]["candidates"]
    assert all(c["reference_crop_url"] and c["reference_crop_url"] != c["reference_url"] for c in candidates)
    assert page.evaluate("[...document.querySelectorAll('.thumb img')].map(i => i.getAttribute('src'))") == [
        c["reference_crop_url"] for c in candidates]
    page.wait_for_function("() => [...document.querySelectorAll('.thumb img')]"
                           ".every(i => i.complete && i.naturalWidth)")
    expect(page.locator("#shape-table")).to_have_count(0)  # the whole film's measurements are no implant's
    shot(page, "implants-none-found")

    with page.expect_request(lambda request: request.method == "POST" and request.url.endswith("/decision")) as sent:
        page.keyboard.press("a")
    assert sent.value.post_data_json == {"action": "approve", "rank": 1, "image_id": detail["images"][0]["id"],
                                         "implant": 0}
    expect(page.locator(".message.success")).to_contain_text(f"Case #{case_id} approved as")
    no_violations(page)
