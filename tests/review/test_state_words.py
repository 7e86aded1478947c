"""One word per state: the admin page's labels, the API's values and docs/review.md#states say the same word for
each case status and each delivery state (before, the page said "Delivered" for `notified`)."""

from __future__ import annotations

import re

from raiox.models import CaseStatus
from raiox.review.queue import DELIVERY_STATES
from support import REPO

APP = "\n".join(path.read_text() for path in sorted((REPO / "admin" / "js").glob("*.js")))  # every module
REVIEW_DOC = (REPO / "docs" / "review.md").read_text()
PROCESSING = {CaseStatus.RECEIVED, CaseStatus.EMBEDDING}  # the page counts these two together as "processing"


def _js_constant(name: str) -> str:
    match = re.search(rf"^(?:export )?const {name} = (.+?);$", APP, flags=re.M | re.S)
    assert match, name
    return match.group(1)


def test_the_page_labels_each_case_status_with_its_own_word() -> None:
    labels = dict(re.findall(r'\["(\w+)", "([^"]+)"\]', _js_constant("STATUS_LABELS")))
    expected = {str(status): str(status).capitalize() for status in CaseStatus if status not in PROCESSING}
    assert labels == {**expected, "processing": "Processing"}


def test_the_page_labels_each_delivery_state_the_api_gives() -> None:
    labels = dict(re.findall(r'(\w+): "([^"]+)"', _js_constant("DELIVERY_LABELS")))
    assert set(labels) == set(DELIVERY_STATES)
    assert labels["notified"] == "Notified"  # the case's own word for an answer delivered
    assert "Delivered" not in APP


def test_docs_name_every_state_once() -> None:
    section = REVIEW_DOC.split("## States", 1)[1].split("\n## ", 1)[0]
    for word in [*map(str, CaseStatus), *DELIVERY_STATES]:
        assert f"`{word}`" in section, word
    assert "`delivered`" not in REVIEW_DOC
