"""The schema's rules, enforced by PostgreSQL itself: lifecycle, uniqueness, decisions, cosine index."""

from __future__ import annotations

import threading

import pytest
from psycopg import errors

from raiox.database import Database
from raiox.models import CaseStatus
from raiox.repository import cases, catalog, images

ORDER = [CaseStatus.EMBEDDING, CaseStatus.READY, CaseStatus.APPROVED, CaseStatus.NOTIFIED]


def _new_case(db: Database, submission_id: str = "5830000000001") -> int:
    with db.transaction() as conn:
        case, created = cases.create_case(conn, submission_id=submission_id, form_id="2410", raw_payload={})
    assert created
    return case.id


def test_unknown_status_is_rejected(db: Database) -> None:
    case_id = _new_case(db)
    with pytest.raises(errors.CheckViolation), db.transaction() as conn:
        conn.execute("UPDATE cases SET status = 'lost' WHERE id = %s", (case_id,))


def test_lifecycle_walks_forward(db: Database) -> None:
    case_id = _new_case(db)
    for status in ORDER:
        with db.transaction() as conn:
            assert cases.set_case_status(conn, case_id, status).status == status


@pytest.mark.parametrize(
    ("path", "forbidden"),
    [
        ([], CaseStatus.APPROVED),  # received cannot skip review
        ([], CaseStatus.NOTIFIED),
        ([CaseStatus.EMBEDDING, CaseStatus.READY, CaseStatus.REJECTED], CaseStatus.APPROVED),
        (ORDER, CaseStatus.RECEIVED),  # notified is final
        ([CaseStatus.FAILED], CaseStatus.APPROVED),  # a failed case has nothing to approve (0009: only reject)
    ],
)
def test_lifecycle_refuses_jumps(db: Database, path: list[CaseStatus], forbidden: CaseStatus) -> None:
    case_id = _new_case(db)
    for status in path:
        with db.transaction() as conn:
            cases.set_case_status(conn, case_id, status)
    with pytest.raises(errors.CheckViolation, match="cannot go from"), db.transaction() as conn:
        cases.set_case_status(conn, case_id, forbidden)


def test_a_failed_case_can_be_rejected_then_notified(db: Database) -> None:
    case_id = _new_case(db)
    for status in (CaseStatus.FAILED, CaseStatus.REJECTED, CaseStatus.NOTIFIED):
        with db.transaction() as conn:
            assert cases.set_case_status(conn, case_id, status).status == status


def test_submission_id_is_unique(db: Database) -> None:
    _new_case(db, "dup-1")
    with pytest.raises(errors.UniqueViolation), db.transaction() as conn:
        conn.execute("INSERT INTO cases (submission_id) VALUES ('dup-1')")
    with db.transaction() as conn:
        again, created = cases.create_case(conn, submission_id="dup-1")
    assert not created
    with db.transaction() as conn:
        assert conn.execute("SELECT count(*) AS n FROM cases").fetchone() == {"n": 1}


def test_same_submission_from_many_threads_yields_one_case(db: Database) -> None:
    barrier = threading.Barrier(6)
    outcomes: list[tuple[int, bool]] = []

    def deliver() -> None:
        barrier.wait()
        with db.transaction() as conn:
            case, created = cases.create_case(conn, submission_id="race-1")
            conn.execute("SELECT pg_sleep(0.05)")  # hold the row while the others arrive
        outcomes.append((case.id, created))

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({case_id for case_id, _ in outcomes}) == 1
    assert sorted(created for _, created in outcomes) == [False] * 5 + [True]


def test_a_stored_case_image_needs_a_storage_key_and_only_a_pending_one_holds_upload_bytes(db: Database) -> None:
    case_id = _new_case(db)
    with db.transaction() as conn:
        images.add_case_image(conn, case_id=case_id, position=0, error="404 from Jotform")  # failed
        images.add_case_image(conn, case_id=case_id, position=1, source_url="https://x/uploads/a.jpg")  # pending
        images.add_case_image(conn, case_id=case_id, position=2, upload=b"bytes")  # pending, with its bytes
    with pytest.raises(errors.CheckViolation), db.transaction() as conn:
        conn.execute("INSERT INTO case_images (case_id, position, status) VALUES (%s, 3, 'stored')", (case_id,))
    with pytest.raises(errors.CheckViolation), db.transaction() as conn:
        conn.execute("UPDATE case_images SET status = 'failed' WHERE case_id = %s AND position = 2", (case_id,))


def _implant(db: Database) -> int:
    with db.transaction() as conn:
        return catalog.upsert_implant(conn, "Acme", "Tapered", connection="conical").id


def test_decision_rules(db: Database) -> None:
    case_id = _new_case(db)
    implant_id = _implant(db)
    insert = "INSERT INTO review_decisions (case_id, decision, implant_id, reviewer, reason) VALUES (%s,%s,%s,%s,%s)"
    with pytest.raises(errors.CheckViolation), db.transaction() as conn:
        conn.execute(insert, (case_id, "approved", None, "schema.reviewer", None))  # approval names an implant
    with pytest.raises(errors.CheckViolation), db.transaction() as conn:
        conn.execute(insert, (case_id, "rejected", None, "schema.reviewer", " "))  # rejection needs a reason
    with pytest.raises(errors.ForeignKeyViolation), db.transaction() as conn:
        conn.execute(insert, (case_id, "approved", implant_id + 1000, "schema.reviewer", None))
    with db.transaction() as conn:
        conn.execute(insert, (case_id, "approved", implant_id, "schema.reviewer", None))
    with pytest.raises(errors.UniqueViolation), db.transaction() as conn:
        conn.execute(insert, (case_id, "rejected", None, "schema.reviewer", "blurry"))  # decided once


def test_implant_names_are_unique_ignoring_case(db: Database) -> None:
    first = _implant(db)
    with db.transaction() as conn:
        again = catalog.upsert_implant(conn, " ACME ", "tapered", notes="re-imported")
    assert again.id == first
    assert again.notes == "re-imported" and again.connection == "conical"
