"""The result document: a decision as every delivery target receives it, built only from the database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from raiox.database import Connection
from raiox.embed.matching import is_low_confidence
from raiox.repository import decisions, matches
from raiox.settings import Settings


class ChosenImplant(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    manufacturer: str
    system: str


class ResultDocument(BaseModel):
    """A decision as every target receives it. Built only from the database, so each delivery of one
    decision carries the same content (receivers may deduplicate on `case_id`)."""

    model_config = ConfigDict(frozen=True)

    event: Literal["raiox.decision"] = "raiox.decision"
    case_id: int
    submission_id: str
    form_id: str | None
    decision: Literal["approved", "rejected"]
    implant: ChosenImplant | None
    similarity: float | None  # of the chosen implant, when it was among the case's candidates
    confidence: Literal["low", "normal"] | None  # the machine's ranking, before the reviewer decided
    reviewer: str
    reason: str | None
    note: str | None
    decided_at: datetime

    def field_values(self) -> dict[str, str]:
        """The text each JOTFORM_RESULT_FIELDS key receives; empty where the decision has no such value."""
        implant = self.implant
        return {
            "system": implant.system if implant else "",
            "manufacturer": implant.manufacturer if implant else "",
            "implant": f"{implant.manufacturer} {implant.system}" if implant else "",
            "similarity": f"{self.similarity:.3f}" if self.similarity is not None else "",
            "confidence": self.confidence or "",
            "decision": self.decision,
            "reviewer": self.reviewer,
            "reason": self.reason or "",
            "note": self.note or "",
            "decided_at": self.decided_at.isoformat(),
        }


def load_result(conn: Connection, case_id: int, settings: Settings) -> tuple[ResultDocument, str] | None:
    """The case's result document and the case's source (`jotform`, `json`, `upload`); None if undecided."""
    row = decisions.decision_of_case(conn, case_id)
    if row is None:
        return None
    ranking = [r.similarity for r in matches.match_results_of_case(conn, case_id) if r.position == 0]
    implant = None
    if row.implant_id is not None:
        assert row.manufacturer is not None and row.system is not None  # the implant is the catalog's
        implant = ChosenImplant(id=row.implant_id, manufacturer=row.manufacturer, system=row.system)
    document = ResultDocument(
        case_id=row.case_id, submission_id=row.submission_id, form_id=row.form_id,
        decision=row.decision, implant=implant,
        similarity=round(row.similarity, 4) if row.similarity is not None else None,
        confidence=("low" if is_low_confidence(ranking, settings) else "normal") if ranking else None,
        reviewer=row.reviewer, reason=row.reason, note=row.note,
        decided_at=row.decided_at.astimezone(UTC),
    )
    return document, row.source
