"""Erasure of a patient's data on request (LGPD, HIPAA-style): a case's X-rays leave object storage, its
personal fields leave the database, an anonymous record of its decision stays for statistics, and the trail
says who erased it. The retention period (`RAIOX_RETENTION_DAYS`) erases delivered cases the same way."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from raiox.errors import Conflict, NotFound
from raiox.models import CaseStatus
from raiox.repository import cases, objects
from raiox.services import Services

log = logging.getLogger(__name__)

# Cases on their way through the pipeline: a step would write them again. Erase them once decided or failed.
IN_FLIGHT = (CaseStatus.RECEIVED, CaseStatus.EMBEDDING)


@dataclass
class ErasureReport:
    erased: list[int] = field(default_factory=list)
    objects_deleted: int = 0
    objects_left: int = 0  # object storage was down: the next sweep deletes them


def erase(services: Services, case_id: int, *, actor: str) -> ErasureReport:
    """Erase one case in the database (idempotent: an erased case stays erased); the objects nothing else uses
    wait in the outbox for `raiox.deletions` (the notify function, which runs retention, has no storage)."""
    with services.db.transaction() as conn:
        case = cases.get_case(conn, case_id, lock=True)
        if case is None:
            raise NotFound(f"there is no case {case_id}")
        if case.erased_at is None:
            if case.status in IN_FLIGHT:
                raise Conflict(f"case {case_id} is {case.status}; erase it once it is ready, decided or failed")
            objects.request_deletions(conn, cases.erase_case(conn, case_id, actor))
            cases.record_audit(conn, actor=actor, action="case.erased", case_id=case_id)
            log.info("case %d erased by %s", case_id, actor)
    return ErasureReport(erased=[case_id])

def erase_expired(services: Services) -> ErasureReport:
    """The sweeper's share: with RAIOX_RETENTION_DAYS set, erase every case delivered longer ago than that (its
    objects wait in the outbox for a sweep that has object storage: `raiox.deletions`)."""
    report = ErasureReport()
    days = services.settings.raiox_retention_days
    if days:
        with services.db.transaction() as conn:
            expired = cases.delivered_before(conn, days)
        for case_id in expired:
            report.erased += erase(services, case_id, actor="system:retention").erased
    return report
