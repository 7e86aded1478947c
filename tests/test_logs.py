"""Structured logs: each function request and each job is one JSON line that names what it is about (function,
request or job id, case id, step, outcome, duration) and carries no secret and no patient's name."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from raiox import logs
from raiox.tools.local import SETTING_NAMES
from raiox.tools.simulator import jotform_fields, multipart
from support import REPO, make_xray, submit_case

TOKEN = "log-test-webhook-token-0123"

SCRIPT = """
import json, runpy, sys, types
main = runpy.run_path(sys.argv[1], run_name="action")["main"]
event = json.loads(sys.stdin.read())
print(json.dumps(main(event, types.SimpleNamespace(activation_id="act-42"))))
"""


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_a_function_request_is_one_json_line_about_it(db_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k.upper() not in SETTING_NAMES}
    env.update({"DATABASE_URL": db_url, "RAIOX_HOME": str(tmp_path / "home"), "RAIOX_ENV": "dev",
                "WEBHOOK_TOKEN": TOKEN, "JOTFORM_XRAY_FIELD": "xrayImage"})
    body, content_type = multipart(jotform_fields(form_id="251234567890123", submission_id="6200000000000000001",
                                                  upload_urls=["https://www.jotform.com/uploads/c/1/2/film.jpg"]))
    event = {"http": {"method": "POST", "path": "", "headers": {"content-type": content_type},
                      "queryString": f"token={TOKEN}", "isBase64Encoded": False, "body": body.decode()}}
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(REPO / "functions" / "webhook" / "__main__.py")],
                         input=json.dumps(event), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.strip().splitlines()[-1])["statusCode"] == 202
    lines = json_lines(run.stderr)
    [request] = [line for line in lines if line.get("status")]
    assert {k: request[k] for k in ("function", "request_id", "status", "outcome", "level")} == {
        "function": "webhook", "request_id": "act-42", "status": 202, "outcome": "ok", "level": "INFO"}
    assert request["duration_ms"] >= 0 and request["time"]
    recorded = [line for line in lines if "6200000000000000001" in line["message"]]
    assert recorded and all(line["function"] == "webhook" for line in recorded)
    for secret in (TOKEN, "Ana", "Souza", "clinic@example.com"):  # no token, no patient's or clinic's name
        assert secret not in run.stderr


def test_each_job_is_one_json_line_with_its_step_job_and_case(catalogued: Any, tiny_checkpoint: Path,
                                                              tmp_path: Path) -> None:
    case_id = submit_case(catalogued, "log-job-1", [make_xray(12)])
    env = {k: v for k, v in os.environ.items() if k.upper() not in SETTING_NAMES}
    env.update({"DATABASE_URL": catalogued.settings.database_url.get_secret_value(),
                "RAIOX_HOME": str(catalogued.settings.raiox_home), "RAIOX_ENV": "dev", "RAIOX_LOG_FORMAT": "json",
                "RAIOX_CLIP_MODEL": "raiox-tiny-vit",
                "RAIOX_CLIP_PRETRAINED": str(tiny_checkpoint)})
    run = subprocess.run([sys.executable, "-m", "raiox.tools.cli", "-v", "worker", "--once"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    [job] = [line for line in json_lines(run.stderr) if line.get("step") == "embed" and "outcome" in line]
    assert (job["case_id"], job["outcome"]) == (case_id, "ready") and job["job_id"] and job["duration_ms"] >= 0


def test_bound_context_reaches_every_record_and_leaves_with_the_block(caplog: pytest.LogCaptureFixture) -> None:
    logs.configure(json=True)
    log = logging.getLogger("raiox.test")
    with caplog.at_level(logging.INFO), logs.bound(case_id=7, step="fetch", submission_id=None):
        log.info("inside")
    log.warning("outside")
    inside, outside = caplog.records[-2:]
    assert (inside.case_id, inside.step) == (7, "fetch") and not hasattr(inside, "submission_id")
    assert not hasattr(outside, "case_id")
