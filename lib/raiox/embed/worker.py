"""The embed step's jobs: read each case's X-rays, find and embed every implant on them together, store each
implant's canonical crop, measurements and top-k, case → ready."""

from __future__ import annotations

from dataclasses import dataclass, field

from raiox.adapters.storage import ObjectNotFound, StorageError
from raiox.database import Connection
from raiox.embed.matching import find_candidates
from raiox.job_runner import Backoff, Done, Failed, JobFailure, JobReport, JobRunner
from raiox.models import CaseStatus, Job, JobKind
from raiox.repository import audit, cases, findings, images, matches
from raiox.services import Services
from raiox.shape.identifier import IdentifiedFilm, ShapeIdentifier

ImageRows = list[images.CaseImage]


@dataclass
class EmbedReport(JobReport):
    ready: int = 0
    skipped: int = 0
    images_embedded: int = 0

    def add(self, done: Done) -> None:
        super().add(done)
        self.images_embedded += int(done.result.get("images_embedded", 0))


@dataclass
class EmbedBatch:
    statuses: dict[int, str]  # job id → its case's status after the claim
    images: dict[int, ImageRows]  # case id → its images
    embedding: dict[int, int]  # job id → case id, for the jobs whose case is being embedded now
    outcome: dict[int, IdentifiedFilm | str] = field(default_factory=dict)  # image id → its implants, or an error
    crops: dict[tuple[int, int], str] = field(default_factory=dict)  # (image id, implant position) → crop key
    storage_trouble: dict[int, str] = field(default_factory=dict)  # job id → why its X-rays could not be read


