"""Erasure of a patient's data on request (LGPD, HIPAA-style): a case's X-rays leave object storage (every version
of each object), its personal fields, job payloads, results and errors and audit details leave the database, its
submission is deleted at Jotform, an anonymous record of its decision stays for statistics, and the trail says who
erased it. Retention erases cases the same way once their status has lasted its period (RAIOX_RETENTION_*)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from raiox.database import Connection
from raiox.errors import Conflict, NotFound
from raiox.models import CaseStatus, JobKind, JobStatus
from raiox.repository import audit, cases, jobs, objects
from raiox.services import Services

log = logging.getLogger(__name__)

# Cases on their way through the pipeline: a step would write them again. Erase them once decided or failed
# (retention erases a case stalled there once no job holds it).
IN_FLIGHT = (CaseStatus.RECEIVED, CaseStatus.EMBEDDING)


@dataclass
class ErasureReport:
    erased: list[int] = field(default_factory=list)
    objects_deleted: int = 0
    objects_left: int = 0  # object storage was down: the next sweep deletes them
    at_source: dict[int, str] = field(default_factory=dict)  # case → what happens at Jotform


def _erase_at_source(conn: Connection, case_id: int, source: str, max_attempts: int) -> str:
    """Queue the deletion of the case's submission at Jotform (once; again when the last try failed)."""
    if source != "jotform":
        return "nothing to delete: the case did not come from Jotform"
    if jobs.latest_status(conn, JobKind.ERASE, case_id) == JobStatus.DONE:
        return "deleted at Jotform"
    jobs.enqueue(conn, JobKind.ERASE, case_id=case_id, max_attempts=max_attempts)
    return "the submission's deletion at Jotform is queued"


def erase(services: Services, case_id: int, *, actor: str, in_flight: bool = False) -> ErasureReport:
    """Erase one case in the database (idempotent: an erased case stays erased, and erasing it again retries a
    deletion at Jotform that failed); the objects nothing else uses wait in the outbox for `raiox.deletions`
    (the notify function, which runs retention, has no storage). `in_flight`: retention's stalled cases."""
    report = ErasureReport(erased=[case_id])
    with services.db.transaction() as conn:
        case = cases.get_case(conn, case_id, lock=True)
        if case is None:
            raise NotFound(f"there is no case {case_id}")
        if case.erased_at is None:
            if case.status in IN_FLIGHT and not in_flight:
                raise Conflict(f"case {case_id} is {case.status}; erase it once it is ready, decided or failed")
            objects.request_deletions(conn, cases.erase_case(conn, case_id, actor))
            audit.record_audit(conn, actor=actor, action="case.erased", case_id=case_id)
            log.info("case %d erased by %s", case_id, actor)
        report.at_source[case_id] = _erase_at_source(conn, case_id, case.source,
                                                     services.settings.erase_max_attempts)
    return report


def erase_expired(services: Services) -> ErasureReport:
    """The sweeper's share: erase every case whose status has lasted longer than its retention period (each
    RAIOX_RETENTION_* setting; 0 keeps that status). Its objects wait in the outbox for a sweep that has object
    storage (`raiox.deletions`); its submission's deletion at Jotform is queued."""
    settings = services.settings
    report = ErasureReport()
    periods = {"notified": settings.raiox_retention_days, "undelivered": settings.raiox_retention_undelivered_days,
               "undecided": settings.raiox_retention_undecided_days, "failed": settings.raiox_retention_failed_days,
               "stalled": settings.raiox_retention_stalled_days}
    if not any(periods.values()):
        return report
    with services.db.transaction() as conn:
        expired = cases.past_retention(conn, **periods)
    for case_id in expired:
        try:
            done = erase(services, case_id, actor="system:retention", in_flight=True)
        except (Conflict, NotFound):
            continue  # it moved on (or went) meanwhile; the next sweep looks again
        report.erased += done.erased
        report.at_source.update(done.at_source)
    return report
