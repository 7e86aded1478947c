"""Typed records that cross module boundaries: the base of every row read from the database (`Record`), the
case, job and implant rows, and their lifecycles. The repository declares its other records beside their SQL."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class CaseStatus(StrEnum):
    """received -> embedding -> ready -> approved | rejected -> notified; failed on the way (see schema)."""

    RECEIVED = "received"
    EMBEDDING = "embedding"
    READY = "ready"
    APPROVED = "approved"
    REJECTED = "rejected"
    NOTIFIED = "notified"
    FAILED = "failed"


class JobKind(StrEnum):
    FETCH = "fetch"
    EMBED = "embed"
    NOTIFY = "notify"
    ERASE = "erase"  # delete an erased case's submission where it came from (Jotform)


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)


class Implant(Record):
    id: int
    manufacturer: str
    system: str
    implant_type: str | None = None
    connection: str | None = None
    notes: str | None = None


class Case(Record):
    id: int
    submission_id: str
    form_id: str | None = None
    source: str
    submitter_name: str | None = None
    submitter_email: str | None = None
    client_id: str | None = None
    status: CaseStatus
    error: str | None = None
    created_at: datetime
    updated_at: datetime
    notified_at: datetime | None = None
    erased_at: datetime | None = None


class Job(Record):
    id: int
    kind: JobKind
    case_id: int | None
    payload: dict[str, Any] = Field(default_factory=dict)
    status: JobStatus
    attempts: int
    max_attempts: int
    run_after: datetime
    lease_owner: str | None = None
    leased_until: datetime | None = None
    last_error: str | None = None
