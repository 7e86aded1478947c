"""The intake step's entry: check a parsed submission, record it at once (or keep it in the inbox while the
database is down), and ask embed — which runs fetch jobs first — to start.

Guarantees: what is accepted is never lost. Only what can be refused without the network is refused here
(a URL the fetch policy would never follow, an upload that is not a usable image); everything else is
recorded, and a film that cannot be fetched fails visibly on its case later (`raiox.intake.worker`). One
submission id of one source is one case however often or concurrently it arrives. Nothing reaches object
storage before its case has committed, except a submission kept in the inbox during a database outage.
"""

from __future__ import annotations

import logging

import psycopg
from psycopg_pool import PoolTimeout

from raiox.intake import inbox
from raiox.intake.recording import Receipt, check, record
from raiox.intake.submission import Submission
from raiox.job_runner import poke_soon
from raiox.models import CaseStatus
from raiox.services import Services

log = logging.getLogger(__name__)


def receive(submission: Submission, services: Services) -> Receipt:
    """Check, then record the submission (or keep it in the inbox while the database is down); after a new
    case commits, ask embed (which runs fetch jobs first) to start now."""
    screened = check(submission, services)
    try:
        receipt = record(submission, screened, services, actor="system:webhook")
    except (psycopg.OperationalError, PoolTimeout):
        # StorageError from here on means both are down: the table answers 503 and the sender retries.
        key = inbox.keep(submission, services.store)
        log.warning("database unreachable: submission %s kept in the inbox as %s", submission.submission_id, key)
        refused = sum(1 for item in screened if item.refusal is not None)
        return Receipt(CaseStatus.RECEIVED, queued=True, images=len(screened) - refused, refused_images=refused)
    if not receipt.duplicate:
        settings = services.settings
        poke_soon(settings.embed_url, settings.embed_token, {"case_id": receipt.case_id},
                  what=f"embed poke for case {receipt.case_id}")
    return receipt
