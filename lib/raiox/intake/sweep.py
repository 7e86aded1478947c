"""Intake's share of a sweep: record what the outage inbox kept, then run due fetch jobs."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from raiox.intake.fetcher import run_fetch_jobs
from raiox.intake.inbox import replay
from raiox.services import Services


def sweep_intake(services: Services, *, worker: str | None = None, deadline: float | None = None) -> dict[str, Any]:
    """{"inbox": what was replayed, "fetch": the fetch jobs run} — the webhook's scheduled trigger, embed's
    sweep and `raiox worker` all do this."""
    return {"inbox": asdict(replay(services)), "fetch": asdict(run_fetch_jobs(services, worker=worker,
                                                                             deadline=deadline))}
