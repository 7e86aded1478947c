"""SQL for review decisions: recording one, reading it back for the review page and for delivery."""

from __future__ import annotations

from typing import Any

from raiox.database import Connection


def insert_decision(
    conn: Connection, *, case_id: int, decision: str, implant_id: int | None, chosen_rank: int | None,
    reviewer: str, reason: str | None, note: str | None,
) -> dict[str, Any]:
    row = conn.execute(
        """INSERT INTO review_decisions (case_id, decision, implant_id, chosen_rank, reviewer, reason, note)
           VALUES (%s, %s, %s, %s, %s, %s, %s)
           RETURNING id, decided_at""",
        (case_id, decision, implant_id, chosen_rank, reviewer, reason, note),
    ).fetchone()
    assert row is not None
    return row


def decision(conn: Connection, case_id: int) -> dict[str, Any] | None:
    return conn.execute(
        """SELECT review_decisions.id, review_decisions.decision, review_decisions.implant_id,
                  implants.manufacturer, implants.system, review_decisions.chosen_rank, review_decisions.reviewer,
                  review_decisions.reason, review_decisions.note, review_decisions.decided_at
             FROM review_decisions LEFT JOIN implants ON implants.id = review_decisions.implant_id
            WHERE review_decisions.case_id = %s""",
        (case_id,),
    ).fetchone()


def decision_of_case(conn: Connection, case_id: int) -> dict[str, Any] | None:
    """The case, its decision and chosen implant, and that implant's best similarity among the case's
    current candidates (NULL when the reviewer chose an implant that was not proposed); None if undecided."""
    return conn.execute(
        """
        SELECT cases.id AS case_id, cases.submission_id, cases.form_id, cases.source, cases.status,
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
    ).fetchone()
