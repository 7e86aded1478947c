"""Matching: top-k implant systems for an embedding, and the embed job loop that turns cases `ready`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel

from raiox.adapters.storage import ObjectNotFound, StorageError
from raiox.database import Connection
from raiox.jobloop import LostLease, default_worker_name, retry_delay
from raiox.models import CaseStatus, Job, JobKind
from raiox.repository import cases, catalog, jobs
from raiox.services import Services
from raiox.settings import Settings

if TYPE_CHECKING:
    from raiox.adapters.encoder import Encoder

log = logging.getLogger(__name__)


class Candidate(BaseModel):
    """One proposed implant system; similarity is the cosine similarity of its best reference image."""

    rank: int
    implant_id: int
    manufacturer: str
    system: str
    similarity: float
    reference_image_id: int
    reference_storage_key: str


def find_candidates(
    conn: Connection, embedding: np.ndarray, model_id: str, *, k: int = 3, ef_search: int = 64
) -> list[Candidate]:
    """The k most similar implant systems (never two slots for one implant), compared only within model_id.

    The HNSW scan returns `ef_search` nearest references; when they cover fewer than k implants although
    the catalog has more (many references per implant, or other models' rows filtered out), the same
    statement runs once more as an exact scan.
    """
    catalog.set_ef_search(conn, ef_search)
    rows = catalog.top_implants(conn, embedding, model_id, k=k, candidates=ef_search)
    if len(rows) < k and len(rows) < catalog.implant_count(conn, model_id):
        log.info("HNSW candidates covered %d implants; falling back to an exact scan", len(rows))
        conn.execute("SELECT set_config('enable_indexscan', 'off', true)")
        rows = catalog.top_implants(conn, embedding, model_id, k=k, candidates=2**31 - 1)
        conn.execute("SELECT set_config('enable_indexscan', 'on', true)")
    return [
        Candidate(rank=rank, implant_id=row["implant_id"], manufacturer=row["manufacturer"],
                  system=row["system"], similarity=float(row["similarity"]),
                  reference_image_id=row["reference_image_id"], reference_storage_key=row["storage_key"])
        for rank, row in enumerate(rows, start=1)
    ]


def is_low_confidence(similarities: list[float], settings: Settings) -> bool:
    """Whether a ranking (best first) deserves a careful look: a weak best match, or a runner-up too close."""
    if not similarities:
        return True
    margin = similarities[0] - similarities[1] if len(similarities) > 1 else 1.0
    return (similarities[0] < settings.raiox_low_confidence_similarity
            or margin < settings.raiox_low_confidence_margin)


def match_image(services: Services, data: bytes) -> list[Candidate]:
    """Direct mode: one image in, its top-k out; nothing is stored. Raises ImageError for bad images."""
    encoder = services.encoder
    embedding = encoder.encode_one(data)
    with services.db.transaction() as conn:
        return find_candidates(conn, embedding, encoder.model_id, k=services.settings.raiox_top_k,
                               ef_search=services.settings.raiox_hnsw_ef_search)


# The embed job loop -----------------------------------------------------------------------------


@dataclass
class EmbedReport:
    claimed: int = 0
    ready: int = 0
    retried: int = 0
    failed: int = 0
    skipped: int = 0
    images_embedded: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, other: EmbedReport) -> None:
        for name in ("claimed", "ready", "retried", "failed", "skipped", "images_embedded"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors.extend(other.errors)


ImageRows = list[dict[str, Any]]


def _claim(services: Services, worker: str) -> tuple[list[Job], dict[int, ImageRows], dict[int, str]]:
    """Lease due embed jobs and move their cases to `embedding`: (jobs, images by case, case status by job)."""
    settings = services.settings
    with services.db.transaction() as conn:
        claimed = jobs.claim(conn, JobKind.EMBED, worker=worker, limit=settings.embed_jobs_per_call,
                             lease=timedelta(seconds=settings.embed_lease_seconds))
        statuses: dict[int, str] = {}
        for job in claimed:
            case = cases.get_case(conn, job.case_id) if job.case_id is not None else None
            status = case.status if case else None
            if status == CaseStatus.RECEIVED:
                status = cases.set_case_status(conn, case.id, CaseStatus.EMBEDDING).status
            statuses[job.id] = str(status)
        images = cases.images_of_cases(conn, [job.case_id for job in claimed if job.case_id is not None])
    by_case: dict[int, ImageRows] = {}
    for image in images:
        by_case.setdefault(image["case_id"], []).append(image)
    return claimed, by_case, statuses


def _finish_job(services: Services, encoder: Encoder, job: Job, worker: str, images: ImageRows,
                outcome: dict[int, np.ndarray | str]) -> str:
    """Write one job's embeddings and results and move its case, all in one transaction; returns the outcome."""
    settings = services.settings
    with services.db.transaction() as conn:
        embedded = 0
        for image in images:
            result = outcome.get(image["id"])
            if isinstance(result, str):
                cases.mark_image_failed(conn, image["id"], result)
            elif result is not None:
                candidates = find_candidates(conn, result, encoder.model_id, k=settings.raiox_top_k,
                                             ef_search=settings.raiox_hnsw_ef_search)
                cases.save_image_embedding(conn, image["id"], encoder.model_id, result)
                cases.replace_match_results(conn, image["id"], encoder.model_id,
                                            [c.model_dump() for c in candidates])
                embedded += 1
        already = sum(1 for image in images if image["status"] == "embedded" and image["model_id"] == encoder.model_id)
        if embedded + already == 0:
            reason = "; ".join(sorted({r for r in outcome.values() if isinstance(r, str)})) or "no images"
            if jobs.fail(conn, job.id, worker=worker, error=reason, retry_in=None) is None:
                raise LostLease(f"job {job.id}")
            cases.set_case_status(conn, job.case_id, CaseStatus.FAILED, error=reason)
            cases.record_audit(conn, actor="system:embed", action="embed_failed", case_id=job.case_id,
                               details={"error": reason})
            return "failed"
        cases.set_case_status(conn, job.case_id, CaseStatus.READY)
        if not jobs.complete(conn, job.id, worker=worker, result={"images_embedded": embedded,
                                                                   "model_id": encoder.model_id}):
            raise LostLease(f"job {job.id}")
        cases.record_audit(conn, actor="system:embed", action="embedded", case_id=job.case_id,
                           details={"images": embedded, "model_id": encoder.model_id})
        return "ready"


def _retry_or_fail(services: Services, job: Job, worker: str, error: str) -> str:
    with services.db.transaction() as conn:
        status = jobs.fail(conn, job.id, worker=worker, error=error, retry_in=retry_delay(job.attempts))
        if status == "failed" and job.case_id is not None:
            cases.set_case_status(conn, job.case_id, CaseStatus.FAILED, error=error)
            cases.record_audit(conn, actor="system:embed", action="embed_failed", case_id=job.case_id,
                               details={"error": error, "attempts": job.attempts})
        return status or "lost"


def _load_and_encode(
    services: Services, encoder: Encoder, work: list[tuple[Job, ImageRows, ImageRows]]
) -> tuple[dict[int, np.ndarray | str], dict[int, str]]:
    """Read and encode every image of the batch at once: (image id → embedding or error, job id → trouble).
    A store outage retries its job later; a missing object or an undecodable image fails that image."""
    outcome: dict[int, np.ndarray | str] = {}
    blobs: list[tuple[int, bytes]] = []
    storage_trouble: dict[int, str] = {}
    for job, _, todo in work:
        for image in todo:
            try:
                blobs.append((image["id"], services.store.get(image["storage_key"])))
            except ObjectNotFound:
                outcome[image["id"]] = "the stored X-ray is missing from object storage"
            except StorageError as exc:
                storage_trouble[job.id] = str(exc)
    encoded = encoder.encode([data for _, data in blobs])
    for position, (image_id, _) in enumerate(blobs):
        error = encoded.errors.get(position)
        outcome[image_id] = str(error) if error is not None else encoded.embeddings[position]
    return outcome, storage_trouble


def run_embed_batch(services: Services, *, worker: str | None = None) -> EmbedReport:
    """Claim one batch of due embed jobs, encode all their images in one pass, write results per job."""
    encoder = services.encoder
    worker = worker or default_worker_name()
    report = EmbedReport()
    claimed, images_by_case, statuses = _claim(services, worker)
    report.claimed = len(claimed)
    work: list[tuple[Job, ImageRows, ImageRows]] = []  # (job, all its case's images, those to embed now)
    for job in claimed:
        if statuses[job.id] != CaseStatus.EMBEDDING:
            # Finished already (ready or beyond) or gone: re-running it changes nothing.
            with services.db.transaction() as conn:
                jobs.complete(conn, job.id, worker=worker, result={"skipped": statuses[job.id]})
            report.skipped += 1
            continue
        todo = [i for i in images_by_case.get(job.case_id, [])
                if i["status"] == "stored" or (i["status"] == "embedded" and i["model_id"] != encoder.model_id)]
        work.append((job, images_by_case.get(job.case_id, []), todo))

    try:
        outcome, storage_trouble = _load_and_encode(services, encoder, work)
    except Exception as exc:  # e.g. out of GPU memory: every job of the batch retries later
        log.exception("embed batch of %d job(s) failed", len(work))
        outcome, storage_trouble = {}, {job.id: f"{type(exc).__name__}: {exc}" for job, _, _ in work}

    for job, images, todo in work:
        try:
            if job.id in storage_trouble:
                raise StorageError(storage_trouble[job.id])
            result = _finish_job(services, encoder, job, worker, images, outcome)
            report.images_embedded += sum(1 for i in todo if not isinstance(outcome.get(i["id"]), str))
            if result == "ready":
                report.ready += 1
            else:
                report.failed += 1
        except LostLease:
            log.warning("embed job %d was taken over by another worker; its results were discarded", job.id)
        except Exception as exc:  # noqa: BLE001 - any failure of one job must not sink the batch
            log.exception("embed job %d failed", job.id)
            error = f"{type(exc).__name__}: {exc}"
            report.errors.append(error)
            if _retry_or_fail(services, job, worker, error) == "failed":
                report.failed += 1
            else:
                report.retried += 1
    return report


def run_embed_jobs(services: Services, *, worker: str | None = None,
                   max_batches: int | None = None) -> EmbedReport:
    """Run batches until no embed job is due (or `max_batches` ran)."""
    total = EmbedReport()
    batches = 0
    while max_batches is None or batches < max_batches:
        report = run_embed_batch(services, worker=worker)
        total.add(report)
        batches += 1
        if report.claimed == 0:
            break
    return total
