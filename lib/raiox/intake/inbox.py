"""The outage inbox: submissions accepted while the database was unreachable, kept in private object storage
(`inbox/`) and recorded as cases once it is back. Replaying is idempotent: a submission that already became
a case (its sender retried meanwhile) is only removed from the inbox."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import ValidationError

from raiox.adapters.storage import ObjectNotFound, ObjectStore
from raiox.errors import RaioxError
from raiox.intake.recording import check, record
from raiox.intake.submission import Submission
from raiox.services import Services

log = logging.getLogger(__name__)

PREFIX = "inbox/"


@dataclass
class InboxReport:
    recorded: int = 0
    duplicates: int = 0
    refused: int = 0
    errors: list[str] = field(default_factory=list)


def keep(submission: Submission, store: ObjectStore) -> str:
    """Write the submission to the inbox; returns its key (time first, so replay goes oldest first)."""
    key = f"{PREFIX}{datetime.now(UTC):%Y%m%dt%H%M%S%f}-{uuid.uuid4().hex}.json"
    store.put_at(key, submission.model_dump_json().encode())
    return key


def replay(services: Services) -> InboxReport:
    """Record every kept submission as its webhook would have, then remove it from the inbox."""
    report = InboxReport()
    store = services.store
    for key in store.keys(PREFIX):
        try:
            submission = Submission.model_validate_json(store.get(key))
        except ObjectNotFound:
            continue  # another sweeper replayed it meanwhile
        except ValidationError:
            log.error("inbox entry %s is not a submission; left in place for a person to look at", key)
            report.errors.append(f"{key}: not a submission")
            continue
        try:
            receipt = record(submission, check(submission, services), services, actor="system:inbox")
        except RaioxError as refusal:  # the settings changed since it was kept (e.g. the form allow-list)
            log.warning("inbox entry %s refused on replay: %s", key, refusal)
            report.refused += 1
        else:
            report.duplicates += receipt.duplicate
            report.recorded += not receipt.duplicate
        store.delete(key)
    return report
