"""The share of a round that needs object storage (the webhook's scheduled trigger, embed's poke and `raiox worker`;
never the notify function): record what the outage inbox kept, run due fetch jobs, and delete the objects of
erased cases."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from raiox.deletions import delete_objects
from raiox.erasure import ErasureReport
from raiox.intake.inbox import replay
from raiox.intake.worker import run_fetch_jobs
from raiox.services import Services


def sweep_intake(services: Services, *, worker: str | None = None, deadline: float | None = None) -> dict[str, Any]:
    """{"inbox": what was replayed, "fetch": the fetch jobs run, "objects_deleted"} — the webhook's scheduled
    trigger, embed's poke and `raiox worker` all do this."""
    swept = {"inbox": asdict(replay(services)),
             "fetch": asdict(run_fetch_jobs(services, worker=worker, deadline=deadline))}
    return {**swept, "objects_deleted": delete_objects(services, ErasureReport()).objects_deleted}
