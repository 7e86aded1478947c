"""Faults: a worker killed mid-batch, Jotform down for a while. (Database and object storage outages during intake:
test_load.py.)"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
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
    ranks = query(db_url, "SELECT case_image_id, array_agg(rank ORDER BY rank) AS ranks FROM match_results "
                          "GROUP BY case_image_id, finding_position")  # each implant on a film has its own top 3
    assert ranks and all(r["ranks"] == [1, 2, 3] for r in ranks)  # no duplicate results
    assert len({r["case_image_id"] for r in ranks}) == len(case_ids)
    embedded = query(db_url, "SELECT case_id FROM audit_log WHERE action = 'embedded' ORDER BY case_id")
    assert [row["case_id"] for row in embedded] == sorted(case_ids)  # each case finished exactly once


# A film that kills its worker, every time ---------------------------------------------------------


class _KillingFiles(Mapping[str, bytes]):
    """Film paths → bytes, except that asking for the poison film kills the worker that asked (the stand-in for
    a film whose decoding takes the whole worker down, however that happens)."""

    def __init__(self, films: dict[str, bytes], poison: str, workers: list[Any]) -> None:
        self.films, self.poison, self.workers, self.kills = films, poison, workers, 0

    def __getitem__(self, path: str) -> bytes:
        if path == self.poison:
            self.kills += 1
            # A worker may fetch before `processes.worker` returned it (it starts work once its encoder is
            # loaded): wait for the running one to be known, then kill it.
            wait_until(lambda: bool(self.workers) and self.workers[-1].alive(), 60, "the running worker")
            self.workers[-1].kill()
            raise KeyError(path)
        return self.films[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self.films)

    def __len__(self) -> int:
        return len(self.films)


def test_a_film_that_kills_its_worker_fails_alone_and_every_other_submission_gets_ready(
        catalogued: Services, db_url: str, tmp_path: Path, processes: Processes) -> None:
    """Seven submissions in one fetch batch, one of them poison: each time a worker takes the poison job it dies.
    Taken-over jobs run one at a time, so the six others are fetched and embedded; the poison job, its attempts
    used up, fails with the reason and its case needs attention; it never comes back."""
    from raiox.intake.receive import receive
    from raiox.intake.submission import from_json

    workers: list[Any] = []
    good = {f"/uploads/good-{n}.png": make_xray(40 + n) for n in range(6)}
    files = _KillingFiles(good, "/uploads/poison.png", workers)
    with serve_files(files) as file_base:
        paths = ["/uploads/good-0.png", "/uploads/good-1.png", "/uploads/good-2.png", "/uploads/poison.png",
                 "/uploads/good-3.png", "/uploads/good-4.png", "/uploads/good-5.png"]
        with Services(catalogued.settings.model_copy(update={"fetch_max_attempts": 3})) as intake:
            case_ids = [receive(from_json({"image_url": f"{file_base}{path}"}), intake).case_id for path in paths]
        poison_case = case_ids[3]
        env = processes.env(db_url, tmp_path / "home", RAIOX_ENV="dev", FETCH_LEASE_SECONDS="10",
                            FETCH_JOBS_PER_CALL="8")

        def settled() -> bool:
            if not workers or not workers[-1].alive():
                workers.append(processes.worker(env, f"worker-{len(workers)}"))  # a supervisor restarts it
            statuses = {row["id"]: row["status"] for row in query(db_url, "SELECT id, status FROM cases")}
            return statuses[poison_case] == "failed" and all(
                statuses[case_id] == "ready" for case_id in case_ids if case_id != poison_case)

        wait_until(settled, 240, "the six good submissions to get ready and the poison one to fail")
    assert files.kills == 3  # one per attempt (its max_attempts, FETCH_MAX_ATTEMPTS when received), no more
    [poison] = query(db_url, "SELECT status, attempts, last_error FROM jobs WHERE kind = 'fetch' AND case_id = %s",
                     poison_case)
    assert (poison["status"], poison["attempts"]) == ("failed", 3)
    assert "its worker stopped (crashed, was killed or hung) during each of its 3 attempts" in poison["last_error"]
    [case] = query(db_url, "SELECT status, error FROM cases WHERE id = %s", poison_case)
    assert case["status"] == "failed" and "its worker stopped" in case["error"]  # on the "needs attention" list
    others = query(db_url, "SELECT attempts FROM jobs WHERE kind = 'fetch' AND case_id <> %s", poison_case)
    assert all(job["attempts"] <= 2 for job in others)  # at most: the killed first batch, then alone


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
