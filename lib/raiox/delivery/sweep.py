"""The sweeper: one round of every step's due work, so a lost poke never stalls a case.

Where torch runs (`raiox worker`), a round replays the outage inbox, fetches due X-rays, embeds due cases and
delivers due decisions. The notify function's scheduled round (no torch, no object storage) delivers due
decisions and hands due fetch and embed jobs to EMBED_URL. Either reconciles with Jotform when it is due, erases
cases past their retention period and deletes erased cases' submissions at Jotform."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from raiox.delivery.forget import run_erase_jobs
from raiox.delivery.worker import NotifyReport, run_notify_jobs
from raiox.erasure import erase_expired
from raiox.intake.reconcile import reconcile_when_due
from raiox.job_runner import beat, hand_over_to_embed
from raiox.services import Services


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
        from raiox.intake.sweep import sweep_intake

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
