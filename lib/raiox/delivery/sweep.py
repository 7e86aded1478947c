"""The sweeper: runs every due notify job, and every due embed job or (where torch is absent) pokes embed."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from raiox.delivery.worker import NotifyReport, run_notify_jobs
from raiox.job_runner import due_jobs, poke
from raiox.models import JobKind
from raiox.services import Services

log = logging.getLogger(__name__)

# Embed answers only when its run is over; a poke waits this long, then leaves it running.
EMBED_POKE_READ_SECONDS = 5.0


@dataclass
class SweepReport:
    notify: NotifyReport
    embed: dict[str, Any] = field(default_factory=dict)

    @property
    def claimed(self) -> int:
        return self.notify.claimed + int(self.embed.get("claimed", 0))

    def as_dict(self) -> dict[str, Any]:
        return {"notify": asdict(self.notify), "embed": self.embed}


def hand_embed_jobs_over(services: Services) -> dict[str, Any]:
    """If embed jobs are due (pending past run_after, or running with an expired lease), POST
    `{"sweep": true}` to EMBED_URL with EMBED_TOKEN: {"due": n, "poke": what happened}."""
    settings = services.settings
    due = due_jobs(services, JobKind.EMBED)
    if not due:
        return {"due": 0}
    if not settings.embed_url:
        log.warning("%d embed job(s) are due and EMBED_URL is unset: run `raiox worker` where torch is", due)
        return {"due": due, "poke": "EMBED_URL unset"}
    return {"due": due, "poke": poke(settings.embed_url, settings.embed_token, {"sweep": True},
                                     what=f"embed poke for {due} due job(s)",
                                     timeout=(settings.notify_timeout_seconds, EMBED_POKE_READ_SECONDS))}


def sweep(services: Services, *, worker: str | None = None, embed_here: bool) -> SweepReport:
    """One round: due embed jobs run here (`embed_here`, the GPU worker) or are handed to EMBED_URL
    (the notify function, which has no torch), then due notify jobs are delivered."""
    if embed_here:
        from raiox.embed.worker import run_embed_jobs  # torch: only where the encoder runs

        embed = asdict(run_embed_jobs(services, worker=worker))
    else:
        embed = hand_embed_jobs_over(services)
    return SweepReport(notify=run_notify_jobs(services, worker=worker), embed=embed)
