"""The sweeper: runs every due notify job, and every due embed job or (where torch is absent) pokes embed."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import requests

from raiox.delivery.service import NotifyReport, run_notify_jobs
from raiox.embed.matching import run_embed_jobs
from raiox.models import JobKind
from raiox.repository import jobs
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


def poke_embed(services: Services) -> dict[str, Any]:
    """If embed jobs are due (pending past run_after, or running with an expired lease), POST
    `{"sweep": true}` to EMBED_URL with EMBED_TOKEN: {"due": n, "poke": what happened}."""
    settings = services.settings
    with services.db.transaction() as conn:
        due = jobs.due_count(conn, JobKind.EMBED)
    if not due:
        return {"due": 0}
    if not settings.embed_url:
        log.warning("%d embed job(s) are due and EMBED_URL is unset: run `raiox worker` where torch is", due)
        return {"due": due, "poke": "EMBED_URL unset"}
    headers = {"Authorization": f"Bearer {settings.embed_token.get_secret_value()}"} if settings.embed_token else {}
    try:
        response = requests.post(settings.embed_url, json={"sweep": True}, headers=headers,
                                 timeout=(settings.notify_timeout_seconds, EMBED_POKE_READ_SECONDS))
    except requests.Timeout as exc:
        if isinstance(exc, requests.ConnectTimeout):
            log.warning("embed poke for %d due job(s) could not connect in time", due)
            return {"due": due, "poke": "connect timeout"}
        return {"due": due, "poke": "running"}  # embed took the request and is still working on it
    except requests.RequestException as exc:  # the URL is not logged: it may carry credentials
        log.warning("embed poke for %d due job(s) failed (%s)", due, type(exc).__name__)
        return {"due": due, "poke": f"failed ({type(exc).__name__})"}
    if response.status_code >= 400:
        log.warning("embed poke for %d due job(s) answered HTTP %d", due, response.status_code)
    return {"due": due, "poke": f"HTTP {response.status_code}"}


def sweep(services: Services, *, worker: str | None = None, embed_here: bool) -> SweepReport:
    """One round: due embed jobs run here (`embed_here`, the GPU worker) or are handed to EMBED_URL
    (the notify function, which has no torch), then due notify jobs are delivered."""
    embed = asdict(run_embed_jobs(services, worker=worker)) if embed_here else poke_embed(services)
    return SweepReport(notify=run_notify_jobs(services, worker=worker), embed=embed)
