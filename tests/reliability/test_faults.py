"""Faults: a worker killed mid-batch, PostgreSQL restarted under load, object storage down, Jotform down."""

from __future__ import annotations

import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
import requests
from botocore.config import Config

from fakes import FakeServer, Reply
from raiox import migrations
from raiox.review import accounts
from raiox.services import Services
from raiox.tools.local import BASE_PATH
from raiox.tools.simulator import jotform_fields, multipart, serve_files
from raiox.tools.waiting import wait_until
from reliability.support import Processes, query, webhook_url
from support import make_xray, submit_case

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
    import pgserver
    from pgserver._commands import pg_ctl

TOKEN = "fault-test-webhook-token"
FORM = "251234567890123"


def post_jotform(base: str, file_base: str, sid: str, *, timeout: float = 60) -> requests.Response:
    body, content_type = multipart(jotform_fields(form_id=FORM, submission_id=sid,
                                                  upload_urls=[f"{file_base}/uploads/{sid}.png"]))
    return requests.post(webhook_url(base, TOKEN), data=body, headers={"Content-Type": content_type},
                         timeout=timeout)


def assert_every_case_whole(url: str, store_has: Any) -> None:
    """No half-written case: each has its X-ray (stored, in the object store), its embed job and audit row."""
    for case in query(url, "SELECT id FROM cases"):
        images = query(url, "SELECT status, storage_key FROM case_images WHERE case_id = %s", case["id"])
        assert images and all(i["status"] in ("stored", "embedded") for i in images), (case, images)
        assert all(store_has(i["storage_key"]) for i in images), (case, images)
        assert len(query(url, "SELECT id FROM jobs WHERE case_id = %s AND kind = 'embed'", case["id"])) == 1
        assert len(query(url, "SELECT id FROM audit_log WHERE case_id = %s AND action = 'case.received'",
                         case["id"])) == 1


# A worker killed in the middle of a batch ----------------------------------------------------------


def test_a_worker_killed_mid_batch_is_taken_over_after_its_lease(catalogued: Services, db_url: str, tmp_path: Path,
                                                                  processes: Processes) -> None:
    case_ids = [submit_case(catalogued, f"kill-{n}", [make_xray(20 + n)]) for n in range(6)]
    env = processes.env(db_url, tmp_path / "home", RAIOX_ENV="dev", EMBED_LEASE_SECONDS="10")
    # Hold every case image row: worker A claims its batch (claiming only reads images) and then blocks on
    # its first result write, so it is certainly killed in the middle of the batch, holding leases.
    with psycopg.connect(db_url) as blocker:
        blocker.execute("SELECT id FROM case_images FOR UPDATE")
        first = processes.worker(env, "worker-a")
        owner = f"%:{first.pid}"
        wait_until(lambda: query(db_url, "SELECT count(*) AS n FROM jobs WHERE status = 'running' "
                                       "AND lease_owner LIKE %s", owner)[0]["n"] == len(case_ids),
                 60, "worker A to claim every job")
        wait_until(lambda: query(db_url, "SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                       "AND datname = current_database()")[0]["n"] >= 1,
                 60, "worker A to block on its first result write")
        first.kill()
        blocker.rollback()
    held = query(db_url, "SELECT id, status, attempts FROM jobs WHERE lease_owner LIKE %s", owner)
    assert [(j["status"], j["attempts"]) for j in held] == [("running", 1)] * len(case_ids)  # leases left behind

    second = processes.worker(env, "worker-b")
    wait_until(lambda: query(db_url, "SELECT count(*) AS n FROM cases WHERE status = 'ready'")[0]["n"] == len(case_ids),
             90, "worker B to take the jobs over after their lease and finish them")
    jobs = query(db_url, "SELECT status, attempts FROM jobs WHERE kind = 'embed'")
    assert [(j["status"], j["attempts"]) for j in jobs] == [("done", 2)] * len(case_ids)  # A's claim, B's
    assert second.alive()
    ranks = query(db_url, "SELECT array_agg(rank ORDER BY rank) AS ranks FROM match_results GROUP BY case_image_id")
    assert [r["ranks"] for r in ranks] == [[1, 2, 3]] * len(case_ids)  # no duplicate results
    embedded = query(db_url, "SELECT case_id FROM audit_log WHERE action = 'embedded' ORDER BY case_id")
    assert [row["case_id"] for row in embedded] == sorted(case_ids)  # each case finished exactly once


# PostgreSQL restarted under load -------------------------------------------------------------------


class OwnPostgres:
    """A PostgreSQL of this test alone (the session's server is shared by every other test)."""

    def __init__(self) -> None:
        self.server = pgserver.get_server(Path(tempfile.mkdtemp(prefix="raiox-rel-pg-")), cleanup_mode="delete")
        self.url = self.server.get_uri()

    def stop(self) -> None:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.server.pgdata, user=self.server.system_user)

    def start(self) -> None:
        with self.server._lock:
            self.server.ensure_postgres_running()
        assert self.server.get_uri() == self.url


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    postgres = OwnPostgres()
    try:
        yield postgres
    finally:
        postgres.server.cleanup()  # stops it if it runs, then deletes its data


