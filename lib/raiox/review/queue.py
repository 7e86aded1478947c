"""The review queue: case lists with counts, a case's details with expiring image URLs, catalog search."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from raiox.embed.matching import is_low_confidence
from raiox.errors import InvalidInput, NotFound
from raiox.models import CaseStatus, JobStatus
from raiox.repository import audit, cases, catalog, decisions, findings, images, jobs, matches
from raiox.services import Services

DECIDED = [CaseStatus.APPROVED, CaseStatus.REJECTED, CaseStatus.NOTIFIED]


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def parse_statuses(text: str) -> list[str]:
    """`ready`, `decided` (approved, rejected, notified) or a comma-separated list of case statuses."""
    if text.strip() == "decided":
        return [str(status) for status in DECIDED]
    statuses = [part.strip() for part in text.split(",") if part.strip()]
    known = {str(status) for status in CaseStatus}
    unknown = [status for status in statuses if status not in known]
    if unknown or not statuses:
        raise InvalidInput(f"status must be `decided` or any of {', '.join(sorted(known))}")
    return statuses


# Where the answer to the submitter is, one word each (docs/review.md#states): `notified` is the case's own word
# for an answer delivered, so the delivery of a notified case says the same.
DELIVERY_STATES = ("none", "queued", "sending", "retrying", "notified", "failed")


def delivery_state(case_status: str, job: jobs.Delivery | None) -> dict[str, Any] | None:
    """Where the answer to the submitter is (one of DELIVERY_STATES); None before a decision."""
    if case_status not in {str(status) for status in DECIDED}:
        return None
    if case_status == CaseStatus.NOTIFIED:
        state = "notified"
    elif job is None:
        state = "none"
    else:
        state = {JobStatus.PENDING: "retrying" if job.attempts else "queued", JobStatus.RUNNING: "sending",
                 JobStatus.DONE: "notified", JobStatus.FAILED: "failed"}[job.status]
    return {
        "state": state,
        "attempts": job.attempts if job else 0,
        "max_attempts": job.max_attempts if job else None,
        "last_error": job.last_error if job and state != "notified" else None,
        "updated_at": iso(job.updated_at) if job else None,
    }


def _range(low: float | None, high: float | None) -> list[float] | None:
    return [round(low, 2), round(high, 2)] if low is not None and high is not None else None


def sizes(implant: catalog.ImplantSizes) -> dict[str, list[float] | None]:
    """The implant's diameter and length ranges as [min, max] in mm, or None where the catalog has none."""
    return {"diameter_mm": _range(implant.diameter_min_mm, implant.diameter_max_mm),
            "length_mm": _range(implant.length_min_mm, implant.length_max_mm)}


def _pixel_spacing(image: images.CaseImage) -> list[float] | None:
    """[row, column] mm per pixel, as the film's file gave it; None when it did not."""
    if image.pixel_spacing_row_mm is None or image.pixel_spacing_col_mm is None:
        return None
    return [round(image.pixel_spacing_row_mm, 6), round(image.pixel_spacing_col_mm, 6)]


def _decision_view(decided: decisions.Decision | None) -> dict[str, Any] | None:
    if decided is None:
        return None
    return {**decided.model_dump(), "decided_at": iso(decided.decided_at)}


def _listed_decision(row: cases.CaseListing) -> decisions.Decision | None:
    """The decision as the list shows it: the chosen implant by its names only, without the note."""
    if row.decision is None:
        return None
    assert row.reviewer is not None and row.decided_at is not None  # a decision always has them
    return decisions.Decision(decision=row.decision, implant_id=None, manufacturer=row.decided_manufacturer,
                              system=row.decided_system, chosen_rank=row.chosen_rank, reviewer=row.reviewer,
                              reason=row.reason, note=None, decided_at=row.decided_at)


def list_cases(services: Services, statuses: list[str], *, page: int, per_page: int) -> dict[str, Any]:
    with services.db.transaction() as conn:
        counts = cases.status_counts(conn)
        rows = cases.list_cases(conn, statuses, limit=per_page, offset=(page - 1) * per_page)
        deliveries = jobs.latest_notify_jobs(conn, [row.id for row in rows])
    items = []
    for row in rows:
        top = None
        if row.top_system is not None and row.top_similarity is not None:
            top = {"manufacturer": row.top_manufacturer, "system": row.top_system,
                   "similarity": round(row.top_similarity, 4)}
        items.append({
            "id": row.id, "submission_id": row.submission_id, "submitter_name": row.submitter_name,
            "client_id": row.client_id, "status": row.status, "error": row.error,
            "created_at": iso(row.created_at), "images": row.images, "top": top,
            "decision": _decision_view(_listed_decision(row)),
            "delivery": delivery_state(row.status, deliveries.get(row.id)),
        })
    return {
        "statuses": statuses, "page": page, "per_page": per_page,
        "total": sum(counts.get(status, 0) for status in statuses),
        "counts": {str(status): counts.get(status, 0) for status in CaseStatus},
        "cases": items,
    }


