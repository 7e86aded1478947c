"""Decisions: approve or reject a ready case (or reject one whose intake failed) in one transaction (decision,
audit, learning, notify job), and queueing a failed delivery again."""

from __future__ import annotations

import logging
import threading
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from raiox.database import Connection
from raiox.errors import Conflict, NotFound, Unprocessable
from raiox.job_runner import poke_soon
from raiox.models import Case, CaseStatus, JobKind
from raiox.repository import audit, cases, catalog, findings, images, jobs, matches
from raiox.repository import decisions as sql
from raiox.review.accounts import Reviewer
from raiox.review.queue import delivery_state, iso
from raiox.services import Services
from raiox.settings import Settings

log = logging.getLogger(__name__)

MAX_ID = 2**63 - 1  # PostgreSQL's bigint


class DecisionBody(BaseModel):
    """approve with a candidate's `rank` (of `image_id`, default the first X-ray, and of the implant found at
    position `implant` on it, default the most implant-like) or an `implant_id` from the catalog (override);
    or reject with a `reason`. A `note` is optional."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    action: Literal["approve", "reject"]
    rank: int | None = Field(default=None, ge=1, le=20)
    implant_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    image_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    implant: int = Field(default=0, ge=0, le=20)
    reason: str | None = Field(default=None, max_length=2000)
    note: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _consistent(self) -> DecisionBody:
        if self.action == "approve" and (self.rank is None) == (self.implant_id is None):
            raise ValueError("approve needs exactly one of `rank` (a candidate) or `implant_id` (an override)")
        if self.action == "reject":
            if self.rank is not None or self.implant_id is not None:
                raise ValueError("reject takes a `reason`, not a `rank` or `implant_id`")
            if not self.reason:
                raise ValueError("reject needs a `reason`")
        return self


def _locked_case(conn: Connection, case_id: int) -> Case:
    """The case, its row locked until the transaction ends (deciders and retries of one case queue up)."""
    case = cases.get_case(conn, case_id, lock=True)
    if case is None:
        raise NotFound(f"there is no case {case_id}")
    return case


def decide(services: Services, reviewer: Reviewer, case_id: int, body: DecisionBody) -> dict[str, Any]:
    """Record the decision in one transaction: decision row, case status, audit row, new references
    (learning), notify job. The case row is locked first, so of two deciders the second sees the first's
    decision and gets 409. After the commit, notify is poked. A case whose intake failed can be rejected (its
    reason is the message the clinic receives), so it still gets an answer through the same delivery."""
    settings = services.settings
    with services.db.transaction() as conn:
        case = _locked_case(conn, case_id)
        answerable = case.status == CaseStatus.READY or (case.status == CaseStatus.FAILED and body.action == "reject")
        if not answerable:
            earlier = sql.decision(conn, case_id)
            if earlier is not None:
                raise Conflict(f"case {case_id} was already {earlier.decision} by {earlier.reviewer}")
            if case.status == CaseStatus.FAILED:
                raise Conflict(f"case {case_id} failed intake: it has no candidates to approve; reject it with a "
                               "message for the clinic, or retry it")
            raise Conflict(f"case {case_id} is {case.status}; only ready cases (and failed ones, to reject) can be "
                           "decided")
        implant_id = body.implant_id
        if body.action == "approve" and body.rank is not None:
            chosen = matches.candidate_at_rank(conn, case_id, body.rank, body.image_id, body.implant)
            if chosen is None:
                raise Unprocessable(f"case {case_id} has no candidate of rank {body.rank}"
                                    + (f" for image {body.image_id}" if body.image_id else "")
                                    + (f" for its implant {body.implant}" if body.implant else ""))
            implant_id = chosen
        elif implant_id is not None and not catalog.implant_exists(conn, implant_id):
            raise Unprocessable(f"there is no implant {implant_id} in the catalog")
        outcome = CaseStatus.APPROVED if body.action == "approve" else CaseStatus.REJECTED
        recorded = sql.insert_decision(conn, case_id=case_id, decision=outcome, implant_id=implant_id,
                                  chosen_rank=body.rank, reviewer=reviewer.name, reason=body.reason,
                                  note=body.note)
        # A failed case keeps why intake failed beside the rejection that answers it.
        new_status = cases.set_case_status(conn, case_id, outcome, error=case.error).status
        learned = []
        learned_models: set[str] = set()
        if outcome == CaseStatus.APPROVED and settings.learn_from_approvals:
            assert implant_id is not None
            for image in findings.learnable_findings(conn, case_id, implant_id):
                reference_id, created = catalog.add_reference_image(
                    conn, implant_id=implant_id, storage_key=image.storage_key, sha256=image.sha256,
                    model_id=image.model_id, embedding=image.embedding, source="approved_case",
                    source_case_id=case_id, crop_key=image.crop_key, summary=image.summary)
                if created:
                    learned.append(reference_id)
                    learned_models.add(image.model_id)
        job = jobs.enqueue(conn, JobKind.NOTIFY, case_id=case_id, payload={"decision_id": recorded.id},
                           max_attempts=services.settings.notify_max_attempts)
        audit.record_audit(conn, actor=reviewer.name, action=f"case.{outcome}", case_id=case_id, details={
            "implant_id": implant_id, "rank": body.rank, "override": body.action == "approve" and body.rank is None,
            "reason": body.reason, "note": body.note, "reference_images_added": learned, "notify_job_id": job.id,
        })
    log.info("case %d %s by %s (implant %s, %d new reference(s))", case_id, outcome, reviewer.name, implant_id,
             len(learned))
    for model_id in learned_models:
        _index_learned_model(services, model_id)
    poke_notify(settings, case_id)
    return {"case_id": case_id, "status": new_status, "decision_id": recorded.id,
            "decided_at": iso(recorded.decided_at), "implant_id": implant_id,
            "reference_images_added": len(learned), "notify_job_id": job.id}


def _index_learned_model(services: Services, model_id: str) -> None:
    """A learned reference may be its model's first: give the model its HNSW index (a lookup when it has
    one). After the commit and best effort: matching is exact without the index, only slower."""
    try:
        with services.db.autocommit() as conn:
            catalog.ensure_model_index(conn, model_id, build_memory=services.settings.raiox_index_build_memory)
    except Exception:  # the decision is committed; the next import or re-embed builds it
        log.exception("could not build the HNSW index of %s", model_id)


def redeliver(services: Services, reviewer: Reviewer, case_id: int) -> dict[str, Any]:
    """Queue a new notify job for a decided case whose last delivery failed for good; then poke notify."""
    with services.db.transaction() as conn:
        case = _locked_case(conn, case_id)
        state = delivery_state(case.status, jobs.latest_notify_jobs(conn, [case_id]).get(case_id))
        if state is None:
            raise Conflict(f"case {case_id} is {case.status}: nothing is delivered before a decision")
        if state["state"] != "failed":
            raise Conflict(f"the delivery of case {case_id} is {state['state']}; only a failed one is retried")
        job = jobs.enqueue(conn, JobKind.NOTIFY, case_id=case_id, payload={"redelivery": True},
                           max_attempts=services.settings.notify_max_attempts)
        audit.record_audit(conn, actor=reviewer.name, action="case.redeliver", case_id=case_id,
                           details={"notify_job_id": job.id})
    log.info("case %d: delivery queued again by %s (job %d)", case_id, reviewer.name, job.id)
    poke_notify(services.settings, case_id)
    return {"case_id": case_id, "notify_job_id": job.id, "delivery": "queued"}


def poke_notify(settings: Settings, case_id: int) -> threading.Thread | None:
    """Ask notify to deliver now, in the background; if this fails the job still waits in the table."""
    return poke_soon(settings.notify_url, settings.notify_token, {"case_id": case_id},
                     what=f"notify poke for case {case_id}")


def retry(services: Services, reviewer: Reviewer, case_id: int) -> dict[str, Any]:
    """Try a failed case again: its failed X-rays that came from a URL are fetched again, and it goes back
    through fetch and embed (failed → received); then embed, which runs fetch jobs, is poked."""
    settings = services.settings
    with services.db.transaction() as conn:
        case = _locked_case(conn, case_id)
        if case.status != CaseStatus.FAILED:
            raise Conflict(f"case {case_id} is {case.status}; only a failed case is retried")
        reopened = images.reopen_failed_images(conn, case_id)
        cases.set_case_status(conn, case_id, CaseStatus.RECEIVED)
        job = jobs.enqueue(conn, JobKind.FETCH, case_id=case_id, max_attempts=settings.fetch_max_attempts)
        audit.record_audit(conn, actor=reviewer.name, action="case.retry", case_id=case_id,
                           details={"fetch_job_id": job.id, "images_reopened": reopened})
    log.info("case %d: retried by %s (%d X-ray(s) to fetch again)", case_id, reviewer.name, reopened)
    poke_soon(settings.embed_url, settings.embed_token, {"case_id": case_id}, what=f"embed poke for case {case_id}")
    return {"case_id": case_id, "status": CaseStatus.RECEIVED, "fetch_job_id": job.id, "images_reopened": reopened}
