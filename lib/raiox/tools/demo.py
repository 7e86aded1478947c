"""`raiox demo`: the whole pipeline on one machine, offline, through the real HTTP endpoints.

Demo catalog of fictional systems → X-rays sent as Jotform webhooks → embed → top-3 → a demo reviewer
approves through the approve API → notify writes the answer to a local stand-in for Jotform's API.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from raiox import migrations
from raiox.adapters.encoder import random_checkpoint
from raiox.database import database_url
from raiox.repository import cases
from raiox.review.service import add_reviewer
from raiox.services import Services, get_services, reset_services
from raiox.tools.catalog_import import import_manifest
from raiox.tools.commands.local import configure_local, free_port
from raiox.tools.devserver import BASE_PATH, start_dev_server
from raiox.tools.render import demo_catalog, render
from raiox.tools.simulator import JotformApiStandIn, jotform_fields, multipart, new_submission_id, serve_files

DEMO_FORM_ID = "240000000000001"
RESULT_FIELDS = "system=12,manufacturer=13,similarity=14,reviewer=15,decision=16,note=17"
REFERENCES_PER_SYSTEM = 3
# The committed demo encoder, made by the command in README.md ("Demo encoder"); absent, the demo says so and
# runs an untrained architecture instead.
DEMO_ENCODER = Path(__file__).resolve().parents[1] / "adapters" / "model_weights" / "demo-encoder.pt"
DEMO_MODEL = "raiox-small-rn"
TRAINED_NOTICE = (
    "The demo's encoder was trained here on rendered films of these fictional systems (`raiox train --catalog "
    "demo`); the accuracy below is on renders it never saw. Rendered films are not real films."
)
UNTRAINED_NOTICE = (
    "The demo's encoder is UNTRAINED (random weights of a tiny open_clip architecture, made here because no "
    "weights can be downloaded): its similarities and top-3 are meaningless, and so is the accuracy below."
)


def demo_encoder(home: Path) -> tuple[str, Path, str]:
    """(model name, checkpoint, notice): the committed demo encoder, else an untrained stand-in."""
    if DEMO_ENCODER.is_file():
        return DEMO_MODEL, DEMO_ENCODER, TRAINED_NOTICE
    return "raiox-tiny-vit", random_checkpoint("raiox-tiny-vit", home / "models" / "untrained.pt"), UNTRAINED_NOTICE


@dataclass
class DemoCase:
    submission_id: str
    truth: str
    case_id: int | None = None
    status: str = "sent"
    candidates: list[dict[str, Any]] = field(default_factory=list)
    decision: str = ""
    delivered: bool = False


@dataclass
class DemoReport:
    cases: list[DemoCase]
    model_id: str
    seconds: float
    jotform_writes: int

    def summary(self) -> dict[str, Any]:
        done = [c for c in self.cases if c.candidates]
        top1 = sum(c.candidates[0]["system"] == c.truth for c in done)
        top3 = sum(c.truth in [x["system"] for x in c.candidates[:3]] for c in done)
        return {
            "cases": len(self.cases),
            "ready": len(done),
            "approved": sum(c.decision.startswith("approved") for c in self.cases),
            "notified": sum(c.delivered for c in self.cases),
            "top1_accuracy": round(top1 / len(done), 3) if done else 0.0,
            "top3_accuracy": round(top3 / len(done), 3) if done else 0.0,
            "seconds": round(self.seconds, 1),
        }


def write_demo_catalog(folder: Path) -> Path:
    """Rendered reference films of the demo systems and their CSV manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["manufacturer,system,type,connection,notes,images"]
    for number, design in enumerate(demo_catalog()):
        names = []
        for view in range(REFERENCES_PER_SYSTEM):
            name = f"{number:02d}-{view}.png"
            (folder / name).write_bytes(render(design, seed=number * 100 + view))
            names.append(name)
        rows.append(f"{design.manufacturer},{design.system},{design.implant_type},{design.connection},"
                    f"fictional demo system,{'|'.join(names)}")
    manifest = folder / "catalog.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def _wait(what: str, done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(0.25)


def _statuses(services: Services, case_ids: list[int]) -> dict[int, str]:
    with services.db.transaction() as conn:
        return {case.id: str(case.status) for case in (cases.get_case(conn, case_id) for case_id in case_ids) if case}