def case_detail(services: Services, case_id: int, viewer: str) -> dict[str, Any]:
    """The case, its X-rays and each one's candidates as expiring URLs, its decision, delivery and access trail.
    Opening it is audited: who (`viewer`), and how many X-ray URLs were issued to them."""
    with services.db.transaction() as conn:
        case = cases.get_case(conn, case_id)
        if case is None:
            raise NotFound(f"there is no case {case_id}")
        xrays = images.case_images(conn, case_id)
        ranked = matches.candidates(conn, case_id)
        found = findings.findings_of_case(conn, case_id)
        decided = decisions.decision(conn, case_id)
        delivery = jobs.latest_notify_jobs(conn, [case_id]).get(case_id)
        issued = sum(1 for image in xrays if image.storage_key)
        audit.record_audit(conn, actor=viewer, action="case.viewed", case_id=case_id,
                           details={"xray_urls_issued": issued})
        # A candidate's best reference may be another patient's film, learned when that case was approved: the
        # URL handed out is audited on that case too, so its trail says who saw its film, and where.
        for source_case in sorted({row.reference_case_id for row in ranked if row.reference_storage_key
                                   and row.reference_case_id is not None and row.reference_case_id != case_id}):
            audit.record_audit(conn, actor=viewer, action="case.film_shown_as_reference", case_id=source_case,
                               details={"shown_in_case": case_id})
        trail = audit.audit_trail(conn, case_id)
    expiry = services.settings.raiox_url_expiry_seconds
    store = services.store

    def url(key: str | None) -> str | None:
        return store.presigned_url(key, expiry) if key else None

    by_implant: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for row in ranked:
        by_implant.setdefault((row.case_image_id, row.finding_position), []).append({
            "rank": row.rank, "implant_id": row.implant_id, "manufacturer": row.manufacturer,
            "system": row.system, "similarity": round(row.similarity, 4), **sizes(row),
            "reference_image_id": row.reference_image_id, "reference_source": row.reference_source,
            "reference_case_id": row.reference_case_id, "reference_url": url(row.reference_storage_key),
            "reference_crop_url": url(row.reference_crop_key),
            "reference_measured": (row.reference_summary or {}).get("measured"),
            "reference_read": (row.reference_summary or {}).get("read"),
        })
    implants: dict[int, list[dict[str, Any]]] = {}
    for finding in found:
        listed = by_implant.get((finding.case_image_id, finding.position), [])
        implants.setdefault(finding.case_image_id, []).append({
            **finding.summary, "position": finding.position, "found": finding.found,
            "crop_url": url(finding.crop_key),
            "candidates": listed,
            "low_confidence": bool(listed) and is_low_confidence([c["similarity"] for c in listed], services.settings),
        })
    return {
        "case": {
            "id": case.id, "submission_id": case.submission_id, "submitter_name": case.submitter_name,
            "submitter_email": case.submitter_email, "client_id": case.client_id, "status": case.status,
            "error": case.error, "created_at": iso(case.created_at),
            "notified_at": iso(case.notified_at), "erased_at": iso(case.erased_at),
        },
        "images": [{
            "id": image.id, "position": image.position, "status": image.status, "error": image.error,
            "width": image.width, "height": image.height, "pixel_spacing_mm": _pixel_spacing(image),
            "url": url(image.storage_key),
            # The most implant-like implant's candidates (what the decision's `rank` refers to by default), then
            # every implant found with its crop, where it lies, what was measured and read, and its own candidates.
            "candidates": by_implant.get((image.id, 0), []),
            "low_confidence": bool(by_implant.get((image.id, 0))) and is_low_confidence(
                [c["similarity"] for c in by_implant[(image.id, 0)]], services.settings),
            "implants": implants.get(image.id, []),
            "implant_found": any(i["found"] for i in implants.get(image.id, [])),
        } for image in xrays],
        "decision": _decision_view(decided),
        "delivery": delivery_state(case.status, delivery),
        "url_expires_in": expiry,
        "history": [{"at": iso(entry.at), "actor": entry.actor, "action": entry.action} for entry in trail],
    }


def search_catalog(services: Services, query: str, *, limit: int = 25) -> list[dict[str, Any]]:
    """Implant systems whose manufacturer and system together contain every word of the query, with their size
    ranges and an expiring URL of a catalog reference image (for comparing the film with any system)."""
    with services.db.transaction() as conn:
        rows = catalog.search_implants(conn, query.split()[:8], limit=limit)
    expiry = services.settings.raiox_url_expiry_seconds
    found = []
    for row in rows:
        key = row.reference_storage_key
        found.append({
            "id": row.id, "manufacturer": row.manufacturer, "system": row.system,
            "implant_type": row.implant_type, "connection": row.connection, "references": row.references,
            **sizes(row), "reference_url": services.store.presigned_url(key, expiry) if key else None,
        })
    return found


