"""Ranking the candidates of cases that await review again after the catalog or the encoder changed: in place from
each implant's stored vector when the configured encoder embedded the case's X-rays, through a new embed job when
another encoder did. Decided cases keep the candidates their decision was made on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from raiox.database import Connection
from raiox.embed.matching import find_candidates
from raiox.models import CaseStatus, JobKind
from raiox.repository import audit, cases, findings, jobs, matches
from raiox.services import Services
from raiox.settings import Settings


@dataclass
class RematchReport:
    model_id: str
    ranked: list[int] = field(default_factory=list)  # cases whose implants were ranked again in place
    reembedding: list[int] = field(default_factory=list)  # cases handed back to the embed step
    not_waiting: dict[int, str] = field(default_factory=dict)  # asked-for case → its status (left as it is)


def rematch_waiting_cases(conn: Connection, model_id: str, settings: Settings, *, actor: str,
                          case_ids: Sequence[int] | None = None) -> RematchReport:
    """Every case awaiting review (`ready`), or those of `case_ids`, ranked against the catalog as it is now."""
    report = RematchReport(model_id)
    waiting = cases.case_ids_with_status(conn, CaseStatus.READY, case_ids)
    if case_ids is not None:
        for case_id in sorted(set(case_ids) - set(waiting)):
            case = cases.get_case(conn, case_id)
            report.not_waiting[case_id] = str(case.status) if case is not None else "no such case"
    embedded_elsewhere = set(findings.cases_embedded_by_other_models(conn, waiting, model_id))
    for case_id in sorted(embedded_elsewhere):
        cases.set_case_status(conn, case_id, CaseStatus.EMBEDDING)
        jobs.enqueue(conn, JobKind.EMBED, case_id=case_id, max_attempts=settings.embed_max_attempts)
        audit.record_audit(conn, actor=actor, action="reembedding", case_id=case_id, details={"model_id": model_id})
        report.reembedding.append(case_id)
    by_image: dict[tuple[int, int], dict[int, list[matches.RankedMatch]]] = {}
    for vector in findings.implant_vectors(conn, waiting, model_id):  # a case's X-rays this encoder embedded
        ranked = find_candidates(conn, vector.embedding.to_numpy(), model_id, k=settings.raiox_top_k,
                                 ef_search=settings.raiox_hnsw_ef_search)
        by_image.setdefault((vector.case_id, vector.case_image_id), {})[vector.position] = [
            matches.RankedMatch.model_validate(candidate) for candidate in ranked]
    for (_, image_id), ranked_implants in by_image.items():
        matches.replace_matches(conn, image_id, model_id, ranked_implants)
    for case_id in sorted({case_id for case_id, _ in by_image}):
        audit.record_audit(conn, actor=actor, action="rematched", case_id=case_id, details={"model_id": model_id})
        if case_id not in embedded_elsewhere:
            report.ranked.append(case_id)
    return report


def rematch(services: Services, *, actor: str, case_ids: Sequence[int] | None = None) -> RematchReport:
    """rematch_waiting_cases under the configured encoder, in one transaction."""
    model_id = services.encoder.model_id
    with services.db.transaction() as conn:
        return rematch_waiting_cases(conn, model_id, services.settings, actor=actor, case_ids=case_ids)
