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
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from raiox.delivery.forget import run_erase_jobs
from raiox.delivery.worker import NotifyReport, run_notify_jobs
from raiox.erasure import erase_expired
from raiox.intake.reconcile import ReconcileReport, reconcile_when_due
from raiox.job_runner import beat, due_jobs, poke
from raiox.models import JobKind
from raiox.services import Services

if TYPE_CHECKING:  # torch and object storage: imported at run time only inside the rounds that run them
    from raiox.embed.worker import EmbedReport
    from raiox.sweeper.stored import IntakeSweep

log = logging.getLogger(__name__)

WEBHOOK_SWEEP_SECONDS = 40.0  # the webhook's round stops taking new fetch jobs after this (its limit is 60 s)


@dataclass
class Handover:
    """Where torch is absent: how many fetch or embed jobs were due, and what the poke to EMBED_URL did (None:
    nothing was due, so no poke)."""

    due: int = 0
    poke: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """`{"due": n, "poke": what happened}`; `{"due": 0}` when nothing was due."""
        return {"due": self.due} if self.poke is None else {"due": self.due, "poke": self.poke}


@dataclass
class SweepReport:
    """What one round did, each part the report its step returned: notify's, embed's (run here) or the handover
    to EMBED_URL, intake's (only where the round runs it), reconciliation's (only when a form was due)."""

    notify: NotifyReport
    embed: EmbedReport | Handover
    intake: IntakeSweep | None = None
    reconcile: ReconcileReport | None = None
    erased: list[int] | None = None  # cases past their RAIOX_RETENTION_* period
    erased_at_source: int = 0  # erased cases' submissions deleted at Jotform

    @property
    def worked(self) -> bool:
        """Whether the round did anything (a worker with nothing to do sleeps)."""
        embedded = not isinstance(self.embed, Handover) and self.embed.claimed
        intake = self.intake is not None and (self.intake.fetch.claimed or self.intake.inbox.recorded)
        reconciled = self.reconcile is not None and self.reconcile.recorded
        return bool(self.notify.claimed or embedded or intake or reconciled or self.erased_at_source)

    def as_dict(self) -> dict[str, Any]:
        """The round as JSON: `notify` and `embed` always; `intake`, `reconcile`, `erased` and
        `erased_at_source` where they have something to say."""
        embed = self.embed.as_dict() if isinstance(self.embed, Handover) else asdict(self.embed)
        extra = {key: value for key, value in (("intake", asdict(self.intake) if self.intake else None),
                                               ("reconcile", asdict(self.reconcile) if self.reconcile else None),
                                               ("erased", self.erased), ("erased_at_source", self.erased_at_source))
                 if value}
        return {"notify": asdict(self.notify), "embed": embed, **extra}


def sweep(services: Services, *, worker: str | None = None, embed_here: bool) -> SweepReport:
    """One round: with `embed_here` (a worker with torch and object storage) intake's and embed's due work
    runs here; otherwise due fetch and embed jobs are handed to EMBED_URL. Then reconciliation (when due)
    and due notify jobs."""
    intake = None
    embedded = None
    if embed_here:
        from raiox.embed.worker import run_embed_jobs  # torch: only where the encoder runs
        from raiox.sweeper.stored import sweep_intake  # object storage: never in the notify function

        intake = sweep_intake(services, worker=worker)
        embedded = run_embed_jobs(services, worker=worker)
    reconciled = reconcile_when_due(services)
    retention = erase_expired(services)
    # Handed over after reconciliation, which may have queued fetch jobs.
    embed = embedded if embedded is not None else hand_over_to_embed(services)
    report = SweepReport(notify=run_notify_jobs(services, worker=worker), embed=embed, intake=intake,
                         reconcile=reconciled, erased=retention.erased or None,
                         erased_at_source=run_erase_jobs(services, worker=worker).claimed)
    encoder = {"model_id": services.encoder.model_id} if embed_here else {}  # for the system view's warnings
    beat(services, f"worker:{worker}" if embed_here and worker else "sweeper:notify",
         notified=report.notify.notified, embedded=embedded.ready if embedded else 0, **encoder)
    return report


def webhook_round(services: Services) -> dict[str, Any]:
    """The webhook's scheduled round: replay the inbox, run due fetch jobs within the time limit and delete erased
    objects, then hand due embed jobs to EMBED_URL."""
    from raiox.sweeper.stored import sweep_intake  # object storage: never in the notify function

    swept = sweep_intake(services, deadline=time.monotonic() + WEBHOOK_SWEEP_SECONDS)
    handed = hand_over_to_embed(services)
    beat(services, "sweeper:webhook", fetched=swept.fetch.fetched, replayed=swept.inbox.recorded)
    return {**asdict(swept), "embed": handed.as_dict()}


def embed_round(services: Services) -> dict[str, Any]:
    """Embed's poke (or a sweeper's `{"sweep": true}` to EMBED_URL): record what the inbox kept, fetch due X-rays,
    delete erased objects, then embed due cases."""
    from raiox.embed.worker import run_embed_jobs  # torch: only where the encoder runs
    from raiox.sweeper.stored import sweep_intake  # object storage: never in the notify function

    encoder = services.encoder
    intake = sweep_intake(services)
    embedded = run_embed_jobs(services)
    beat(services, "embed", model_id=encoder.model_id, embedded=embedded.ready)
    return {"model_id": encoder.model_id, **asdict(embedded), "intake": asdict(intake)}


def hand_over_to_embed(services: Services, *, read_timeout: float = 5.0) -> Handover:
    """Where torch is absent (the webhook's and notify's scheduled rounds): if fetch or embed jobs are due
    (pending past run_after, or running with an expired lease), POST `{"sweep": true}` to EMBED_URL with
    EMBED_TOKEN, which runs them. Says how many were due and what the poke did."""
    settings = services.settings
    due = due_jobs(services, JobKind.FETCH, JobKind.EMBED)
    if not due:
        return Handover()
    if not settings.embed_url:
        log.warning("%d fetch or embed job(s) are due and EMBED_URL is unset: run `raiox worker` where torch is", due)
        return Handover(due, "EMBED_URL unset")
    return Handover(due, poke(settings.embed_url, settings.embed_token, {"sweep": True},
                              what=f"embed poke for {due} due job(s)",
                              timeout=(settings.notify_timeout_seconds, read_timeout)))
