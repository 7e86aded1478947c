"""The rounds of due work, so a lost poke never stalls a case.

Where torch runs (`raiox worker`), `sweep` replays the outage inbox, fetches due X-rays, embeds due cases and
delivers due decisions. The notify function's scheduled round (no torch, no object storage) delivers due decisions
and hands due fetch and embed jobs to EMBED_URL. Either reconciles with Jotform when it is due, erases cases past
their retention period and deletes erased cases' submissions at Jotform. The webhook's scheduled round replays the
inbox, fetches due X-rays within its time limit, deletes erased objects and hands due embed jobs on; embed's poke
does the same and embeds due cases itself.

The notify function imports this module: what needs object storage (`raiox.sweeper.stored`) or torch
(`raiox.embed.worker`) is imported inside the rounds that run where those are at hand."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from raiox.delivery.forget import run_erase_jobs
from raiox.delivery.worker import NotifyReport, run_notify_jobs
from raiox.erasure import erase_expired
from raiox.intake.reconcile import reconcile_when_due
from raiox.job_runner import beat, due_jobs, poke
from raiox.models import JobKind
from raiox.services import Services

log = logging.getLogger(__name__)

WEBHOOK_SWEEP_SECONDS = 40.0  # the webhook's round stops taking new fetch jobs after this (its limit is 60 s)


@dataclass
class SweepReport:
    notify: NotifyReport
    embed: dict[str, Any] = field(default_factory=dict)
    intake: dict[str, Any] | None = None
    reconcile: dict[str, Any] | None = None
    erased: list[int] | None = None  # cases past their RAIOX_RETENTION_* period
    erased_at_source: int = 0  # erased cases' submissions deleted at Jotform

    @property
    def worked(self) -> bool:
        """Whether the round did anything (a worker with nothing to do sleeps)."""
        intake = self.intake or {}
        return bool(self.notify.claimed or self.embed.get("claimed") or intake.get("fetch", {}).get("claimed")
                    or intake.get("inbox", {}).get("recorded") or (self.reconcile or {}).get("recorded")
                    or self.erased_at_source)

    def as_dict(self) -> dict[str, Any]:
        extra = {key: value for key, value in (("intake", self.intake), ("reconcile", self.reconcile),
                                               ("erased", self.erased), ("erased_at_source", self.erased_at_source))
                 if value}
        return {"notify": asdict(self.notify), "embed": self.embed, **extra}


def sweep(services: Services, *, worker: str | None = None, embed_here: bool) -> SweepReport:
    """One round: with `embed_here` (a worker with torch and object storage) intake's and embed's due work
    runs here; otherwise due fetch and embed jobs are handed to EMBED_URL. Then reconciliation (when due)
    and due notify jobs."""
    intake = None
    if embed_here:
        from raiox.embed.worker import run_embed_jobs  # torch: only where the encoder runs
        from raiox.sweeper.stored import sweep_intake  # object storage: never in the notify function

        intake = sweep_intake(services, worker=worker)
        embed = asdict(run_embed_jobs(services, worker=worker))
    reconciled = reconcile_when_due(services)
    retention = erase_expired(services)
    if not embed_here:
        embed = hand_over_to_embed(services)  # after reconciliation, which may have queued fetch jobs
    report = SweepReport(notify=run_notify_jobs(services, worker=worker), embed=embed, intake=intake,
                         reconcile=reconciled, erased=retention.erased or None,
                         erased_at_source=run_erase_jobs(services, worker=worker).claimed)
    encoder = {"model_id": services.encoder.model_id} if embed_here else {}  # for the system view's warnings
    beat(services, f"worker:{worker}" if embed_here and worker else "sweeper:notify",
         notified=report.notify.notified, embedded=int(embed.get("ready", 0)), **encoder)
    return report


def webhook_round(services: Services) -> dict[str, Any]:
    """The webhook's scheduled round: replay the inbox, run due fetch jobs within the time limit and delete erased
    objects, then hand due embed jobs to EMBED_URL."""
    from raiox.sweeper.stored import sweep_intake  # object storage: never in the notify function

    swept = sweep_intake(services, deadline=time.monotonic() + WEBHOOK_SWEEP_SECONDS)
    handed = hand_over_to_embed(services)
    beat(services, "sweeper:webhook", fetched=swept["fetch"]["fetched"], replayed=swept["inbox"]["recorded"])
    return {**swept, "embed": handed}


def embed_round(services: Services) -> dict[str, Any]:
    """Embed's poke (or a sweeper's `{"sweep": true}` to EMBED_URL): record what the inbox kept, fetch due X-rays,
    delete erased objects, then embed due cases."""
    from raiox.embed.worker import run_embed_jobs  # torch: only where the encoder runs
    from raiox.sweeper.stored import sweep_intake  # object storage: never in the notify function

    encoder = services.encoder
    intake = sweep_intake(services)
    embedded = run_embed_jobs(services)
    beat(services, "embed", model_id=encoder.model_id, embedded=embedded.ready)
    return {"model_id": encoder.model_id, **asdict(embedded), "intake": intake}


def hand_over_to_embed(services: Services, *, read_timeout: float = 5.0) -> dict[str, Any]:
    """Where torch is absent (the webhook's and notify's scheduled rounds): if fetch or embed jobs are due
    (pending past run_after, or running with an expired lease), POST `{"sweep": true}` to EMBED_URL with
    EMBED_TOKEN, which runs them. Returns {"due": n, "poke": what happened}."""
    settings = services.settings
    due = due_jobs(services, JobKind.FETCH, JobKind.EMBED)
    if not due:
        return {"due": 0}
    if not settings.embed_url:
        log.warning("%d fetch or embed job(s) are due and EMBED_URL is unset: run `raiox worker` where torch is", due)
        return {"due": due, "poke": "EMBED_URL unset"}
    return {"due": due, "poke": poke(settings.embed_url, settings.embed_token, {"sweep": True},
                                     what=f"embed poke for {due} due job(s)",
                                     timeout=(settings.notify_timeout_seconds, read_timeout))}
