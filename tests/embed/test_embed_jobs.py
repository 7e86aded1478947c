"""The embed job loop: cases become `ready` with top-3 results; failures retry, then fail; no double work."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from raiox.adapters.storage import StorageError
from raiox.embed.worker import run_embed_batch, run_embed_jobs
from raiox.models import CaseStatus, JobKind
from raiox.repository import cases, jobs
from raiox.services import Services
from support import case_state, make_xray, submit_case


def test_case_becomes_ready_with_top3_per_image(catalogued: Services) -> None:
    case_id = submit_case(catalogued, "s-1", [make_xray(11), make_xray(13)])
    report = run_embed_jobs(catalogued)
    assert (report.claimed, report.ready, report.images_embedded) == (1, 1, 2)
    state = case_state(catalogued, case_id)
    assert state["case"].status == CaseStatus.READY
    assert state["job"]["status"] == "done" and state["job"]["attempts"] == 1
    assert [i["status"] for i in state["images"]] == ["embedded", "embedded"]
    by_image: dict[int, list] = {}
    for row in state["results"]:
        by_image.setdefault(row.position, []).append(row)
    assert [r.rank for r in by_image[0]] == [1, 2, 3]
    assert by_image[0][0].system == "S11" and by_image[1][0].system == "S13"
    assert by_image[0][0].similarity == pytest.approx(1.0, abs=1e-4)
    assert state["audit"] == ["embedded"]


def test_rerunning_a_finished_case_changes_nothing(catalogued: Services) -> None:
    case_id = submit_case(catalogued, "s-2", [make_xray(12)])
    run_embed_jobs(catalogued)
    before = case_state(catalogued, case_id)
    with catalogued.db.transaction() as conn:
        jobs.enqueue(conn, JobKind.EMBED, case_id=case_id)  # e.g. a duplicate poke's job
    report = run_embed_jobs(catalogued)
    assert (report.claimed, report.skipped, report.ready) == (1, 1, 0)
    after = case_state(catalogued, case_id)
    assert after["results"] == before["results"] and after["case"].status == CaseStatus.READY
    assert run_embed_jobs(catalogued).claimed == 0


def test_undecodable_images_fail_alone_or_fail_the_case(catalogued: Services) -> None:
    mixed = submit_case(catalogued, "s-3", [b"\x89PNG\r\n\x1a\ntruncated", make_xray(10)])
    broken = submit_case(catalogued, "s-4", [b"\xff\xd8\xff\xe0 not really a jpeg"])
    run_embed_jobs(catalogued)
    state = case_state(catalogued, mixed)
    assert state["case"].status == CaseStatus.READY
    assert state["images"][0]["status"] == "failed" and "cannot decode PNG" in state["images"][0]["error"]
    failed = case_state(catalogued, broken)
    assert failed["case"].status == CaseStatus.FAILED and "cannot decode JPEG" in failed["case"].error
    assert failed["job"]["status"] == "failed" and failed["job"]["attempts"] == 1  # no pointless retries
    assert failed["audit"] == ["embed_failed"]


class FlakyStore:
    """Object storage that is down for its first `failures` reads."""

    def __init__(self, inner, failures: int) -> None:  # type: ignore[no-untyped-def]
        self.inner, self.failures = inner, failures

    def get(self, key: str) -> bytes:
        if self.failures > 0:
            self.failures -= 1
            raise StorageError("object storage unreachable during get_object: EndpointConnectionError")
        return self.inner.get(key)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.inner, name)


def _make_due(services: Services, case_id: int) -> None:
    with services.db.transaction() as conn:
        conn.execute("UPDATE jobs SET run_after = now() WHERE case_id = %s", (case_id,))


def test_storage_outage_retries_with_backoff_then_succeeds(catalogued: Services) -> None:
    case_id = submit_case(catalogued, "s-5", [make_xray(14)])
    catalogued._built["store"] = FlakyStore(catalogued.store, failures=1)
    report = run_embed_jobs(catalogued)
    assert (report.retried, report.ready) == (1, 0)
    state = case_state(catalogued, case_id)
    assert state["case"].status == CaseStatus.EMBEDDING
    assert state["job"]["status"] == "pending" and "unreachable" in state["job"]["last_error"]
    assert run_embed_jobs(catalogued).claimed == 0  # backing off, not due yet
    _make_due(catalogued, case_id)
    assert run_embed_jobs(catalogued).ready == 1
    assert case_state(catalogued, case_id)["job"]["attempts"] == 2


def test_retries_stop_at_max_attempts_and_the_case_fails(catalogued: Services) -> None:
    case_id = submit_case(catalogued, "s-6", [make_xray(14)])
    catalogued._built["store"] = FlakyStore(catalogued.store, failures=100)
    for _ in range(catalogued.settings.embed_max_attempts):
        _make_due(catalogued, case_id)
        run_embed_jobs(catalogued)
    state = case_state(catalogued, case_id)
    assert state["job"]["status"] == "failed"
    assert state["job"]["attempts"] == catalogued.settings.embed_max_attempts
    assert state["case"].status == CaseStatus.FAILED and "unreachable" in state["case"].error


def test_two_workers_never_process_a_job_twice(catalogued: Services) -> None:
    case_ids = [submit_case(catalogued, f"c-{n}", [make_xray(10 + n % 5), make_xray(100 + n)]) for n in range(10)]
    catalogued.settings.embed_jobs_per_call = 2
    barrier = threading.Barrier(2)

    def work(name: str) -> None:
        barrier.wait()
        run_embed_jobs(catalogued, worker=name)

    threads = [threading.Thread(target=work, args=(f"w{n}",)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for case_id in case_ids:
        state = case_state(catalogued, case_id)
        assert state["case"].status == CaseStatus.READY
        assert state["job"]["attempts"] == 1
        assert state["audit"] == ["embedded"]
        ranks: dict[tuple[int, int], list[int]] = {}
        for result in state["results"]:  # each implant on each film has its own top 3, written once
            ranks.setdefault((result.case_image_id, result.finding_position), []).append(result.rank)
        assert len({image for image, _ in ranks}) == 2 and all(r == [1, 2, 3] for r in ranks.values())
    with catalogued.db.transaction() as conn:
        owners = {r["lease_owner"] for r in conn.execute("SELECT lease_owner FROM jobs")}
    assert owners == {None}  # every lease released


def test_a_dead_workers_job_is_taken_over_after_its_lease(catalogued: Services) -> None:
    case_id = submit_case(catalogued, "s-7", [make_xray(13)])
    with catalogued.db.transaction() as conn:  # a worker claims, marks the case, then dies
        [job] = jobs.claim(conn, JobKind.EMBED, worker="dead", limit=1, lease=timedelta(minutes=5))
        cases.set_case_status(conn, case_id, CaseStatus.EMBEDDING)
    assert run_embed_batch(catalogued, worker="alive").claimed == 0  # still leased
    with catalogued.db.transaction() as conn:
        conn.execute("UPDATE jobs SET leased_until = now() - interval '1 second' WHERE id = %s", (job.id,))
    assert run_embed_batch(catalogued, worker="alive").ready == 1
    state = case_state(catalogued, case_id)
    assert state["case"].status == CaseStatus.READY and state["job"]["attempts"] == 2
    with catalogued.db.transaction() as conn:
        assert not jobs.complete(conn, job.id, worker="dead")  # its late finish is refused


def test_a_batch_that_cannot_be_encoded_retries_every_job(catalogued: Services) -> None:
    case_ids = [submit_case(catalogued, f"oom-{n}", [make_xray(30 + n)]) for n in range(2)]

    class OutOfMemory:
        model_id = catalogued.encoder.model_id

        def identify(self, images: list[bytes], spacings: object = None) -> None:
            raise RuntimeError("CUDA out of memory")

    catalogued._built["encoder"] = OutOfMemory()
    report = run_embed_jobs(catalogued)
    assert (report.claimed, report.retried, report.ready) == (2, 2, 0)
    for case_id in case_ids:
        state = case_state(catalogued, case_id)
        assert state["job"]["status"] == "pending" and "out of memory" in state["job"]["last_error"]
        assert state["case"].status == CaseStatus.EMBEDDING
        assert state["job"]["lease_owner"] is None
