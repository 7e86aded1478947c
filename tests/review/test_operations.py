"""Operating Raiox: the access trail of a case, erasure on request and by retention, the system view and the
deep health checks."""

from __future__ import annotations

import json
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from click.testing import CliRunner

from raiox import deletions
from raiox.delivery.worker import NotifyReport
from raiox.embed.worker import EmbedReport, run_embed_jobs
from raiox.intake.inbox import InboxReport
from raiox.intake.reconcile import ReconcileReport
from raiox.intake.worker import FetchReport
from raiox.job_runner import beat
from raiox.repository import cases, findings
from raiox.review import accounts, decisions, queue, system
from raiox.review.http import handle
from raiox.services import Services
from raiox.sweeper.round import Handover, SweepReport, sweep
from raiox.sweeper.stored import IntakeSweep, sweep_intake
from raiox.tools.cli import main as cli
from raiox.web.http import HttpRequest
from support import make_xray, submit_case

NAME, PASSWORD = "brenda", "a long enough password"


def brenda(services: Services) -> accounts.Reviewer:
    accounts.add_reviewer(services, NAME, PASSWORD, reset=True)
    with services.db.transaction() as conn:
        row = conn.execute("SELECT id FROM reviewers WHERE name = %s", (NAME,)).fetchone()
    return accounts.Reviewer(id=row["id"], name=NAME)


def approved_case(services: Services, submission_id: str, seed: int) -> int:
    case_id = submit_case(services, submission_id, [make_xray(seed)])
    run_embed_jobs(services)
    decisions.decide(services, brenda(services), case_id, decisions.DecisionBody(action="approve", rank=1))
    return case_id


def rows(services: Services, sql: str, *params: Any) -> list[dict[str, Any]]:
    with services.db.transaction() as conn:
        return conn.execute(sql, params).fetchall()


def test_opening_a_case_is_audited_and_the_case_shows_its_trail(catalogued: Services) -> None:
    case_id = submit_case(catalogued, "trail-1", [make_xray(12)])
    run_embed_jobs(catalogued)
    first = queue.case_detail(catalogued, case_id, "brenda")
    second = queue.case_detail(catalogued, case_id, "carla")
    assert [entry["action"] for entry in first["history"]][-1] == "case.viewed"
    assert [(e["actor"], e["action"]) for e in second["history"][-2:]] == [("brenda", "case.viewed"),
                                                                          ("carla", "case.viewed")]
    [viewed, *_] = rows(catalogued, "SELECT details FROM audit_log WHERE actor = 'carla'")
    assert viewed["details"] == {"xray_urls_issued": 1}


def test_erasing_a_case_removes_its_films_and_personal_data_and_keeps_an_anonymous_decision(
    catalogued: Services,
) -> None:
    case_id = approved_case(catalogued, "erase-1", 42)  # a film no catalog reference has
    shared = submit_case(catalogued, "erase-2", [make_xray(42)])  # another case with the same bytes
    with catalogued.db.transaction() as conn:
        conn.execute("UPDATE cases SET submitter_name = 'Ana Souza', submitter_email = 'ana@example.com', "
                     "raw_payload = '{\"rawRequest\": {\"q3_name\": \"Ana Souza\"}}' WHERE id = %s", (case_id,))
        key = conn.execute("SELECT storage_key FROM case_images WHERE case_id = %s", (case_id,)).fetchone()
        crops = findings.crop_keys_of_case(conn, case_id)
    learned = rows(catalogued, "SELECT id FROM reference_images WHERE source_case_id = %s", case_id)
    assert learned  # the approval taught the catalog this film
    assert crops and all(catalogued.store.exists(crop) for crop in crops)

    report = deletions.erase_now(catalogued, case_id, actor="brenda")
    # The implant's crop goes (the other case is not embedded yet); the film stays: the other case uses its bytes.
    assert report.erased == [case_id] and report.objects_deleted == len(set(crops))
    assert not any(catalogued.store.exists(crop) for crop in crops)
    [case] = rows(catalogued, "SELECT * FROM cases WHERE id = %s", case_id)
    assert (case["submitter_name"], case["submitter_email"], case["raw_payload"]) == (None, None, {})
    assert case["erased_by"] == "brenda" and case["erased_at"] is not None and case["status"] == "approved"
    assert rows(catalogued, "SELECT id FROM case_images WHERE case_id = %s", case_id) == []
    assert rows(catalogued, "SELECT id FROM reference_images WHERE source_case_id = %s", case_id) == []
    [decision] = rows(catalogued, "SELECT decision, implant_id, note FROM review_decisions WHERE case_id = %s",
                      case_id)
    assert decision["decision"] == "approved" and decision["implant_id"] and decision["note"] is None
    trail = rows(catalogued, "SELECT action, details FROM audit_log WHERE case_id = %s ORDER BY id", case_id)
    assert trail[-1]["action"] == "case.erased" and all(row["details"] == {} for row in trail)
    assert "Ana" not in json.dumps(rows(catalogued, "SELECT * FROM cases WHERE id = %s", case_id), default=str)
    assert catalogued.store.exists(key["storage_key"])

    # Once the other case is erased too, nothing uses the bytes: the object leaves storage.
    run_embed_jobs(catalogued)
    deletions.erase_now(catalogued, shared, actor="brenda")
    assert not catalogued.store.exists(key["storage_key"])
    assert rows(catalogued, "SELECT * FROM object_deletions") == []
    assert deletions.erase_now(catalogued, case_id, actor="brenda").erased == [case_id]  # again: nothing more to do


