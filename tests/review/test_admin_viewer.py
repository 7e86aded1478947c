"""The admin page's film viewer in headless Chromium: zoom, window/level, compare, rulers in mm, keyboard, tablets."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest

from raiox.services import Services
from review.pages import ready_cases, shot, sign_in

SPACING_MM = (0.1, 0.1)  # row, column: a 600-pixel film is 60 mm tall


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


def film_case(services: Services, seed: int, spacing: tuple[float, float] | None = SPACING_MM) -> int:
    """A ready case whose one film has `spacing` (mm per pixel, row then column) as a DICOM file would give it."""
    (case_id,) = ready_cases(services, [("Sofia Matos", seed)])
    if spacing:
        with services.db.transaction() as conn:
            conn.execute("""UPDATE case_images SET pixel_spacing_row_mm = %s, pixel_spacing_col_mm = %s
                             WHERE case_id = %s""", (*spacing, case_id))
    return case_id


def open_film(page: Any, base: str, case_id: int) -> None:
    """Signs in: the only case in the queue opens by itself (clicking it would re-render the page under the test)."""
    sign_in(page, base)
    page.wait_for_selector(f'.case-view h2:text-is("Case #{case_id}")')
    page.wait_for_selector('.viewer-film[data-loaded="true"]')


def viewer(page: Any, pane: str = "film") -> dict[str, Any]:
    """A pane's view, transform and window/level as rendered."""
    return page.evaluate("""(pane) => {
      const root = document.querySelector(`.viewer-${pane}`);
      const func = root.querySelector('feFuncR');
      return {zoom: Number(root.dataset.zoom), view: root.dataset.view,
              label: root.querySelector('.pane-label').textContent,
              transform: root.querySelector('.film-layer').getAttribute('transform'),
              filter: root.querySelector('image').getAttribute('filter'),
              slope: Number(func.getAttribute('slope')), intercept: Number(func.getAttribute('intercept'))};
    }""", pane)


def on_screen(page: Any, x: float, y: float) -> tuple[float, float]:
    """Where the film's pixel (x, y) is in the page."""
    return tuple(page.evaluate("""([x, y]) => {
      const m = document.querySelector('.viewer-film .film-layer').getScreenCTM();
      return [m.a * x + m.c * y + m.e, m.b * x + m.d * y + m.f];
    }""", [x, y]))


def drag(page: Any, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=8)
    page.mouse.up()


def draw_ruler(page: Any, start: tuple[float, float], end: tuple[float, float]) -> None:
    """A ruler between two film pixels, drawn with the mouse."""
    drag(page, on_screen(page, *start), on_screen(page, *end))


def ruler_mm(page: Any, number: int) -> float:
    text = page.locator(".ruler-row .ruler-value").nth(number - 1).inner_text()
    match = re.fullmatch(r"([\d.]+) mm", text)
    assert match, text
    return float(match.group(1))


def mean_brightness(page: Any, selector: str) -> float:
    from PIL import Image, ImageStat

    picture = Image.open(io.BytesIO(page.locator(selector).screenshot())).convert("L")
    return ImageStat.Stat(picture).mean[0]


def no_violations(page: Any) -> None:
    assert page.evaluate("window.__violations") == []


def test_zoom_pan_window_level_invert_rotate_and_reset(site: tuple, page: Any) -> None:
    from playwright.sync_api import expect

    base, services = site
    open_film(page, base, film_case(services, 60))
    fitted = viewer(page)
    assert fitted["zoom"] == 1 and fitted["filter"] is None
    fitted_brightness = mean_brightness(page, ".viewer-film")

    box = page.locator(".viewer-film").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.4)
    page.mouse.wheel(0, -400)  # the wheel zooms in around the pointer
    expect(page.locator(".viewer-film")).not_to_have_attribute("data-zoom", "1.000")
    wheeled = viewer(page)
    assert wheeled["zoom"] > 1.5 and wheeled["transform"] != fitted["transform"]
    page.keyboard.press("+")
    assert viewer(page)["zoom"] == pytest.approx(wheeled["zoom"] * 1.25, rel=1e-3)
    expect(page.locator("#zoom-level")).to_have_text(f"{round(viewer(page)['zoom'] * 100)} %")
    before_pan = viewer(page)["view"]
    page.keyboard.press("ArrowLeft")
    assert viewer(page)["view"] != before_pan

    plain = mean_brightness(page, ".viewer-film")
    page.locator("#note").focus()
    page.locator(".viewer-film").click()  # a click on the film takes the keys away from the note
    page.keyboard.press("b")  # brighter (window level)
    expect(page.locator("#note")).to_have_value("")
    page.keyboard.press("x")  # more contrast (narrower window)
    adjusted = viewer(page)
    assert adjusted["filter"] == "url(#adjust-film)"
    assert adjusted["slope"] == pytest.approx(1.15) and adjusted["intercept"] == pytest.approx(0.5 - 0.575 + 0.05)
    page.fill("#brightness", "0.3")
    page.locator("#brightness").dispatch_event("input")
    assert viewer(page)["intercept"] == pytest.approx(0.5 - 0.575 + 0.3)
    assert mean_brightness(page, ".viewer-film") > plain + 20
    shot(page, "viewer-zoom-window-level")

    page.keyboard.press("0")
    page.keyboard.press("i")  # inverted: the dark film turns light
    inverted = viewer(page)
    assert inverted["slope"] == -1 and inverted["intercept"] == 1 and inverted["zoom"] == 1
    expect(page.locator("#invert")).to_have_attribute("aria-pressed", "true")
    assert mean_brightness(page, ".viewer-film") > fitted_brightness + 40
    page.keyboard.press("]")
    page.keyboard.press("h")
    assert viewer(page)["view"] == "1.000 0.0 0.0 90 flipX -"
    shot(page, "viewer-inverted-rotated")

    page.locator("#view-reset").click()
    reset = viewer(page)
    assert reset["view"] == "1.000 0.0 0.0 0 - -" and reset["filter"] is None
    assert reset["transform"] == fitted["transform"]
    assert abs(mean_brightness(page, ".viewer-film") - fitted_brightness) < 3
    no_violations(page)