def test_postgres_restart_under_load_answers_503_then_retries_succeed(own_postgres: OwnPostgres, tmp_path: Path,
                                                                       processes: Processes) -> None:
    url = own_postgres.url
    migrations.migrate(url)
    env = processes.env(url, tmp_path / "home", RAIOX_ENV="dev", WEBHOOK_TOKEN=TOKEN, EMBED_URL="",
                        RAIOX_STORAGE=(tmp_path / "objects").as_uri(), DATABASE_TIMEOUT_SECONDS="2")
    base, dev = processes.dev(env)
    ids = [str(7_200_000_000_000_000_000 + n) for n in range(80)]
    files = {f"/uploads/{sid}.png": make_xray(100 + n) for n, sid in enumerate(ids)}
    answers: dict[str, list[tuple[int, dict[str, str]]]] = {sid: [] for sid in ids}
    outage = threading.Event()

    with serve_files(files) as file_base:
        def deliver(sid: str) -> None:
            response = post_jotform(base, file_base, sid)
            answers[sid].append((response.status_code, dict(response.headers)))

        with ThreadPoolExecutor(max_workers=4) as pool:
            for sid in ids[:20]:
                pool.submit(deliver, sid)
            wait_until(lambda: sum(map(len, answers.values())) >= 10, 60, "the first deliveries")
            own_postgres.stop()
            outage.set()
            for sid in ids[20:60]:
                pool.submit(deliver, sid)
            wait_until(lambda: sum(1 for r in answers.values() for s, _ in r if s == 503) >= 8, 120,
                     "deliveries to be refused while the database is down")
            own_postgres.start()
            for sid in ids[60:]:
                pool.submit(deliver, sid)
        # Jotform (or any sender) retries what was refused; the pool reconnects on its own.
        for sid in ids:
            deadline = time.monotonic() + 60
            while answers[sid][-1][0] == 503:
                assert time.monotonic() < deadline, f"{sid} still refused after the restart\n{dev.tail()}"
                time.sleep(0.5)
                deliver(sid)

    replies = [reply for replies in answers.values() for reply in replies]
    assert {status for status, _ in replies} <= {200, 202, 503}, (sorted({s for s, _ in replies}), dev.tail())
    refused = [headers for status, headers in replies if status == 503]
    assert len(refused) >= 8 and all(h.get("Retry-After") for h in refused)
    assert all(replies[-1][0] in (200, 202) for replies in answers.values())
    cases = query(url, "SELECT submission_id FROM cases")
    assert sorted(c["submission_id"] for c in cases) == sorted(ids)  # each exactly once
    assert_every_case_whole(url, lambda key: (tmp_path / "objects" / key).is_file())


# Object storage down -------------------------------------------------------------------------------


