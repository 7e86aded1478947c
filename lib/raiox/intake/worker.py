"""The fetch step's jobs: download each pending X-ray (the same SSRF guard and limits), check that it decodes,
store it (a DICOM film as its windowed PNG, its pixel spacing beside it), then queue the case's embed job. Films
are decoded in a child process with a memory and a time limit (`raiox.adapters.sandbox`): a decompression bomb
fails its X-ray with the limit it broke, and the worker and every other film go on.

A passing trouble (a timeout, a refused connection, 5xx, 408, 429, object storage down) leaves the X-ray
pending and the job retries with backoff; after `FETCH_MAX_ATTEMPTS` it is given up on. A permanent one
(404/410 and other 4xx, a URL the policy refuses, not an image, too large, a decompression bomb) fails that
X-ray at once with its reason. A case left with no usable X-ray becomes `failed`, with the reasons, in the
admin page's "needs attention" list, where it can be retried.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from raiox.adapters.fetch import TRANSIENT_FETCH_ERRORS, FetchError, FetchPolicy, fetch
from raiox.adapters.imaging import ImageError, ImageInfo
from raiox.adapters.sandbox import decode_limits
from raiox.adapters.storage import StorageError, StoredObject
from raiox.database import Connection
from raiox.job_runner import Backoff, Done, Failed, JobReport, JobRunner, Retry
from raiox.models import CaseStatus, Job, JobKind
from raiox.repository import audit, cases, images, jobs
from raiox.services import Services

log = logging.getLogger(__name__)


@dataclass
class FetchReport(JobReport):
    fetched: int = 0
    images_stored: int = 0

    def add(self, done: Done) -> None:
        super().add(done)
        self.images_stored += int(done.result.get("stored", 0))


@dataclass(frozen=True)
class Fetched:
    """One X-ray's try: stored (with what it is), or an error that is passing or permanent."""

    stored: StoredObject | None = None
    info: ImageInfo | None = None
    error: str | None = None
    transient: bool = False


@dataclass
class FetchBatch:
    images: dict[int, list[images.PendingImage]]  # case id → its pending X-rays
    results: dict[int, Fetched] = field(default_factory=dict)  # image id → what its try gave


class FetchStep:
    kind = JobKind.FETCH
    backoff = Backoff(base=5.0, cap=300.0)

    def __init__(self, services: Services) -> None:
        self.services = services
        self.policy = FetchPolicy.from_settings(services.settings)

    def claimed(self, conn: Connection, claimed: list[Job]) -> FetchBatch:
        by_case: dict[int, list[images.PendingImage]] = {}
        for image in images.pending_images(conn, [job.case_id for job in claimed if job.case_id is not None]):
            by_case.setdefault(image.case_id, []).append(image)
        return FetchBatch(by_case)

    def _acquire(self, image: images.PendingImage, deadline: float) -> Fetched:
        settings = self.services.settings
        try:
            data = image.upload if image.upload is not None else fetch(
                image.source_url or "", self.policy, deadline=deadline)
            # Decoded once, in a child process under a memory and a time limit; DICOM is kept as PNG, which the
            # admin page can show.
            examined = self.services.decoders.examine(data, decode_limits(settings))
            del data
            stored = self.services.store.put(examined.kept, namespace="xrays", extension=examined.kept_kind.extension)
        except TRANSIENT_FETCH_ERRORS as error:
            return Fetched(error=str(error), transient=True)
        except (FetchError, ImageError) as error:
            return Fetched(error=str(error))
        except StorageError as error:
            return Fetched(error=f"object storage: {error}", transient=True)
        return Fetched(stored, examined.info)

    def work(self, batch: FetchBatch) -> None:
        """Every pending X-ray of the batch at once on a few threads; each submission's downloads share one
        overall deadline (FETCH_DEADLINE_SECONDS)."""
        deadline = time.monotonic() + self.services.settings.fetch_deadline_seconds
        pending = [image for waiting in batch.images.values() for image in waiting]
        if not pending:
            return
        with ThreadPoolExecutor(max_workers=min(8, len(pending)), thread_name_prefix="fetch") as pool:
            futures = {image.id: pool.submit(self._acquire, image, deadline) for image in pending}
            for image_id, future in futures.items():
                batch.results[image_id] = future.result()

    def finish(self, conn: Connection, job: Job, batch: FetchBatch) -> Done | Failed | Retry:
        assert job.case_id is not None
        stored = 0
        waiting: list[tuple[int, str]] = []
        for image in batch.images.get(job.case_id, []):
            result = batch.results[image.id]
            if result.stored is not None and result.info is not None:
                images.store_image(conn, image.id, storage_key=result.stored.key, sha256=result.stored.sha256,
                                   size_bytes=result.stored.size, content_type=result.stored.content_type,
                                   width=result.info.width, height=result.info.height,
                                   pixel_spacing_mm=result.info.pixel_spacing_mm)
                stored += 1
            elif result.transient:
                waiting.append((image.id, result.error or "unknown trouble"))
            else:
                images.mark_image_failed(conn, image.id, result.error or "unusable")
        if waiting and job.attempts < job.max_attempts:
            for image_id, error in waiting:
                images.note_image_error(conn, image_id, error)
            return Retry("; ".join(sorted({error for _, error in waiting})))
        for image_id, error in waiting:
            images.mark_image_failed(conn, image_id, f"gave up after {job.attempts} attempts: {error}")
        if images.usable_images(conn, job.case_id) == 0:
            return Failed("no usable X-ray: " + "; ".join(images.image_errors(conn, job.case_id)))
        jobs.enqueue(conn, JobKind.EMBED, case_id=job.case_id, max_attempts=self.services.settings.embed_max_attempts)
        audit.record_audit(conn, actor="system:fetch", action="case.fetched", case_id=job.case_id,
                           details={"stored": stored, "attempts": job.attempts})
        return Done("fetched", {"stored": stored})

    def failed_for_good(self, conn: Connection, job: Job, error: str) -> None:
        """The case needs attention: `failed` with the reason, until someone retries it."""
        if job.case_id is None:
            return
        case = cases.get_case(conn, job.case_id)
        if case is not None and case.status == CaseStatus.RECEIVED:
            cases.set_case_status(conn, job.case_id, CaseStatus.FAILED, error=error)
        audit.record_audit(conn, actor="system:fetch", action="fetch_failed", case_id=job.case_id,
                           details={"error": error, "attempts": job.attempts})


def run_fetch_jobs(services: Services, *, worker: str | None = None, deadline: float | None = None) -> FetchReport:
    """Run due fetch jobs until none is due (or the deadline passed): embed's function, the webhook's scheduled
    sweep, `raiox worker` and tests."""
    settings = services.settings
    runner = JobRunner(services, FetchStep(services), lease_seconds=settings.fetch_lease_seconds,
                       per_claim=settings.fetch_jobs_per_call, worker=worker)
    return runner.run(FetchReport(), deadline=deadline)
