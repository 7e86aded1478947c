"""The schema's rules, enforced by PostgreSQL itself: lifecycle, uniqueness, decisions, cosine index."""

from __future__ import annotations

import threading

import numpy as np
import psycopg
import pytest
from psycopg import errors

from raiox.database import Database
from raiox.models import CaseStatus
from raiox.repository import cases, catalog

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
    ],
)
def test_lifecycle_refuses_jumps(db: Database, path: list[CaseStatus], forbidden: CaseStatus) -> None:
    case_id = _new_case(db)
    for status in path:
        with db.transaction() as conn:
            cases.set_case_status(conn, case_id, status)
    with pytest.raises(errors.CheckViolation, match="cannot go from"), db.transaction() as conn:
        cases.set_case_status(conn, case_id, forbidden)


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


def test_case_image_needs_a_storage_key_unless_failed(db: Database) -> None:
    case_id = _new_case(db)
    with db.transaction() as conn:
        cases.add_case_image(conn, case_id=case_id, position=0, storage_key=None, error="404 from Jotform")
    with pytest.raises(errors.CheckViolation), db.transaction() as conn:
        cases.add_case_image(conn, case_id=case_id, position=1, storage_key=None)


def _implant(db: Database) -> int:
    with db.transaction() as conn:
        return catalog.upsert_implant(conn, "Acme", "Tapered", connection="conical").id


def test_decision_rules(db: Database) -> None:
    case_id = _new_case(db)
    implant_id = _implant(db)
    insert = "INSERT INTO review_decisions (case_id, decision, implant_id, reviewer, reason) VALUES (%s,%s,%s,%s,%s)"
    with pytest.raises(errors.CheckViolation), db.transaction() as conn:
        conn.execute(insert, (case_id, "approved", None, "brenda", None))  # approval names an implant
    with pytest.raises(errors.CheckViolation), db.transaction() as conn:
        conn.execute(insert, (case_id, "rejected", None, "brenda", " "))  # rejection needs a reason
    with pytest.raises(errors.ForeignKeyViolation), db.transaction() as conn:
        conn.execute(insert, (case_id, "approved", implant_id + 1000, "brenda", None))
    with db.transaction() as conn:
        conn.execute(insert, (case_id, "approved", implant_id, "brenda", None))
    with pytest.raises(errors.UniqueViolation), db.transaction() as conn:
        conn.execute(insert, (case_id, "rejected", None, "brenda", "blurry"))  # decided once


def test_implant_names_are_unique_ignoring_case(db: Database) -> None:
    first = _implant(db)
    with db.transaction() as conn:
        again = catalog.upsert_implant(conn, " ACME ", "tapered", notes="re-imported")
    assert again.id == first
    assert again.notes == "re-imported" and again.connection == "conical"


def _unit_vectors(count: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, 512)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture
def populated_references(db: Database) -> np.ndarray:
    vectors = _unit_vectors(3000, seed=7)
    with db.transaction() as conn:
        implant_id = catalog.upsert_implant(conn, "Acme", "Tapered").id
        with conn.cursor().copy(
            "COPY reference_images (implant_id, storage_key, sha256, model_id, embedding) FROM STDIN"
        ) as copy:
            for number, vector in enumerate(vectors):
                sha = f"{number:064x}"
                copy.write_row((implant_id, f"references/{sha[:2]}/{sha}.png", sha, "test-model",
                                "[" + ",".join(f"{x:.6f}" for x in vector) + "]"))
        conn.execute("ANALYZE reference_images")
    return vectors


def _plan(conn: psycopg.Connection, sql: str, params: dict) -> str:
    rows = conn.execute("EXPLAIN " + sql, params).fetchall()
    return "\n".join(row["QUERY PLAN"] for row in rows)


def test_top_k_query_uses_the_hnsw_cosine_index(db: Database, populated_references: np.ndarray) -> None:
    query = populated_references[42]
    params = {"query": query, "model_id": "test-model", "limit": 3}
    with db.transaction() as conn:
        plan = _plan(conn, catalog.NEAREST_REFERENCES_SQL, params)
        assert "reference_images_embedding_hnsw" in plan, plan
        # The control: ordering by an expression of the distance cannot use the index.
        by_expression = catalog.NEAREST_REFERENCES_SQL.replace(
            "ORDER BY embedding <=> %(query)s", "ORDER BY 1 - (embedding <=> %(query)s) DESC")
        assert "reference_images_embedding_hnsw" not in _plan(conn, by_expression, params)
        nearest = catalog.nearest_references(conn, query, "test-model", 3)
        assert len(nearest) == 3
        assert nearest[0].similarity == pytest.approx(1.0, abs=1e-4)
        assert [n.similarity for n in nearest] == sorted((n.similarity for n in nearest), reverse=True)
        assert catalog.nearest_references(conn, query, "other-model", 3) == []