def test_object_storage_down_answers_503_and_keeps_no_case(db_url: str, tmp_path: Path,
                                                           processes: Processes) -> None:
    from moto.server import ThreadedMotoServer

    from raiox.tools.local import free_port

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    running = True
    try:
        endpoint = f"http://127.0.0.1:{port}"
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="k",
                          aws_secret_access_key="s", config=Config(s3={"addressing_style": "path"}))
        s3.create_bucket(Bucket="raiox-rel")
        env = processes.env(db_url, tmp_path / "home", RAIOX_ENV="dev", WEBHOOK_TOKEN=TOKEN, EMBED_URL="",
                            RAIOX_STORAGE="s3://raiox-rel/x", SPACES_ENDPOINT=endpoint, SPACES_KEY="k",
                            SPACES_SECRET="s")
        base, dev = processes.dev(env)
        ids = [str(7_300_000_000_000_000_000 + n) for n in range(4)]
        files = {f"/uploads/{sid}.png": make_xray(200 + n) for n, sid in enumerate(ids)}
        with serve_files(files) as file_base:
            assert post_jotform(base, file_base, ids[0]).status_code == 202
            moto.stop()
            running = False
            for sid in ids[1:]:
                refused = post_jotform(base, file_base, sid)
                assert refused.status_code == 503, (refused.status_code, refused.text, dev.tail())
                assert refused.headers["Retry-After"] and "object storage" in refused.json()["error"]
            assert [c["submission_id"] for c in query(db_url, "SELECT submission_id FROM cases")] == ids[:1]
            moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            moto.start()
            running = True
            if "raiox-rel" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
                s3.create_bucket(Bucket="raiox-rel")  # moto may forget its buckets when it stops
            for sid in ids[1:]:
                assert post_jotform(base, file_base, sid).status_code == 202  # the sender's retry
        assert sorted(c["submission_id"] for c in query(db_url, "SELECT submission_id FROM cases")) == ids

        def in_bucket(key: str) -> bool:
            try:
                s3.head_object(Bucket="raiox-rel", Key=f"x/{key}")
            except s3.exceptions.ClientError:
                return False
            return True

        later = query(db_url, "SELECT i.storage_key FROM case_images i JOIN cases c ON c.id = i.case_id "
                              "WHERE c.submission_id = ANY(%s)", ids[1:])
        assert len(later) == 3 and all(in_bucket(row["storage_key"]) for row in later)
        assert_every_case_whole(db_url, lambda key: True)
    finally:
        if running:
            moto.stop()


# Jotform down for a while --------------------------------------------------------------------------


def test_jotform_down_for_a_while_the_decision_lands_once_after_recovery(
    catalogued: Services, db_url: str, tmp_path: Path, processes: Processes,
) -> None:
    jotform = FakeServer()
    try:
        env = processes.env(db_url, tmp_path / "home", RAIOX_ENV="dev", WEBHOOK_TOKEN=TOKEN,
                            JOTFORM_API_BASE=jotform.url, JOTFORM_API_KEY="jf-key",
                            JOTFORM_RESULT_FIELDS="system=12,decision=16", NOTIFY_TIMEOUT_SECONDS="2")
        base, dev = processes.dev(env)  # its webhook pokes its own embed function: no worker needed
        sid = "7400000000000000001"
        with serve_files({f"/uploads/{sid}.png": make_xray(12)}) as file_base:
            accepted = post_jotform(base, file_base, sid)
        assert accepted.status_code == 202, accepted.text
        case_id = accepted.json()["case_id"]
        wait_until(lambda: query(db_url, "SELECT status FROM cases WHERE id = %s", case_id)[0]["status"] == "ready",
                 120, f"case {case_id} to be ready\n{dev.tail()}")

        assert accounts.add_reviewer(catalogued, "dr.rel", "reliable password 1")
        approve = f"{base}{BASE_PATH}/approve"
        token = requests.post(f"{approve}/login", json={"name": "dr.rel", "password": "reliable password 1"},
                              timeout=30).json()["token"]
        decided = requests.post(f"{approve}/cases/{case_id}/decision", json={"action": "approve", "rank": 1},
                                headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert decided.status_code == 200, decided.text

        def sweep() -> dict[str, Any]:
            query(db_url, "UPDATE jobs SET run_after = now() WHERE kind = 'notify' AND status = 'pending'")
            answer = requests.post(f"{base}{BASE_PATH}/notify", json={"sweep": True}, timeout=60)
            assert answer.status_code == 200, answer.text
            return dict(answer.json()["notify"])

        jotform.default = Reply(503, {"responseCode": 503, "message": "Service Unavailable"})
        for _ in range(3):  # down: each sweep tries, fails and schedules a retry (its wait skipped here)
            assert sweep()["retried"] == 1
        assert query(db_url, "SELECT status FROM cases WHERE id = %s", case_id)[0]["status"] == "approved"
        jotform.default = Reply()
        assert sweep()["notified"] == 1
        assert sweep()["claimed"] == 0  # delivered: nothing left to send again
    finally:
        jotform.close()

    assert [r.path for r in jotform.requests] == [f"/submission/{sid}"] * 4  # 3 refused, then the one that landed
    [job] = query(db_url, "SELECT status, attempts, result FROM jobs WHERE kind = 'notify'")
    assert (job["status"], job["attempts"]) == ("done", 4) and job["result"]["jotform"]["status"] == 200
    [case] = query(db_url, "SELECT status, notified_at FROM cases WHERE id = %s", case_id)
    assert case["status"] == "notified" and case["notified_at"] is not None
    notified = query(db_url, "SELECT count(*) AS n FROM audit_log WHERE case_id = %s AND action LIKE '%%notif%%'",
                     case_id)
    assert notified[0]["n"] == 1