def test_locked_compare_and_full_screen_compare_with_a_candidate_and_a_catalog_system(site: tuple, page: Any) -> None:
    from playwright.sync_api import expect

    base, services = site
    open_film(page, base, film_case(services, 61))
    page.keyboard.press("c")
    expect(page.locator('.compare .viewer[data-loaded="true"]')).to_have_count(2)
    expect(page.locator("#lock")).to_have_attribute("aria-pressed", "true")
    reference = page.locator(".viewer-ref")
    box = reference.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -300)  # zooming the reference zooms the film with it
    drag(page, (box["x"] + 100, box["y"] + 100), (box["x"] + 160, box["y"] + 130))
    film, ref = viewer(page, "film"), viewer(page, "ref")
    assert film["zoom"] > 1.3 and film["view"] == ref["view"]
    shot(page, "viewer-compare-locked")

    page.keyboard.press("l")  # unlocked, the pane last touched moves alone
    expect(page.locator("#lock")).to_have_attribute("aria-pressed", "false")
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -300)
    assert viewer(page, "ref")["zoom"] > viewer(page, "film")["zoom"] == film["zoom"]
    page.keyboard.press("l")

    page.keyboard.press("f")
    dialog = page.locator("#full-compare")
    expect(dialog).to_be_visible()
    expect(page.locator("#full-close")).to_be_focused()
    assert page.evaluate("document.querySelector('.sidebar').inert")  # modal: the page behind is out of reach
    page.keyboard.press("2")
    second = page.locator("#target-2")
    expect(second).to_have_attribute("aria-pressed", "true")
    expect(page.locator(".full-panes .viewer-ref .pane-label")).to_contain_text("Candidate 2")
    expect(page.locator('.full-panes .viewer[data-loaded="true"]')).to_have_count(2)
    assert viewer(page, "film")["view"] == viewer(page, "ref")["view"]
    shot(page, "viewer-full-candidate")

    page.keyboard.press("/")
    expect(page.locator("#full-search")).to_be_focused()
    page.keyboard.type("maker s12")
    page.locator("#full-results .catalog-item").first.click()
    expect(page.locator(".full-panes .viewer-ref .pane-label")).to_have_text("Catalog · Maker S12")
    page.wait_for_selector('.full-panes .viewer-ref[data-loaded="true"]')
    expect(second).to_have_attribute("aria-pressed", "false")
    expect(page.locator("#full-override")).to_contain_text("S12")
    shot(page, "viewer-full-catalog")

    page.keyboard.press("Escape")  # closes the compare, from the search field too
    expect(dialog).to_have_count(0)
    assert not page.evaluate("document.querySelector('.sidebar').inert")
    expect(page.locator('.xray-frame .viewer-film[data-loaded="true"]')).to_be_visible()
    no_violations(page)


