"""SQL for review decisions: recording one, reading it back for the review page and for delivery."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from raiox.database import Connection
from raiox.models import Record
from raiox.repository import rows

Outcome = Literal["approved", "rejected"]


class RecordedDecision(Record):
    id: int
    decided_at: datetime


class Decision(Record):
    """A case's decision with the chosen implant's names (None for a rejection)."""

    decision: Outcome
    implant_id: int | None
    manufacturer: str | None
    system: str | None
    chosen_rank: int | None
    reviewer: str
    reason: str | None
    note: str | None
    decided_at: datetime


class CaseDecision(Record):
    """What delivery sends: the case, its decision and chosen implant, and that implant's best similarity among
    the case's current candidates (None when the reviewer chose an implant that was not proposed)."""

    case_id: int
    submission_id: str
    form_id: str | None
    source: str
    decision: Outcome
    reviewer: str
    reason: str | None
    note: str | None
    decided_at: datetime
    implant_id: int | None
    manufacturer: str | None
    system: str | None
    similarity: float | None


def insert_decision(
    conn: Connection, *, case_id: int, decision: str, implant_id: int | None, chosen_rank: int | None,
    reviewer: str, reason: str | None, note: str | None,
) -> RecordedDecision:
    row = rows.one(
        conn, RecordedDecision,
        """INSERT INTO review_decisions (case_id, decision, implant_id, chosen_rank, reviewer, reason, note)
           VALUES (%s, %s, %s, %s, %s, %s, %s)
           RETURNING id, decided_at""",
        (case_id, decision, implant_id, chosen_rank, reviewer, reason, note),
    )
    assert row is not None
    return row


def decision(conn: Connection, case_id: int) -> Decision | None:
    return rows.one(
        conn, Decision,
        """SELECT review_decisions.decision, review_decisions.implant_id,
                  implants.manufacturer, implants.system, review_decisions.chosen_rank, review_decisions.reviewer,
                  review_decisions.reason, review_decisions.note, review_decisions.decided_at
             FROM review_decisions LEFT JOIN implants ON implants.id = review_decisions.implant_id
            WHERE review_decisions.case_id = %s""",
        (case_id,),
    )


def decision_of_case(conn: Connection, case_id: int) -> CaseDecision | None:
    """The case, its decision and chosen implant, and that implant's best similarity among the case's
    current candidates (NULL when the reviewer chose an implant that was not proposed); None if undecided."""
    return rows.one(
        conn, CaseDecision,
        """
        SELECT cases.id AS case_id, cases.submission_id, cases.form_id, cases.source,
               review_decisions.decision, review_decisions.reviewer, review_decisions.reason,
               review_decisions.note, review_decisions.decided_at,
               implants.id AS implant_id, implants.manufacturer, implants.system,
               (SELECT max(match_results.similarity)
                  FROM match_results
                  JOIN case_images ON case_images.id = match_results.case_image_id
                 WHERE case_images.case_id = cases.id
                   AND match_results.implant_id = review_decisions.implant_id
                   AND match_results.model_id = case_images.model_id) AS similarity
          FROM cases
          JOIN review_decisions ON review_decisions.case_id = cases.id
          LEFT JOIN implants ON implants.id = review_decisions.implant_id
         WHERE cases.id = %s
        """,
        (case_id,),
    )
