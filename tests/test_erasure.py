"""Erasure that finishes the job: after a case went the whole way (Jotform webhook, fetch, embed, review with
learning, delivery, views) and was erased, no row of any table, no object version in a versioned bucket and no
log record holds the patient's name, e-mail, the film's file name or the film itself; the submission is deleted
at Jotform, retried while Jotform fails. Retention covers every status with its own period."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import boto3
import pytest

from fakes import FakeServer, Reply
from raiox import deletions
from raiox.delivery.worker import run_notify_jobs
from raiox.embed.worker import run_embed_jobs
from raiox.intake.receive import receive
from raiox.intake.submission import from_jotform
from raiox.intake.worker import run_fetch_jobs
from raiox.repository import findings
from raiox.review import accounts, decisions, queue
from raiox.services import Services
from raiox.settings import Settings
from raiox.sweeper.round import sweep
from raiox.tools.catalog import ReferenceSystem, import_manifest, write_catalog
from raiox.tools.simulator import jotform_fields, serve_files
from support import make_xray

FORM, SUBMISSION = "251234567890123", "5999000000000000001"
NAME, EMAIL = ("Zelinda", "Quaresma-Bittencourt"), "zelinda.qb@example.org"
FILM_NAME = "zelinda-quaresma-bittencourt.png"


def every_row(services: Services) -> str:
    """Every row of every table of the schema, as text (bytea as hex), one per line."""
    with services.db.transaction() as conn:
        tables = [row["tablename"] for row in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]
        return "\n".join(f"{table}: {row['line']}" for table in tables
                         for row in conn.execute(f"SELECT t::text AS line FROM {table} t"))


def every_version(client: Any, bucket: str) -> list[tuple[str, bytes]]:
    """(key, bytes) of every version and delete marker in the bucket."""
    listed = client.list_object_versions(Bucket=bucket)
    found = []
    for entry in listed.get("Versions", []):
        body = client.get_object(Bucket=bucket, Key=entry["Key"], VersionId=entry["VersionId"])["Body"].read()
        found.append((entry["Key"], body))
    found += [(entry["Key"], b"") for entry in listed.get("DeleteMarkers", [])]
    return found


@pytest.fixture
def jotform() -> FakeServer:
    server = FakeServer()
    server.api_key = "erasure-test-key"
    yield server
    server.close()


@pytest.fixture
def erasing(db_url: str, tmp_path: Path, s3_bucket: str, tiny_encoder: Any, jotform: FakeServer) -> Services:
    """A Raiox on a versioned bucket that learns from approvals and delivers to the fake Jotform."""
    settings = Settings.given(
        database_url=db_url, raiox_home=tmp_path / "home", raiox_env="dev", raiox_storage=f"s3://{s3_bucket}/x",
        spaces_endpoint=os.environ["SPACES_ENDPOINT"], spaces_region="us-east-1", spaces_key="test-key",
        spaces_secret="test-secret", jotform_api_base=jotform.url, jotform_api_key=jotform.api_key,
        jotform_result_fields="system=12,decision=16", jotform_form_ids=FORM, jotform_xray_field="xrayImage",
        jotform_reconcile_minutes=0)
    with Services(settings, encoder=tiny_encoder) as services:
        services.store.client.put_bucket_versioning(  # type: ignore[attr-defined]
            Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
        catalog = [ReferenceSystem("Maker", f"S{seed}", [make_xray(seed)]) for seed in (10, 11, 12)]
        import_manifest(services, write_catalog(tmp_path / "refs", catalog), progress=False)
        yield services


def test_after_erasure_nothing_anywhere_holds_the_patients_name_or_film(
        erasing: Services, jotform: FakeServer, s3_bucket: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)  # what production logs (libraries' debug output, e.g. URLs, is not kept)
    caplog.set_level(logging.DEBUG, logger="raiox")
    film = make_xray(77)
    film_sha = hashlib.sha256(film).hexdigest()
    with serve_files({f"/uploads/{FILM_NAME}": film}) as files:
        fields = jotform_fields(form_id=FORM, submission_id=SUBMISSION, upload_urls=[f"{files}/uploads/{FILM_NAME}"],
                                name=NAME, email=EMAIL)
        case_id = receive(from_jotform(fields, erasing.settings), erasing).case_id
        assert run_fetch_jobs(erasing).fetched == 1
    assert run_embed_jobs(erasing).ready == 1
    accounts.add_reviewer(erasing, "brenda", "a long enough password")
    with erasing.db.transaction() as conn:
        reviewer = conn.execute("SELECT id, name FROM reviewers WHERE name = 'brenda'").fetchone()
    brenda = accounts.Reviewer(id=reviewer["id"], name="brenda")
    decisions.decide(erasing, brenda, case_id, decisions.DecisionBody(
        action="approve", rank=1, note=f"{NAME[0]} said the implant is from 2015"))
    assert run_notify_jobs(erasing).notified == 1
    queue.case_detail(erasing, case_id, "brenda")
    with erasing.db.transaction() as conn:
        [key] = [row["storage_key"] for row in conn.execute(
            "SELECT storage_key FROM case_images WHERE case_id = %s", (case_id,))]
        learned = conn.execute("SELECT count(*) AS n FROM reference_images WHERE source_case_id = %s",
                               (case_id,)).fetchone()["n"]
        crops = set(findings.crop_keys_of_case(conn, case_id))
    assert learned == 1 and film_sha in key and crops
    erasing.store.put_at(key, film)  # a second version of the film's object (a re-write)
    before = every_row(erasing)
    assert NAME[1] in before and EMAIL in before and FILM_NAME in before and film_sha in before  # it was all there

    jotform.script = [Reply(503, {"responseCode": 503, "message": "busy"})]  # Jotform fails once
    report = deletions.erase_now(erasing, case_id, actor="brenda")
    assert report.objects_deleted == 1 + len(crops) and "queued" in report.at_source[case_id]  # film and crops
    first = sweep(erasing, embed_here=False)
    assert first.erased_at_source == 1
    with erasing.db.transaction() as conn:
        conn.execute("UPDATE jobs SET run_after = now() WHERE kind = 'erase'")  # skip the backoff
    sweep(erasing, embed_here=False)

    deletes = [r for r in jotform.requests if r.method == "DELETE"]
    assert [r.path for r in deletes] == [f"/submission/{SUBMISSION}"] * 2 and deletes[-1].headers["apikey"]
    with erasing.db.transaction() as conn:
        job = conn.execute("SELECT status, attempts FROM jobs WHERE kind = 'erase'").fetchone()
    assert (job["status"], job["attempts"]) == ("done", 2)

    rows = every_row(erasing)
    for secret in (*NAME, EMAIL, FILM_NAME, film_sha, film[:32].hex(), "said the implant"):
        assert secret not in rows, f"{secret!r} is still in the database: " + next(
            line for line in rows.splitlines() if secret in line)
    client = boto3.client("s3", endpoint_url=os.environ["SPACES_ENDPOINT"], region_name="us-east-1",
                          aws_access_key_id="test-key", aws_secret_access_key="test-secret")
    versions = every_version(client, s3_bucket)
    assert versions and all(film_sha not in version_key and body != film for version_key, body in versions)
    assert not [k for k, _ in versions if any(k.endswith(crop) for crop in crops)]  # nor of an implant's crop
    logged = "\n".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)
    for secret in (*NAME, EMAIL, FILM_NAME):
        assert secret not in logged, f"{secret!r} was logged"


def test_a_refusing_jotform_fails_the_erase_job_with_the_reason_and_erasing_again_retries(
        erasing: Services, jotform: FakeServer) -> None:
    from support import submit_case

    case_id = submit_case(erasing, SUBMISSION, [make_xray(78)])
    with erasing.db.transaction() as conn:
        conn.execute("UPDATE cases SET status = 'failed' WHERE id = %s", (case_id,))
        conn.execute("UPDATE jobs SET status = 'done' WHERE case_id = %s", (case_id,))
    erasing.settings.erase_max_attempts = 1
    jotform.default = Reply(403, {"responseCode": 403, "message": "You're not authorized to use this submission"})
    deletions.erase_now(erasing, case_id, actor="brenda")
    sweep(erasing, embed_here=False)
    with erasing.db.transaction() as conn:
        job = conn.execute("SELECT status, last_error FROM jobs WHERE kind = 'erase'").fetchone()
        trail = [row["action"] for row in conn.execute("SELECT action FROM audit_log WHERE case_id = %s", (case_id,))]
    assert job["status"] == "failed" and "HTTP 403" in job["last_error"]
    assert trail[-1] == "erase_at_source_failed"
    jotform.default = Reply()
    again = deletions.erase_now(erasing, case_id, actor="brenda")
    assert "queued" in again.at_source[case_id]
    sweep(erasing, embed_here=False)
    with erasing.db.transaction() as conn:
        assert [row["status"] for row in conn.execute("SELECT status FROM jobs WHERE kind = 'erase' ORDER BY id")] \
            == ["failed", "done"]


def test_retention_covers_every_status_with_its_own_period(catalogued: Services) -> None:
    from raiox.erasure import erase_expired
    from support import submit_case

    made = {status: submit_case(catalogued, f"retain-{status}", [make_xray(60 + n)])
            for n, status in enumerate(("notified", "approved", "ready", "failed", "received", "young"))}
    with catalogued.db.transaction() as conn:
        conn.execute("ALTER TABLE cases DISABLE TRIGGER USER")  # set statuses and ages directly
        for status, case_id in made.items():
            conn.execute("UPDATE cases SET status = %s, updated_at = now() - interval '40 days', "
                         "notified_at = now() - interval '40 days' WHERE id = %s",
                         ("ready" if status == "young" else status, case_id))
        conn.execute("UPDATE cases SET updated_at = now() - interval '5 days' WHERE id = %s", (made["young"],))
        conn.execute("UPDATE jobs SET status = 'done', leased_until = NULL")  # no job holds them
        conn.execute("ALTER TABLE cases ENABLE TRIGGER USER")
    settings = catalogued.settings
    assert erase_expired(catalogued).erased == []  # every period 0: nothing is erased
    settings.raiox_retention_days = 30
    settings.raiox_retention_undelivered_days = 30
    settings.raiox_retention_undecided_days = 30
    settings.raiox_retention_failed_days = 30
    settings.raiox_retention_stalled_days = 30
    erased = erase_expired(catalogued).erased
    assert sorted(erased) == sorted(case_id for status, case_id in made.items() if status != "young")