def test_a_case_in_flight_is_not_erased(catalogued: Services) -> None:
    case_id = submit_case(catalogued, "erase-in-flight", [make_xray(11)])
    response = handle(HttpRequest(method="POST", path=f"/cases/{case_id}/erase", body=b'{"confirm": 1}',
                                  headers={"content-type": "application/json"}), catalogued)
    assert response.status == 401  # signed in first
    token = accounts.login(catalogued, accounts.LoginBody(name=NAME, password=PASSWORD)) if brenda(catalogued) else {}
    auth = {"authorization": f"Bearer {token['token']}", "content-type": "application/json"}
    wrong = handle(HttpRequest(method="POST", path=f"/cases/{case_id}/erase", body=b'{"confirm": 999}',
                               headers=auth), catalogued)
    assert wrong.status == 422 and "confirm" in wrong.body["error"]
    busy = handle(HttpRequest(method="POST", path=f"/cases/{case_id}/erase",
                              body=json.dumps({"confirm": case_id}).encode(), headers=auth), catalogued)
    assert busy.status == 409 and "received" in busy.body["error"]
    run_embed_jobs(catalogued)
    done = handle(HttpRequest(method="POST", path=f"/cases/{case_id}/erase",
                              body=json.dumps({"confirm": case_id}).encode(), headers=auth), catalogued)
    assert done.status == 200 and done.body["erased"] is True


def test_the_retention_period_erases_delivered_cases_in_the_sweep(catalogued: Services) -> None:
    case_id = approved_case(catalogued, "retain-1", 13)
    catalogued.settings.raiox_retention_days = 30
    with catalogued.db.transaction() as conn:
        conn.execute("UPDATE cases SET status = 'notified', notified_at = now() - interval '31 days' WHERE id = %s",
                     (case_id,))
    key = rows(catalogued, "SELECT storage_key FROM case_images WHERE case_id = %s", case_id)[0]["storage_key"]
    with catalogued.db.transaction() as conn:
        crops = set(findings.crop_keys_of_case(conn, case_id))
    report = sweep(catalogued, embed_here=False)  # the notify function: no object storage there
    assert report.erased == [case_id]
    assert rows(catalogued, "SELECT erased_by FROM cases WHERE id = %s", case_id)[0]["erased_by"] == "system:retention"
    assert catalogued.store.exists(key)  # left for a sweep that has object storage
    assert sweep_intake(catalogued).objects_deleted == 1 + len(crops)  # the film and its implants' crops
    assert not catalogued.store.exists(key) and crops and not any(catalogued.store.exists(c) for c in crops)


def test_a_rounds_report_says_whether_it_worked_and_reads_as_json_part_by_part() -> None:
    quiet = {"claimed": 0, "retried": 0, "failed": 0, "lost": 0, "errors": []}
    idle = SweepReport(notify=NotifyReport(), embed=Handover())
    assert not idle.worked and idle.as_dict() == {"notify": {**quiet, "notified": 0}, "embed": {"due": 0}}
    handed = SweepReport(notify=NotifyReport(), embed=Handover(2, "HTTP 200"))  # embed does the work, not this round
    assert not handed.worked and handed.as_dict()["embed"] == {"due": 2, "poke": "HTTP 200"}
    fetched = SweepReport(notify=NotifyReport(), embed=EmbedReport(),
                          intake=IntakeSweep(inbox=InboxReport(), fetch=FetchReport(claimed=1)))
    assert fetched.worked and fetched.as_dict()["intake"] == {
        "inbox": {"recorded": 0, "duplicates": 0, "refused": 0, "errors": []},
        "fetch": {**quiet, "claimed": 1, "fetched": 0, "images_stored": 0}, "objects_deleted": 0}
    assert fetched.as_dict()["embed"] == {**quiet, "ready": 0, "skipped": 0, "images_embedded": 0}
    checked = SweepReport(notify=NotifyReport(), embed=Handover(), reconcile=ReconcileReport(forms=["f"], seen=3))
    assert not checked.worked and checked.as_dict()["reconcile"] == {"forms": ["f"], "seen": 3, "recorded": 0,
                                                                     "refused": 0, "errors": []}
    assert SweepReport(notify=NotifyReport(), embed=Handover(), reconcile=ReconcileReport(recorded=1)).worked
    assert SweepReport(notify=NotifyReport(), embed=EmbedReport(claimed=1)).worked


