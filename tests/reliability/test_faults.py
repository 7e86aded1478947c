"""Faults: a worker killed mid-batch, Jotform down for a while. (Database and object storage outages during intake:
test_load.py.)"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import psycopg
import requests

from fakes import FakeServer, Reply
from raiox.review import accounts
from raiox.services import Services
from raiox.tools.local import BASE_PATH
from raiox.tools.simulator import jotform_fields, multipart, serve_files
from raiox.tools.waiting import wait_until
from reliability.support import Processes, query, webhook_url
from support import make_xray, submit_case

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset

TOKEN = "fault-test-webhook-token"
FORM = "251234567890123"


def post_jotform(base: str, file_base: str, sid: str, *, timeout: float = 60) -> requests.Response:
    body, content_type = multipart(jotform_fields(form_id=FORM, submission_id=sid,
                                                  upload_urls=[f"{file_base}/uploads/{sid}.png"]))
    return requests.post(webhook_url(base, TOKEN), data=body, headers={"Content-Type": content_type},
                         timeout=timeout)


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


# Jotform down for a while --------------------------------------------------------------------------


def test_jotform_down_for_a_while_the_decision_lands_once_after_recovery(
    catalogued: Services, db_url: str, tmp_path: Path, processes: Processes,
) -> None:
    jotform = FakeServer()
    try:
        env = processes.env(db_url, tmp_path / "home", RAIOX_ENV="dev", WEBHOOK_TOKEN=TOKEN,
                            JOTFORM_API_BASE=jotform.url, JOTFORM_API_KEY="jf-key",
                            JOTFORM_RESULT_FIELDS="system=12,decision=16", NOTIFY_TIMEOUT_SECONDS="2",
                            NOTIFY_URL="")  # no poke: the sweeps below drive delivery
        base, dev = processes.dev(env)  # its webhook pokes its own embed function: no worker needed
        sid = "7400000000000000001"
        with serve_files({f"/uploads/{sid}.png": make_xray(12)}) as file_base:
            accepted = post_jotform(base, file_base, sid)
            assert accepted.status_code == 202, accepted.text
            case_id = accepted.json()["case_id"]
            wait_until(lambda: query(db_url, "SELECT status FROM cases WHERE id = %s", case_id)[0]["status"]
                       == "ready", 120, f"case {case_id} to be ready\n{dev.tail()}")

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
