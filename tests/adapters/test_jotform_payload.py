"""Parsing Jotform's webhook fields: ids, rawRequest, upload URL lists (configured or detected), client name."""

from __future__ import annotations

import json

import pytest

from raiox.adapters.jotform_payload import JotformPayloadError, parse_webhook
from raiox.tools.simulator import jotform_fields

URLS = [
    "https://www.jotform.com/uploads/clinic/251234567890123/6012345678901234567/pano,left.jpg",
    "https://www.jotform.com/uploads/clinic/251234567890123/6012345678901234567/periapical.png",
]


def fields(**overrides: str) -> dict[str, str]:
    base = jotform_fields(form_id="251234567890123", submission_id="6012345678901234567", upload_urls=URLS,
                          webhook_url="https://faas.example/api/v1/web/ns/raiox/webhook?token=SECRET")
    return {**base, **overrides}


def test_documented_payload_parses() -> None:
    parsed = parse_webhook(fields())
    assert parsed.form_id == "251234567890123"
    assert parsed.submission_id == "6012345678901234567"
    assert parsed.upload_urls == URLS  # comma in a file name survives: `pretty` is never read
    assert parsed.submitter_name == "Ana Souza"
    assert parsed.submitter_email == "clinic@example.com"
    stored = parsed.raw_payload()
    assert "pretty" not in stored and "webhookURL" not in stored  # the webhook URL carries our token
    assert "SECRET" not in json.dumps(stored)
    assert stored["rawRequest"]["q3_name"] == {"first": "Ana", "last": "Souza"}


def test_configured_fields_win_over_detection() -> None:
    raw = json.loads(fields()["rawRequest"])
    raw["referenceImage"] = ["https://www.jotform.com/uploads/clinic/1/2/not-an-xray.jpg"]
    raw["q9_patientName"] = "Bruno Lima"
    payload = fields(rawRequest=json.dumps(raw))
    assert len(parse_webhook(payload).upload_urls) == 3  # detection takes every upload list
    configured = parse_webhook(payload, xray_field="q5_xrayImage", name_field="patientName")
    assert configured.upload_urls == URLS  # found without its q5_ prefix
    assert configured.submitter_name == "Bruno Lima"
    assert parse_webhook(payload, xray_field="missingField").upload_urls == []


def test_duplicate_urls_are_one_image_and_single_url_answers_count() -> None:
    raw = json.loads(fields()["rawRequest"])
    raw["xrayImage"] = [URLS[0], URLS[0]]
    assert parse_webhook(fields(rawRequest=json.dumps(raw))).upload_urls == [URLS[0]]
    raw["xrayImage"] = URLS[1]
    assert parse_webhook(fields(rawRequest=json.dumps(raw)), xray_field="xrayImage").upload_urls == [URLS[1]]


def test_empty_upload_list_parses_to_no_images() -> None:
    raw = json.loads(fields()["rawRequest"])
    raw["xrayImage"] = []
    assert parse_webhook(fields(rawRequest=json.dumps(raw))).upload_urls == []


@pytest.mark.parametrize(("overrides", "message"), [
    ({"rawRequest": "{not json"}, "not valid JSON"),
    ({"rawRequest": "[1, 2]"}, "not a JSON object"),
    ({"submissionID": ""}, "submissionID is missing"),
    ({"submissionID": "../../etc"}, "submissionID is malformed"),
    ({"formID": ""}, "formID is missing"),
])
def test_bad_payloads_say_why(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(JotformPayloadError, match=message):
        parse_webhook(fields(**overrides))


def test_missing_raw_request_is_refused() -> None:
    payload = fields()
    del payload["rawRequest"]
    with pytest.raises(JotformPayloadError, match="rawRequest is missing"):
        parse_webhook(payload)


def test_without_a_configured_field_only_upload_urls_are_taken() -> None:
    """Any other list of URLs a submitter writes into an answer is not an X-ray, and never gets the API key."""
    raw = json.loads(fields()["rawRequest"])
    raw["q7_links"] = ["https://www.jotform.com/API/user?apiKey=", "https://www.jotform.com/myforms/"]
    raw["q8_mixed"] = [URLS[0], "https://evil.example.org/x.jpg"]
    assert parse_webhook(fields(rawRequest=json.dumps(raw))).upload_urls == URLS
