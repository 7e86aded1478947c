"""Load: 300 Jotform deliveries from 16 clients (20% repeats) through `raiox dev` and a real embed worker."""

from __future__ import annotations

import random
import threading
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from raiox.services import Services
from raiox.tools.simulator import jotform_fields, multipart, serve_files
from raiox.tools.waiting import wait_until
from reliability.support import Processes, query, webhook_url
from support import make_xray

TOKEN = "load-test-webhook-token"
FORM = "251234567890123"
DELIVERIES = 300
CLIENTS = 16
UNIQUE = 240  # the other 60 deliveries (20%) repeat a submission id, in any order, possibly at the same moment


def test_300_deliveries_16_clients_one_case_each_all_ready(catalogued: Services, db_url: str, tmp_path: Path,
                                                           processes: Processes) -> None:
    # The worker is the only embedder: no poke (EMBED_URL empty), so every case goes through the job table.
    env = processes.env(db_url, tmp_path / "home", RAIOX_ENV="dev", WEBHOOK_TOKEN=TOKEN, EMBED_URL="",
                        JOTFORM_FORM_IDS=FORM, EMBED_LEASE_SECONDS="30")
    base, dev = processes.dev(env)
    worker = processes.worker(env)

    rng = random.Random(9)
    ids = [str(7_100_000_000_000_000_000 + n) for n in range(UNIQUE)]
    deliveries = ids + [rng.choice(ids) for _ in range(DELIVERIES - UNIQUE)]
    rng.shuffle(deliveries)
    files = {f"/uploads/load/{FORM}/{sid}/film.png": make_xray(n) for n, sid in enumerate(ids)}

    answers: dict[str, list[tuple[int, Any]]] = defaultdict(list)
    lock = threading.Lock()
    local = threading.local()

    with serve_files(files) as file_base:
        def deliver(sid: str) -> None:
            if not hasattr(local, "session"):
                local.session = requests.Session()
            body, content_type = multipart(jotform_fields(
                form_id=FORM, submission_id=sid, upload_urls=[f"{file_base}/uploads/load/{FORM}/{sid}/film.png"]))
            response = local.session.post(webhook_url(base, TOKEN), data=body,
                                          headers={"Content-Type": content_type}, timeout=120)
            with lock:
                answers[sid].append((response.status_code, response.json()))

        with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
            list(pool.map(deliver, deliveries))

    statuses = Counter(status for replies in answers.values() for status, _ in replies)
    assert sum(statuses.values()) == DELIVERIES
    assert set(statuses) <= {200, 202}, f"unexpected statuses {statuses}\n{dev.tail()}"
    for sid, replies in answers.items():
        assert sorted(status for status, _ in replies) == [200] * (len(replies) - 1) + [202], (sid, replies)
        assert len({body["case_id"] for _, body in replies}) == 1, (sid, replies)
        assert all(body["duplicate"] for status, body in replies if status == 200)

    cases = query(db_url, "SELECT submission_id, count(*) AS n FROM cases GROUP BY submission_id")
    assert sorted(row["submission_id"] for row in cases) == sorted(ids)
    assert all(row["n"] == 1 for row in cases)

    def all_ready() -> bool:
        assert worker.alive(), worker.tail()
        return query(db_url, "SELECT count(*) AS n FROM cases WHERE status = 'ready'")[0]["n"] == UNIQUE

    try:
        wait_until(all_ready, 240, f"all {UNIQUE} cases to be ready", interval=0.5)
    except TimeoutError:
        left = query(db_url, "SELECT status, count(*) AS n FROM cases GROUP BY status")
        raise AssertionError(f"cases by status: {left}\n{worker.tail()}") from None

    jobs = query(db_url, "SELECT case_id, status FROM jobs WHERE kind = 'embed'")
    assert len(jobs) == UNIQUE and {job["status"] for job in jobs} == {"done"}  # one job per case, none stuck
    assert len({job["case_id"] for job in jobs}) == UNIQUE
    images = query(db_url, "SELECT status, count(*) AS n FROM case_images GROUP BY status")
    assert images == [{"status": "embedded", "n": UNIQUE}]
    # Top-3 per X-ray, each rank once: nothing was written twice.
    ranks = query(db_url, "SELECT case_image_id, array_agg(rank ORDER BY rank) AS ranks FROM match_results "
                          "GROUP BY case_image_id")
    assert len(ranks) == UNIQUE and all(row["ranks"] == [1, 2, 3] for row in ranks)
    audit = query(db_url, "SELECT action, count(*) AS n, count(DISTINCT case_id) AS cases FROM audit_log "
                          "GROUP BY action ORDER BY action")
    assert audit == [{"action": "case.received", "n": UNIQUE, "cases": UNIQUE},
                     {"action": "embedded", "n": UNIQUE, "cases": UNIQUE}]
    assert " 500" not in dev.output() and "Traceback" not in dev.output() + worker.output()