def test_a_ruler_reads_mm_from_the_pixel_spacing_and_marks_the_candidates_whose_sizes_disagree(
        site: tuple, page: Any) -> None:
    from playwright.sync_api import expect

    base, services = site
    case_id = film_case(services, 62)
    with services.db.transaction() as conn:
        ranked = conn.execute("""SELECT rank, implant_id FROM match_results
                                   JOIN case_images ON case_images.id = case_image_id
                                  WHERE case_id = %s ORDER BY rank""", (case_id,)).fetchall()
        for row in ranked:  # candidate 2 is sold only in short lengths; the others fit a 30 mm measurement
            length = (8.0, 11.5) if row["rank"] == 2 else (28.0, 32.0)
            conn.execute("""UPDATE implants SET length_min_mm = %s, length_max_mm = %s, diameter_min_mm = 3.5,
                                   diameter_max_mm = 5.0 WHERE id = %s""", (*length, row["implant_id"]))
    open_film(page, base, case_id)
    expect(page.locator("#scale-status")).to_contain_text("0.1 × 0.1 mm per pixel")
    expect(page.locator(".candidate").nth(1).locator(".sizes")).to_have_text("Ø 3.5–5 mm · L 8–11.5 mm")

    page.locator("#tool-ruler").click()
    draw_ruler(page, (150, 100), (150, 400))  # 300 rows of 0.1 mm
    assert ruler_mm(page, 1) == pytest.approx(30.0, abs=0.3)
    expect(page.locator(".viewer-film .ruler-label")).to_have_text(re.compile(r"^1: (29\.[7-9]|30\.[0-3]) mm$"))
    page.locator("#tool-pan").click()
    page.locator(".ruler-row .size-length").click()
    expect(page.locator(".ruler-row .size-length")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#size-summary")).to_contain_text("length 30")
    expect(page.locator('.candidate[data-rank="2"]')).to_have_class(re.compile(r"\bsize-outside\b"))
    expect(page.locator('.candidate[data-rank="2"] .sizes')).to_contain_text("is outside 8–11.5 mm")
    for rank in (1, 3):
        expect(page.locator(f'.candidate[data-rank="{rank}"]')).to_have_class(re.compile(r"\bsize-within\b"))

    page.keyboard.press("=")  # zoomed in, the ruler stays on the same pixels and reads the same
    page.locator("#tool-ruler").click()
    draw_ruler(page, (100, 300), (140, 300))  # 40 columns: 4 mm, a diameter within 3.5–5
    assert ruler_mm(page, 1) == pytest.approx(30.0, abs=0.3)
    assert ruler_mm(page, 2) == pytest.approx(4.0, abs=0.2)
    page.locator(".ruler-row .size-diameter").nth(1).click()
    expect(page.locator('.candidate[data-rank="1"]')).to_have_class(re.compile(r"\bsize-within\b"))
    shot(page, "viewer-ruler-mm-size-check")
    page.locator(".ruler-row .ruler-delete").first.click()
    expect(page.locator(".ruler-row")).to_have_count(1)
    # Without the length only the diameter counts, and every candidate's diameter range takes 4 mm.
    expect(page.locator('.candidate[data-rank="2"]')).to_have_class(re.compile(r"\bsize-within\b"))
    no_violations(page)


def test_calibration_from_a_known_length_entered_by_the_reviewer(site: tuple, page: Any) -> None:
    from playwright.sync_api import expect

    base, services = site
    open_film(page, base, film_case(services, 63, spacing=None))
    expect(page.locator("#scale-status")).to_contain_text("No scale yet")
    page.locator("#tool-calibrate").click()
    draw_ruler(page, (200, 100), (200, 500))  # 400 pixels said to be 12 mm
    expect(page.locator(".ruler-row .ruler-value")).to_have_text(re.compile(r"^(39[89]|40[012]) px$"))
    expect(page.locator("#calibrate-mm")).to_be_focused()
    page.keyboard.type("12")
    page.keyboard.press("Enter")
    expect(page.locator("#calibrate-mm")).to_have_count(0)
    expect(page.locator(".ruler-row .ruler-value")).to_have_text("12.0 mm")
    expect(page.locator("#scale-status")).to_contain_text("ruler 1 is 12 mm")
    expect(page.locator(".viewer-film .ruler.calibration")).to_have_count(1)
    expect(page.locator("#tool-ruler")).to_have_attribute("aria-pressed", "true")

    draw_ruler(page, (100, 250), (100, 450))  # half as long: 6 mm
    assert ruler_mm(page, 2) == pytest.approx(6.0, abs=0.15)
    shot(page, "viewer-calibration")
    page.locator("#calibration-clear").click()
    expect(page.locator(".ruler-row .ruler-value").nth(1)).to_have_text(re.compile(r"^\d+ px$"))
    no_violations(page)


def test_everything_from_the_keyboard(site: tuple, page: Any) -> None:
    from playwright.sync_api import expect

    base, services = site
    open_film(page, base, film_case(services, 64))
    page.keyboard.press("m")  # a ruler across the middle; its end has the focus
    handle = page.locator('.viewer-film .ruler-handle[data-end="b"]')
    expect(handle).to_be_focused()
    start = ruler_mm(page, 1)
    for _ in range(5):
        page.keyboard.press("Shift+ArrowRight")  # 10 film pixels each: 50 × 0.1 mm
    expect(page.locator(".ruler-row .ruler-value")).not_to_have_text(f"{start:.1f} mm")  # once the keys rest
    assert ruler_mm(page, 1) == pytest.approx(start + 5.0, abs=0.11)
    expect(handle).to_be_focused()

    page.locator("#ruler-1-length").focus()  # Tab order reaches the ruler's row…
    page.keyboard.press("Enter")
    expect(page.locator("#ruler-1-length")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#ruler-1-length")).to_be_focused()  # …and keeps the focus through the re-render
    page.keyboard.press("Tab")
    expect(page.locator("#ruler-1-diameter")).to_be_focused()

    page.locator("#zoom-in").focus()
    page.keyboard.press("Enter")
    assert viewer(page)["zoom"] == pytest.approx(1.25)
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")  # zoom-in → reset → rotate left
    expect(page.locator("#rotate-left")).to_be_focused()
    page.keyboard.press("Enter")
    assert viewer(page)["view"].split()[3] == "270"
    page.keyboard.press("f")
    expect(page.locator("#full-close")).to_be_focused()
    page.keyboard.press("3")
    expect(page.locator("#target-3")).to_have_attribute("aria-pressed", "true")
    page.keyboard.press("Escape")
    expect(page.locator("#full-compare")).to_have_count(0)
    handle = page.locator('.viewer-film .ruler-handle[data-end="a"]')
    handle.focus()
    page.keyboard.press("Delete")
    expect(page.locator(".ruler-row")).to_have_count(0)
    no_violations(page)


@pytest.mark.parametrize("size", [(1024, 768), (768, 1024)], ids=["landscape", "portrait"])
def test_the_tools_fit_a_tablet_and_a_pinch_zooms(site: tuple, browser: Any, size: tuple[int, int]) -> None:
    from playwright.sync_api import expect

    base, services = site
    case_id = film_case(services, 65)
    width, height = size
    context = browser.new_context(viewport={"width": width, "height": height}, has_touch=True, is_mobile=True)
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        open_film(page, base, case_id)
        film = page.locator(".xray-frame .viewer-film").bounding_box()
        assert film["width"] >= 0.6 * width and film["height"] >= 300  # the film keeps a usable size
        for tool in ("#zoom-in", "#zoom-out", "#view-reset", "#invert", "#tool-ruler", "#brightness", "#full-open"):
            box = page.locator(tool).bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= width, tool
            assert box["height"] >= 24 or tool == "#brightness", tool
        assert page.evaluate("document.documentElement.scrollWidth") <= width  # no sideways scrolling

        # Two fingers moving apart on the film zoom it in (touch pointers, as a tablet sends them).
        page.evaluate("""() => {
          const canvas = document.querySelector('.viewer-film .viewer-canvas');
          const box = canvas.getBoundingClientRect();
          const cx = box.left + box.width / 2, cy = box.top + box.height / 2;
          const send = (type, id, dx) => canvas.dispatchEvent(new PointerEvent(type, {pointerId: id,
            pointerType: 'touch', isPrimary: id === 1, clientX: cx + dx, clientY: cy, bubbles: true,
            cancelable: true}));
          send('pointerdown', 1, -40); send('pointerdown', 2, 40);
          for (let step = 1; step <= 5; step++) {
            send('pointermove', 1, -40 - step * 12); send('pointermove', 2, 40 + step * 12);
          }
          send('pointerup', 1, -100); send('pointerup', 2, 100);
        }""")
        assert viewer(page)["zoom"] == pytest.approx(2.5, rel=0.02)  # 80 → 200 pixels apart
        page.locator("#tool-ruler").tap()
        draw_ruler(page, (200, 260), (200, 340))  # near the middle, where the zoom went
        assert ruler_mm(page, 1) == pytest.approx(8.0, abs=0.1)
        shot(page, f"viewer-tablet-{width}x{height}")

        page.locator("#full-open").tap()
        panes = page.locator(".full-panes .viewer")
        expect(panes).to_have_count(2)
        first, second = panes.nth(0).bounding_box(), panes.nth(1).bounding_box()
        if width < height:
            assert second["y"] >= first["y"] + first["height"] - 1  # stacked in portrait
        else:
            assert second["x"] >= first["x"] + first["width"] - 1  # side by side in landscape
        assert min(first["height"], second["height"]) >= 200
        expect(page.locator("#full-close")).to_be_in_viewport()
        shot(page, f"viewer-tablet-full-{width}x{height}")
    finally:
        context.close()
