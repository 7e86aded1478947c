"""SQL of delivery: a case's decision as it is sent out, and marking the case notified."""

from __future__ import annotations

from typing import Any

from raiox.database import Connection


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


def mark_notified(conn: Connection, case_id: int) -> None:
    """Case → `notified` with the time (again, for a redelivery); the lifecycle trigger refuses undecided cases."""
    conn.execute("UPDATE cases SET status = 'notified', notified_at = now() WHERE id = %s", (case_id,))