class EmbedStep:
    kind = JobKind.EMBED
    backoff = Backoff(base=5.0, cap=600.0)

    def __init__(self, services: Services, encoder: ShapeIdentifier) -> None:
        self.services = services
        self.encoder = encoder

    def claimed(self, conn: Connection, claimed: list[Job]) -> EmbedBatch:
        """Cases move received → embedding; a job whose case is already ready (or beyond) will be skipped."""
        statuses: dict[int, str] = {}
        for job in claimed:
            case = cases.get_case(conn, job.case_id) if job.case_id is not None else None
            status = case.status if case else None
            if case is not None and status == CaseStatus.RECEIVED:
                status = cases.set_case_status(conn, case.id, CaseStatus.EMBEDDING).status
            statuses[job.id] = str(status)
        by_case: dict[int, ImageRows] = {}
        for image in images.images_of_cases(conn, [job.case_id for job in claimed if job.case_id is not None]):
            by_case.setdefault(image.case_id, []).append(image)
        embedding = {job.id: job.case_id for job in claimed
                     if job.case_id is not None and statuses[job.id] == CaseStatus.EMBEDDING}
        return EmbedBatch(statuses, by_case, embedding)

    def _todo(self, xrays: ImageRows) -> ImageRows:
        model_id = self.encoder.model_id
        return [i for i in xrays if i.status == "stored" or (i.status == "embedded" and i.model_id != model_id)]

    def work(self, batch: EmbedBatch) -> None:
        """Read every image of the batch and identify them at once, then store each implant's crop. A store
        outage retries its job later; a missing object or an undecodable image fails that image."""
        blobs: list[tuple[int, bytes, tuple[float, float] | None]] = []
        owner: dict[int, int] = {}
        for job_id, case_id in batch.embedding.items():
            for image in self._todo(batch.images.get(case_id, [])):
                owner[image.id] = job_id
                assert image.storage_key is not None  # stored or embedded
                try:
                    spacing = ((image.pixel_spacing_row_mm, image.pixel_spacing_col_mm)
                               if image.pixel_spacing_row_mm and image.pixel_spacing_col_mm is not None else None)
                    blobs.append((image.id, self.services.store.get(image.storage_key), spacing))
                except ObjectNotFound:
                    batch.outcome[image.id] = "the stored X-ray is missing from object storage"
                except StorageError as exc:
                    batch.storage_trouble[job_id] = str(exc)
        identified = self.encoder.identify([data for _, data, _ in blobs], [spacing for _, _, spacing in blobs])
        for position, (image_id, _, _) in enumerate(blobs):
            error = identified.errors.get(position)
            batch.outcome[image_id] = str(error) if error is not None else identified.films[position]
        for image_id, result in batch.outcome.items():
            if isinstance(result, str) or owner.get(image_id) in batch.storage_trouble:
                continue
            try:  # crops are private objects like the films, content-addressed
                for implant in result.implants:
                    stored = self.services.store.put(implant.crop_png(), namespace="crops", extension=".png")
                    batch.crops[(image_id, implant.position)] = stored.key
            except StorageError as exc:
                batch.storage_trouble[owner[image_id]] = str(exc)

    def finish(self, conn: Connection, job: Job, batch: EmbedBatch) -> Done | Failed:
        status = batch.statuses[job.id]
        if status != CaseStatus.EMBEDDING:
            return Done("skipped", {"skipped": status})  # finished already, or gone: re-running changes nothing
        if job.id in batch.storage_trouble:
            raise JobFailure(f"StorageError: {batch.storage_trouble[job.id]}")
        assert job.case_id is not None
        settings, model_id = self.services.settings, self.encoder.model_id
        xrays = batch.images.get(job.case_id, [])
        embedded = implants = without_implant = 0
        for image in xrays:
            result = batch.outcome.get(image.id)
            if isinstance(result, str):
                images.mark_image_failed(conn, image.id, result)
            elif result is not None:
                rows, ranked = [], {}
                for implant in result.implants:
                    rows.append(findings.FindingRow(position=implant.position, found=implant.found,
                                                    crop_key=batch.crops.get((image.id, implant.position)),
                                                    summary=implant.summary(), embedding=implant.embedding))
                    ranked[implant.position] = [matches.RankedMatch.model_validate(c) for c in find_candidates(
                        conn, implant.embedding, model_id, k=settings.raiox_top_k,
                        ef_search=settings.raiox_hnsw_ef_search)]
                images.save_image_embedding(conn, image.id, model_id, result.primary.embedding)
                findings.replace_findings(conn, image.id, model_id, rows)
                matches.replace_matches(conn, image.id, model_id, ranked)
                embedded += 1
                implants += sum(1 for i in result.implants if i.found)
                without_implant += not result.primary.found
        already = sum(1 for i in xrays if i.status == "embedded" and i.model_id == model_id)
        if embedded + already == 0:  # no decodable X-ray: no retry can help
            return Failed("; ".join(sorted({r for r in batch.outcome.values() if isinstance(r, str)})) or "no images")
        cases.set_case_status(conn, job.case_id, CaseStatus.READY)
        audit.record_audit(conn, actor="system:embed", action="embedded", case_id=job.case_id,
                           details={"images": embedded, "implants": implants, "without_implant": without_implant,
                                    "model_id": model_id})
        return Done("ready", {"images_embedded": embedded, "implants_found": implants, "model_id": model_id})

    def failed_for_good(self, conn: Connection, job: Job, error: str) -> None:
        if job.case_id is not None:
            cases.set_case_status(conn, job.case_id, CaseStatus.FAILED, error=error)
            audit.record_audit(conn, actor="system:embed", action="embed_failed", case_id=job.case_id,
                               details={"error": error, "attempts": job.attempts})


def embed_runner(services: Services, *, worker: str | None = None) -> JobRunner[EmbedBatch]:
    settings = services.settings
    return JobRunner(services, EmbedStep(services, services.encoder), lease_seconds=settings.embed_lease_seconds,
                     per_claim=settings.embed_jobs_per_call, worker=worker)


def run_embed_batch(services: Services, *, worker: str | None = None) -> EmbedReport:
    """Claim one batch of due embed jobs, encode all their images in one pass, write results per job."""
    report = EmbedReport()
    embed_runner(services, worker=worker).run_batch(report)
    return report


def run_embed_jobs(services: Services, *, worker: str | None = None, max_batches: int | None = None) -> EmbedReport:
    """Run batches until no embed job is due (or `max_batches` ran): the function, `raiox worker` and tests."""
    return embed_runner(services, worker=worker).run(EmbedReport(), max_batches=max_batches)
