"""The admin page served by approve: its files with their types, an ETag, a strict CSP that lets only object
storage add images, and a page with nothing inline for that CSP to block (checked in Chromium too)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raiox.embed.worker import run_embed_jobs
from raiox.review import accounts
from raiox.review.admin_page import FILES, FOLDERS
from raiox.review.http import handle
from raiox.services import Services
from raiox.settings import Settings
from raiox.web.http import HttpRequest, HttpResponse
from support import REPO, make_xray, submit_case

ADMIN = REPO / "admin"
SPACES = {"raiox_storage": "s3://raiox-xrays", "spaces_endpoint": "https://fra1.digitaloceanspaces.com",
          "spaces_region": "fra1", "spaces_key": "key-id", "spaces_secret": "secret-key"}


@pytest.fixture
def approve(tmp_path: Path) -> Iterator[Services]:
    """approve as deployed: Spaces storage (presigning needs no network) and no database call on these paths."""
    with Services(Settings.given(raiox_home=tmp_path, **SPACES)) as services:
        yield services


def _get(services: Services, path: str, **headers: str) -> HttpResponse:
    return handle(HttpRequest(method="GET", path=path, headers=headers), services)


def _directives(policy: str) -> dict[str, list[str]]:
    return {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}


def test_each_file_with_its_type_and_a_strict_policy(approve: Services) -> None:
    for name, content_type in FILES.items():
        answer = _get(approve, f"/admin/{name}")
        assert answer.status == 200 and answer.body == (ADMIN / name).read_text(encoding="utf-8")
        assert answer.headers["Content-Type"] == content_type
        assert answer.headers["Cache-Control"] == "no-cache" and answer.headers["X-Content-Type-Options"] == "nosniff"
        policy = _directives(answer.headers["Content-Security-Policy"])
        assert policy == {
            "default-src": ["'none'"], "script-src": ["'self'"], "style-src": ["'self'"],
            "img-src": ["'self'", "https://raiox-xrays.fra1.digitaloceanspaces.com"], "connect-src": ["'self'"],
            "frame-ancestors": ["'none'"], "base-uri": ["'none'"], "form-action": ["'none'"]}
    assert _get(approve, "/cases").headers["Cache-Control"] == "no-store"  # the API stays uncached (and 401s)


def test_revalidation_redirects_and_nothing_else(approve: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _get(approve, "/admin/js/main.js")
    again = _get(approve, "/admin/js/main.js", **{"if-none-match": first.headers["ETag"]})
    assert again.status == 304 and not again.body
    assert _get(approve, "/admin/").headers["Location"] == "index.html"
    assert _get(approve, "/admin").headers["Location"] == "admin/index.html"
    monkeypatch.setenv("__OW_ACTION_NAME", "/fn-1234/raiox/approve")  # what DigitalOcean's runtime sets
    assert _get(approve, "/admin").headers["Location"] == "/api/v1/web/fn-1234/raiox/approve/admin/index.html"
    for path in ("/admin/config.js", "/admin/../http.py", "/admin/%2e%2e/accounts.py", "/admin/index.html/x",
                 "/admin/app.js", "/admin/main.js", "/admin/js", "/admin/js/", "/admin/js/config.js",
                 "/admin/js/../index.html", "/admin/js/%2e%2e/style.css", "/admin/js/main.js/x",
                 "/admin/css/style.css"):
        assert _get(approve, path).status == 404, path
    answer = handle(HttpRequest(method="POST", path="/admin/index.html"), approve)
    assert answer.status == 405


class _CannotPresign:
    def presigned_url(self, key: str, expires_in: int) -> str:
        raise RuntimeError("no credentials")


def test_a_store_that_cannot_presign_still_serves_the_page(tmp_path: Path) -> None:
    with Services(Settings.given(raiox_home=tmp_path), store=_CannotPresign()) as services:
        answer = _get(services, "/admin/index.html")
    assert answer.status == 200
    assert _directives(answer.headers["Content-Security-Policy"])["img-src"] == ["'self'"]


def _modules() -> dict[str, str]:
    """Every script of the page by its path under admin/ (js/main.js and the modules it imports)."""
    return {str(path.relative_to(ADMIN)): path.read_text() for path in sorted(ADMIN.glob("js/*.js"))}


def test_the_files_need_nothing_a_strict_policy_blocks() -> None:
    """No inline script, style or event handler, no eval, no HTML strings: with `script-src 'self'` and
    `style-src 'self'` any of them would silently break the page."""
    html = (ADMIN / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html) and "<style" not in html
    assert not re.search(r"\s(on\w+|style)\s*=", html, re.I)
    assert set(re.findall(r'(?:src|href)="([^"]+)"', html)) == {"style.css", "js/main.js"}
    assert re.findall(r"<script[^>]*>", html) == ['<script type="module" src="js/main.js">']
    modules = _modules()
    assert len(modules) > 1 and "js/main.js" in modules
    for name, script in modules.items():
        for blocked in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                        '"style"', ".style.", "cssText"):
            assert blocked not in script, (name, blocked)
    assert sorted(str(path.relative_to(ADMIN)) for path in ADMIN.rglob("*") if path.is_file()) == sorted(FILES)
    assert FOLDERS[1] == ADMIN


def test_the_script_is_small_modules_each_importing_what_another_exports() -> None:
    """js/main.js reaches every module through static imports of files approve serves, each name imported is
    exported where it comes from (else the browser refuses the whole page), and no module grows past ~400 lines
    or goes without the line that says what belongs in it."""
    modules = _modules()
    reached, todo = set(), ["js/main.js"]
    while todo:
        name = todo.pop()
        reached.add(name)
        script = modules[name]
        assert re.match(r"// \S.+\n\n", script), name
        assert len(script.splitlines()) <= 400, (name, len(script.splitlines()))
        for names, source in re.findall(r"^import \{([^}]*)\} from \"\./([\w-]+\.js)\";$", script, re.M):
            target = f"js/{source}"
            assert target in FILES and target in modules, (name, source)
            for imported in re.split(r",\s*", names.strip().rstrip(",")):
                declared = rf"^export (?:const|let|class|(?:async )?function) {re.escape(imported)}(?![\w$])"
                assert re.search(declared, modules[target], re.M), (name, imported, source)
            if target not in reached:
                todo.append(target)
        assert len(re.findall(r"^import ", script, re.M)) == len(re.findall(r"^import \{[^}]*\} from \"\./", script,
                                                                            re.M)), name
    assert reached == set(modules)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    executable = Path("/usr/bin/chromium") if Path("/usr/bin/chromium").exists() else shutil.which("chromium")
    if not executable:
        pytest.fail("Chromium is not installed (/usr/bin/chromium): `make test` installs it", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(executable),
                                             args=["--headless", "--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


def test_the_page_runs_under_its_policy_in_chromium(chromium: Any, dev_server: tuple, catalogued: Services) -> None:
    """`raiox dev`'s /admin/ leads to the page approve serves; signed in, a case with its X-ray and references
    opens with no policy violation, and the API is found from the page's own address."""
    base, _ = dev_server
    accounts.add_reviewer(catalogued, "csp.reviewer", "a password for csp")
    case_id = submit_case(catalogued, "csp-1", [make_xray(51, size=(320, 400))])
    run_embed_jobs(catalogued)
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.add_init_script("window.__violations = [];"
                         "document.addEventListener('securitypolicyviolation', e => "
                         "window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));")
    try:
        answer = page.goto(f"{base}/admin/")
        assert page.url == f"{base}/api/v1/web/raiox/approve/admin/index.html"
        assert "script-src 'self'" in answer.headers["content-security-policy"]
        page.fill("#login-name", "csp.reviewer")
        page.fill("#login-password", "a password for csp")
        page.click("#login-submit")
        page.wait_for_selector(f'.case-view h2:text-is("Case #{case_id}")')
        page.wait_for_selector('.viewer-film[data-loaded="true"]')
        page.wait_for_function("() => [...document.querySelectorAll('.thumb img')].every(i => i.naturalWidth)")
        assert page.evaluate("getComputedStyle(document.querySelector('.topbar')).display") == "flex"  # styled
        assert page.evaluate("window.__violations") == []
    finally:
        context.close()
