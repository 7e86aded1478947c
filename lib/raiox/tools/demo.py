"""`raiox demo`: the whole pipeline on one machine, offline, through the real HTTP endpoints.

Demo catalog of fictional systems → X-rays sent as Jotform webhooks → embed → top-3 → a demo reviewer
approves through the approve API → notify writes the answer to a local stand-in for Jotform's API.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from pydantic import SecretStr

from raiox import migrations
from raiox.adapters.encoder import random_checkpoint
from raiox.database import database_url
from raiox.repository import cases
from raiox.repository import catalog as catalog_sql
from raiox.review.accounts import add_reviewer
from raiox.services import Services
from raiox.settings import Settings
from raiox.shape.identifier import SHIPPED_SHAPE_ENCODER
from raiox.tools.catalog import ReferenceSystem, import_manifest, write_catalog
from raiox.tools.devserver import start_dev_server
from raiox.tools.local import BASE_PATH, free_port, isolated_settings, one_port
from raiox.tools.render import ImplantDesign, demo_catalog, render
from raiox.tools.simulator import JotformApiStandIn, jotform_fields, multipart, new_submission_id, serve_files
from raiox.tools.waiting import wait_until

DEMO_FORM_ID = "240000000000001"
RESULT_FIELDS = "system=12,manufacturer=13,similarity=14,reviewer=15,decision=16,note=17"
REFERENCES_PER_SYSTEM = 3
# The committed shape encoder, made by the commands in docs/quality.md; absent, the demo says so and runs an
# untrained architecture instead.
DEMO_ENCODER = SHIPPED_SHAPE_ENCODER  # also RAIOX_CLIP_PRETRAINED's default (`shipped`)
TRAINED_NOTICE = (
    "The demo's encoder is the shipped shape encoder, trained on rendered films of thousands of random fictional "
    "systems; these twelve were not among them, and the accuracy below is on films it never saw. Rendered films "
    "are not real films."
)
UNTRAINED_NOTICE = (
    "The demo's encoder is UNTRAINED (random weights of a tiny open_clip architecture, made here because no "
    "weights can be downloaded): its similarities and top-3 are meaningless, and so is the accuracy below."
)


def demo_encoder(home: Path) -> tuple[str, Path, str]:
    """(model name, checkpoint, notice): the committed demo encoder, else an untrained stand-in."""
    if DEMO_ENCODER.is_file():
        return "", DEMO_ENCODER, TRAINED_NOTICE
    return "raiox-tiny-vit", random_checkpoint("raiox-tiny-vit", home / "models" / "untrained.pt"), UNTRAINED_NOTICE


@dataclass
class DemoCase:
    submission_id: str
    truth: str
    case_id: int | None = None
    status: str = "sent"
    candidates: list[dict[str, Any]] = field(default_factory=list)
    decision: str = ""  # the approved system and its rank among the candidates ("S (rank 1)"), empty if undecided
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
            "approved": sum(bool(c.decision) for c in self.cases),
            "notified": sum(c.delivered for c in self.cases),
            "top1_accuracy": round(top1 / len(done), 3) if done else 0.0,
            "top3_accuracy": round(top3 / len(done), 3) if done else 0.0,
            "seconds": round(self.seconds, 1),
        }


def size_ranges(design: ImplantDesign) -> dict[str, float]:
    """The sizes a demo system is "sold in": around the size it is rendered at, within what real lines span
    (diameters about 3.0–6.0 mm, lengths about 6–16 mm)."""
    return {"diameter_min_mm": round(max(3.0, design.diameter_mm - 0.3), 1),
            "diameter_max_mm": round(min(6.0, design.diameter_mm + 0.5), 1),
            "length_min_mm": round(max(6.0, design.length_mm - 2.0), 1),
            "length_max_mm": round(min(16.0, design.length_mm + 3.0), 1)}


def write_demo_catalog(folder: Path) -> Path:
    """Rendered reference films of the demo systems and their manifest, with size ranges."""
    return write_catalog(folder, [
        ReferenceSystem(design.manufacturer, design.system,
                        [render(design, seed=number * 100 + view) for view in range(REFERENCES_PER_SYSTEM)],
                        {"type": design.implant_type, "connection": design.connection,
                         "notes": "fictional demo system", **size_ranges(design)})
        for number, design in enumerate(demo_catalog())])


def _statuses(services: Services, case_ids: list[int]) -> dict[int, str]:
    with services.db.transaction() as conn:
        return {case.id: str(case.status) for case in (cases.get_case(conn, case_id) for case_id in case_ids) if case}


def run_demo(home: Path, *, count: int = 12, say: Callable[[str], None] = print) -> DemoReport:
    """Run the pipeline in `home`, a Raiox of its own: nothing is read from the environment or a `.env`."""
    started = time.monotonic()
    model, checkpoint, notice = demo_encoder(home)
    say(notice)
    port = free_port()
    with JotformApiStandIn() as jotform:
        settings = one_port(isolated_settings(
            home, raiox_clip_model=model, raiox_clip_pretrained=str(checkpoint),
            jotform_api_base=jotform.url, jotform_api_key=SecretStr(secrets.token_hex(16)),
            jotform_result_fields=RESULT_FIELDS, jotform_form_ids=DEMO_FORM_ID), "127.0.0.1", port)
        with Services(settings) as services:
            migrations.migrate(database_url(settings))
            say(f"catalog: rendering {len(demo_catalog())} fictional systems x {REFERENCES_PER_SYSTEM} views")
            imported = import_manifest(services, write_demo_catalog(home / "catalog"), progress=False)
            say(f"catalog: {imported.references_added} references embedded by {imported.model_id}")
            server = start_dev_server(services, "127.0.0.1", port)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            base = f"http://127.0.0.1:{port}{BASE_PATH}"
            try:
                sent = _send_cases(services, base, count, say)
                ids = [c.case_id for c in sent if c.case_id is not None]
                wait_until(lambda: all(s in ("ready", "failed") for s in _statuses(services, ids).values()), 300,
                           "embedding", interval=0.25)
                _review(services, base, sent, say)
                wait_until(lambda: all(s == "notified" for s in _statuses(services, ids).values()), 120,
                           "delivery", interval=0.25)
                final = _statuses(services, ids)
                for case in sent:
                    case.delivered = final.get(case.case_id or 0) == "notified"
            finally:
                server.shutdown()
                server.server_close()
            return DemoReport(sent, services.encoder.model_id, time.monotonic() - started, len(jotform.requests))


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
        say(f"webhook: {len(cases)} submissions recorded")
        files.wait_until_served(films, 300)  # intake fetches them from this host right after
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
            # Which system was approved and where it ranked, as the table shows it.
            case.decision = (f"{case.truth} (rank {body['rank']})" if "rank" in body
                             else f"{case.truth} (not in top 3)")
    say(f"review: {sum(bool(c.decision) for c in cases)} cases decided by demo-reviewer")


# `raiox dev --demo`: a first run that shows the product -------------------------------------------------


def demo_defaults(settings: Settings, jotform_api_base: str) -> Settings:
    """Settings for `raiox dev --demo`: the demo encoder and a local stand-in for Jotform's API (so delivery
    works), wherever the settings do not name their own."""
    model, checkpoint, _ = demo_encoder(settings.raiox_home)
    defaults: dict[str, Any] = {"raiox_clip_model": model, "raiox_clip_pretrained": str(checkpoint),
                                "jotform_api_base": jotform_api_base, "jotform_result_fields": RESULT_FIELDS,
                                "jotform_api_key": SecretStr(secrets.token_hex(16))}
    if {"raiox_clip_model", "raiox_clip_pretrained"} & settings.model_fields_set:
        del defaults["raiox_clip_model"], defaults["raiox_clip_pretrained"]
    return settings.model_copy(update={k: v for k, v in defaults.items() if k not in settings.model_fields_set})


def seed_demo(services: Services, *, count: int = 6, say: Callable[[str], None] = print) -> None:
    """The demo catalog (when the encoder has no references yet) and `count` sample Jotform cases, fetched and
    matched, waiting in the review queue; nothing is added twice."""
    from raiox.embed.worker import run_embed_jobs
    from raiox.intake.recording import check, record
    from raiox.intake.submission import ImageSource, Submission
    from raiox.intake.worker import run_fetch_jobs

    model_id = services.encoder.model_id
    with services.db.transaction() as conn:
        known = any(row.model_id == model_id for row in catalog_sql.catalog_summary(conn))
    if not known:
        imported = import_manifest(services, write_demo_catalog(services.settings.raiox_home / "demo-catalog"),
                                   progress=False)
        say(f"  demo catalog {imported.references_added} references of {len(demo_catalog())} fictional systems")
    designs = demo_catalog()
    recorded = 0
    for n in range(count):
        design = designs[(n * 5) % len(designs)]
        submission = Submission(source="jotform", submission_id=f"{9_000_000_000_000_000_000 + n}",
                                form_id=DEMO_FORM_ID, submitter_name=f"Demo Clinic {n + 1}",
                                raw_payload={"demo": True, "system": design.system},
                                images=[ImageSource(data=render(design, seed=20_000 + n))])
        recorded += not record(submission, check(submission, services), services, actor="system:demo").duplicate
    run_fetch_jobs(services)
    run_embed_jobs(services)
    if recorded:
        say(f"  demo cases   {recorded} sample cases are ready for review")