def run_demo(home: Path, *, count: int = 12, say: Callable[[str], None] = print) -> DemoReport:
    """Run the pipeline in `home` (which must be an isolated RAIOX_HOME: see simulator.isolated_environment)."""
    started = time.monotonic()
    model, checkpoint, notice = demo_encoder(home)
    say(notice)
    os.environ["RAIOX_CLIP_MODEL"] = model
    os.environ["RAIOX_CLIP_PRETRAINED"] = str(checkpoint)
    with JotformApiStandIn() as jotform:
        os.environ.update({"JOTFORM_API_BASE": jotform.url, "JOTFORM_API_KEY": secrets.token_hex(16),
                           "JOTFORM_RESULT_FIELDS": RESULT_FIELDS, "JOTFORM_FORM_IDS": DEMO_FORM_ID})
        port = free_port()
        configure_local("127.0.0.1", port)
        os.environ.setdefault("NOTIFY_URL", f"http://127.0.0.1:{port}{BASE_PATH}/notify")
        reset_services()
        services = get_services()
        migrations.migrate(database_url(services.settings))
        say(f"catalog: rendering {len(demo_catalog())} fictional systems x {REFERENCES_PER_SYSTEM} views")
        imported = import_manifest(services, write_demo_catalog(home / "catalog"), progress=False)
        say(f"catalog: {imported.references_added} references embedded by {imported.model_id}")
        server = start_dev_server(services, "127.0.0.1", port)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{port}{BASE_PATH}"
        try:
            cases = _send_cases(services, base, count, say)
            ids = [c.case_id for c in cases if c.case_id is not None]
            _wait("embedding", lambda: all(s in ("ready", "failed") for s in _statuses(services, ids).values()), 300)
            _review(services, base, cases, say)
            _wait("delivery", lambda: all(s == "notified" for s in _statuses(services, ids).values()), 120)
            final = _statuses(services, ids)
            for case in cases:
                case.delivered = final.get(case.case_id or 0) == "notified"
        finally:
            server.shutdown()
            server.server_close()
        report = DemoReport(cases, services.encoder.model_id, time.monotonic() - started, len(jotform.requests))
        reset_services()
    return report


def _send_cases(services: Services, base: str, count: int, say: Callable[[str], None]) -> list[DemoCase]:
    """Each case: a new film (unseen view) of one demo system, sent as Jotform's webhook would."""
    designs = demo_catalog()
    token = services.settings.webhook_token.get_secret_value() if services.settings.webhook_token else ""
    films = {f"/uploads/demo/{DEMO_FORM_ID}/{n}/xray.png": render(designs[n % len(designs)], seed=10_000 + n)
             for n in range(count)}
    cases = []
    with serve_files(films) as files, requests.Session() as http:
        for n, path in enumerate(films):
            case = DemoCase(new_submission_id(), designs[n % len(designs)].system)
            body, content_type = multipart(jotform_fields(form_id=DEMO_FORM_ID, submission_id=case.submission_id,
                                                          upload_urls=[files + path]))
            answer = http.post(f"{base}/webhook", params={"token": token}, data=body,
                               headers={"Content-Type": content_type}, timeout=60)
            answer.raise_for_status()
            case.case_id, case.status = answer.json()["case_id"], answer.json()["status"]
            cases.append(case)
    say(f"webhook: {len(cases)} submissions accepted")
    return cases


def _review(services: Services, base: str, cases: list[DemoCase], say: Callable[[str], None]) -> None:
    """A demo reviewer who knows the truth: approves the right candidate, or overrides from the catalog."""
    password = secrets.token_urlsafe(18)
    add_reviewer(services, "demo-reviewer", password, reset=True)
    with requests.Session() as http:
        login = http.post(f"{base}/approve/login", json={"name": "demo-reviewer", "password": password}, timeout=30)
        login.raise_for_status()
        http.headers["Authorization"] = f"Bearer {login.json()['token']}"
        for case in cases:
            detail = http.get(f"{base}/approve/cases/{case.case_id}", timeout=30)
            detail.raise_for_status()
            images = detail.json()["images"]
            case.candidates = images[0]["candidates"] if images else []
            case.status = detail.json()["case"]["status"]
            if case.status != "ready":
                continue
            ranks = [c["rank"] for c in case.candidates if c["system"] == case.truth]
            if ranks:
                body: dict[str, Any] = {"action": "approve", "rank": ranks[0]}
            else:
                [match] = [i for i in http.get(f"{base}/approve/catalog", params={"q": case.truth},
                                               timeout=30).json()["implants"] if i["system"] == case.truth]
                body = {"action": "approve", "implant_id": match["id"], "note": "not among the three candidates"}
            answer = http.post(f"{base}/approve/cases/{case.case_id}/decision", json=body, timeout=30)
            answer.raise_for_status()
            case.decision = "approved (candidate)" if "rank" in body else "approved (override)"
    say(f"review: {sum(bool(c.decision) for c in cases)} cases decided by demo-reviewer")
