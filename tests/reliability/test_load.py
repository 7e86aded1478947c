"""No submission is lost: 300 Jotform deliveries from 16 clients (20% repeats) through `raiox dev` and a real
worker, while 30% of the film hosts fail 1–3 times before answering, the database goes away for 10 s and
object storage for a while — every unique submission becomes exactly one case, all ready but those whose film
never works, which end as visible failed cases."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config

from fakes import FileServer, OutageProxy
from raiox import migrations
from raiox.tools.catalog import ReferenceSystem
from raiox.tools.simulator import jotform_fields, multipart
from raiox.tools.waiting import wait_until
from reliability.support import OwnPostgres, Processes, query, webhook_url
from support import CATALOG_SEEDS, make_xray

TOKEN = "load-test-webhook-token"
FORM = "251234567890123"
DELIVERIES = 300
CLIENTS = 16
UNIQUE = 240  # the other 60 deliveries (20%) repeat a submission id, in any order, possibly at the same moment
NEVER = 6  # submissions whose film never works: 3 answer 404, 3 answer 503 every time


@pytest.fixture
def s3_behind_a_proxy() -> Iterator[tuple[str, OutageProxy, Any]]:
    """A moto S3 server (its own, so it keeps its objects) reached through a proxy that can be cut."""
    from moto.server import ThreadedMotoServer

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    _, port = moto.get_host_and_port()
    proxy = OutageProxy(port)
    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                      aws_access_key_id="k", aws_secret_access_key="s", config=Config(s3={"addressing_style": "path"}))
    s3.create_bucket(Bucket="raiox-load")
    try:
        yield f"http://127.0.0.1:{proxy.port}", proxy, s3
    finally:
        proxy.close()
        moto.stop()


def test_no_submission_is_lost_through_flaky_hosts_and_outages(
    own_postgres: OwnPostgres, s3_behind_a_proxy: tuple[str, OutageProxy, Any], tmp_path: Path,
    processes: Processes, tiny_encoder: Any,
) -> None:
    url = own_postgres.url
    endpoint, storage, s3 = s3_behind_a_proxy
    migrations.migrate(url)
    # The worker is the only fetcher and embedder: no poke (EMBED_URL empty), so every case goes through the
    # job table. Short database waits, four fetch attempts (a flaky host fails at most three times).
    env = processes.env(url, tmp_path / "home", RAIOX_ENV="dev", WEBHOOK_TOKEN=TOKEN, EMBED_URL="",
                        JOTFORM_FORM_IDS=FORM, JOTFORM_XRAY_FIELD="xrayImage", EMBED_LEASE_SECONDS="30",
                        RAIOX_STORAGE="s3://raiox-load/x", SPACES_ENDPOINT=endpoint, SPACES_KEY="k",
                        SPACES_SECRET="s", DATABASE_TIMEOUT_SECONDS="2", FETCH_MAX_ATTEMPTS="4",
                        FETCH_TIMEOUT_SECONDS="3")
    _import_catalog(env, tmp_path, processes)
    base, dev = processes.dev(env)
    worker = processes.worker(env)

    rng = random.Random(9)
    ids = [str(7_100_000_000_000_000_000 + n) for n in range(UNIQUE)]
    deliveries = ids + [rng.choice(ids) for _ in range(DELIVERIES - UNIQUE)]
    rng.shuffle(deliveries)
    never = set(ids[:NEVER])
    films = FileServer()
    film_of: dict[str, str] = {}
    for n, sid in enumerate(ids):
        films.files[f"{sid}.png"] = make_xray(CATALOG_SEEDS[n % len(CATALOG_SEEDS)] + 1000 * (n + 1))
        if sid in never:
            film_of[sid] = f"/status/{404 if n < 3 else 503}"
        elif rng.random() < 0.3:
            film_of[sid] = f"/flaky/{rng.randint(1, 3)}/{sid}.png"
        else:
            film_of[sid] = f"/uploads/{sid}.png"

    answers: dict[str, list[tuple[int, Any]]] = defaultdict(list)
    lock = threading.Lock()
    local = threading.local()
    sent = Counter[str]()

    def deliver(sid: str) -> None:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        body, content_type = multipart(jotform_fields(form_id=FORM, submission_id=sid,
                                                      upload_urls=[films.url(film_of[sid])]))
        while True:  # a 503 (both stores down at once) is what a sender retries; nothing else is
            response = local.session.post(webhook_url(base, TOKEN), data=body,
                                          headers={"Content-Type": content_type}, timeout=120)
            with lock:
                answers[sid].append((response.status_code, response.json()))
                sent["total"] += 1
            if response.status_code != 503:
                return
            time.sleep(0.5)

    try:
        with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
            futures = [pool.submit(deliver, sid) for sid in deliveries[:80]]
            wait_until(lambda: sent["total"] >= 60, 120, "the first deliveries")
            own_postgres.stop()  # 10 s without a database: deliveries go to the inbox
            futures += [pool.submit(deliver, sid) for sid in deliveries[80:180]]
            time.sleep(10)
            own_postgres.start()
            for future in futures:  # everything sent so far is answered
                future.result()
            storage.cut()  # object storage away: intake records, fetching waits
            futures += [pool.submit(deliver, sid) for sid in deliveries[180:]]
            time.sleep(8)
            storage.restore()
            for future in futures:
                future.result()

        statuses = Counter(status for replies in answers.values() for status, _ in replies)
        assert set(statuses) <= {200, 202, 503}, f"unexpected statuses {statuses}\n{dev.tail()}"
        queued = sum(1 for replies in answers.values() for _, body in replies if body.get("queued"))
        assert queued >= 10, "the database outage should have sent deliveries to the inbox"

        def settled() -> bool:
            assert worker.alive(), worker.tail()
            counts = {r["status"]: r["n"] for r in query(url, "SELECT status, count(*) AS n FROM cases GROUP BY 1")}
            return counts.get("ready", 0) == UNIQUE - NEVER and counts.get("failed", 0) == NEVER

        try:
            wait_until(settled, 300, "every case to be ready, and the never-working ones failed", interval=0.5)
        except TimeoutError:
            left = query(url, "SELECT status, count(*) AS n FROM cases GROUP BY status")
            raise AssertionError(f"cases by status: {left}\n{worker.tail()}") from None
    finally:
        films.close()

    cases = query(url, "SELECT submission_id, count(*) AS n FROM cases GROUP BY submission_id")
    assert sorted(row["submission_id"] for row in cases) == sorted(ids)  # none lost, none twice
    assert all(row["n"] == 1 for row in cases)
    failed = query(url, "SELECT submission_id, error FROM cases WHERE status = 'failed'")
    assert {row["submission_id"] for row in failed} == never
    assert all("HTTP 404" in row["error"] or "gave up after 4 attempts" in row["error"] for row in failed)
    assert s3.list_objects_v2(Bucket="raiox-load", Prefix="x/inbox/").get("KeyCount") == 0  # inbox replayed
    jobs = query(url, "SELECT kind, status, count(*) AS n FROM jobs GROUP BY kind, status ORDER BY kind, status")
    assert jobs == [{"kind": "embed", "status": "done", "n": UNIQUE - NEVER},
                    {"kind": "fetch", "status": "done", "n": UNIQUE - NEVER},
                    {"kind": "fetch", "status": "failed", "n": NEVER}]
    ranks = query(url, "SELECT case_image_id, array_agg(rank ORDER BY rank) AS ranks FROM match_results "
                       "GROUP BY case_image_id, finding_position")  # each implant on a film has its own top 3
    assert all(row["ranks"] == [1, 2, 3] for row in ranks)  # written once
    assert len({row["case_image_id"] for row in ranks}) == UNIQUE - NEVER
    assert " 500" not in dev.output()
    assert "Traceback" not in dev.output()


def _import_catalog(env: dict[str, str], tmp_path: Path, processes: Processes) -> None:
    """The five test implants, imported by the real command into this test's database and bucket."""
    import subprocess
    import sys

    from raiox.tools.catalog import write_catalog

    manifest = write_catalog(tmp_path / "refs", [ReferenceSystem("Maker", f"S{seed}", [make_xray(seed)])
                                                 for seed in CATALOG_SEEDS])
    run = subprocess.run([sys.executable, "-m", "raiox.tools.cli", "catalog", "import", str(manifest), "--quiet"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
