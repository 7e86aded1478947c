"""The share of a round that needs object storage (the webhook's scheduled trigger, embed's poke and `raiox worker`;
never the notify function): record what the outage inbox kept, run due fetch jobs, and delete the objects of
erased cases."""

from __future__ import annotations

from dataclasses import dataclass

from raiox.deletions import delete_objects
from raiox.erasure import ErasureReport
from raiox.intake.inbox import InboxReport, replay
from raiox.intake.worker import FetchReport, run_fetch_jobs
from raiox.services import Services


@dataclass
class IntakeSweep:
    """What a round's intake share did: the inbox replayed, the fetch jobs run, erased cases' objects deleted.
    `asdict` of it is the round's `intake` (and the webhook round's answer, with `embed` beside it)."""

    inbox: InboxReport
    fetch: FetchReport
    objects_deleted: int = 0


def sweep_intake(services: Services, *, worker: str | None = None, deadline: float | None = None) -> IntakeSweep:
    """Replay the inbox, run due fetch jobs (until `deadline`) and delete erased cases' objects — the webhook's
    scheduled trigger, embed's poke and `raiox worker` all do this."""
    inbox = replay(services)
    fetch = run_fetch_jobs(services, worker=worker, deadline=deadline)
    return IntakeSweep(inbox=inbox, fetch=fetch,
                       objects_deleted=delete_objects(services, ErasureReport()).objects_deleted)