def test_the_system_view_shows_jobs_heartbeats_and_what_needs_attention(catalogued: Services) -> None:
    submit_case(catalogued, "status-1", [make_xray(11)])
    with catalogued.db.transaction() as conn:
        case, _ = cases.create_case(conn, submission_id="status-failed")
        cases.set_case_status(conn, case.id, cases.CaseStatus.FAILED, error="no usable X-ray")
    sweep(catalogued, embed_here=False)
    report = system.system_status(catalogued)
    assert report["jobs"]["embed"]["due"] == 1 and report["jobs"]["embed"]["oldest_due_seconds"] >= 0
    assert report["needs_attention"] == 1 and report["cases"]["failed"] == 1
    assert report["heartbeats"]["sweeper:notify"]["stale"] is False
    printed = CliRunner().invoke(cli, ["status", "--json"], obj=_invocation(catalogued))
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.output)["jobs"]["embed"]["due"] == 1


def test_the_system_view_warns_of_an_empty_catalog_and_an_encoder_without_references(services: Services) -> None:
    report = system.system_status(services)
    assert report["catalog"] == {"implants": 0, "references": {}, "encoders": {}}
    [empty] = report["warnings"]
    assert "The catalog is empty" in empty and "raiox catalog import" in empty
    printed = CliRunner().invoke(cli, ["status"], obj=_invocation(services))
    assert printed.exit_code == 0 and "warning: The catalog is empty" in printed.output, printed.output

    with services.db.transaction() as conn:
        conn.execute("INSERT INTO implants (manufacturer, system) VALUES ('Maker', 'No films yet')")
    assert "The catalog is empty" in system.system_status(services)["warnings"][0]  # systems, but no references

    sweep(services, worker="w1", embed_here=True)  # a worker reports the encoder it runs
    own = services.encoder.model_id
    [no_references] = system.system_status(services)["warnings"]
    assert "The catalog is empty" in no_references
    catalogued = _catalogued(services)
    report = system.system_status(catalogued)
    assert report["catalog"]["references"] == {own: 5} and report["catalog"]["encoders"] == {own: "worker:w1"}
    assert report["warnings"] == []
    beat(catalogued, "embed", model_id="retrained@0123abcd")  # embed now runs an encoder the catalog lacks
    [switched] = system.system_status(catalogued)["warnings"]
    assert "retrained@0123abcd (embed) has no reference images" in switched and "raiox catalog reembed" in switched


def _catalogued(services: Services) -> Services:
    from raiox.tools.catalog import ReferenceSystem, import_manifest, write_catalog

    with TemporaryDirectory() as folder:
        catalog = [ReferenceSystem("Maker", f"S{seed}", [make_xray(seed)]) for seed in range(10, 15)]
        import_manifest(services, write_catalog(Path(folder), catalog), progress=False)
    return services


def test_deep_health_checks_what_the_function_uses_and_only_for_its_callers(catalogued: Services) -> None:
    assert handle(HttpRequest(method="GET", path="/health"), catalogued).body == {"status": "ok"}
    assert handle(HttpRequest(method="GET", path="/health", query={"deep": "1"}), catalogued).status == 401
    brenda(catalogued)
    token = accounts.login(catalogued, accounts.LoginBody(name=NAME, password=PASSWORD))["token"]
    deep = handle(HttpRequest(method="GET", path="/health", query={"deep": "1"},
                              headers={"authorization": f"Bearer {token}"}), catalogued)
    assert deep.status == 200 and deep.body == {"status": "ok", "database": "ok", "storage": "ok"}
    broken = Services(catalogued.settings.model_copy(update={"raiox_storage": "s3://gone",
                                                             "spaces_endpoint": "http://127.0.0.1:1"}))
    try:
        parts = broken.check()
        assert parts["database"] == "ok" and parts["storage"].startswith("unreachable")
    finally:
        broken.close()


def _invocation(services: Services) -> Any:
    from raiox.tools.commands.common import Invocation

    invocation = Invocation()
    invocation.__dict__["services"] = services  # the command reads these services, not the environment
    return invocation
