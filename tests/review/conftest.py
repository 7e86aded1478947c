"""Fixtures of the admin page's browser tests: Debian's Chromium, a page, and `raiox dev` with a reviewer."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from raiox.review import accounts
from raiox.services import Services
from review.pages import CHROMIUM, NAME, PASSWORD, VIEWPORT


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright. Missing Chromium fails the tests (never skips them)."""
    if not CHROMIUM.exists() and not shutil.which("chromium"):
        pytest.fail("Chromium is not installed (/usr/bin/chromium): `make test` installs it, or run "
                    "`apt-get update && apt-get install -y chromium`", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium")),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport=VIEWPORT)
    opened = context.new_page()
    opened.set_default_timeout(20_000)
    yield opened
    context.close()


@pytest.fixture
def site(dev_server: tuple, catalogued: Services) -> tuple[str, Services]:
    base, _ = dev_server
    accounts.add_reviewer(catalogued, NAME, PASSWORD)
    return base, catalogued
