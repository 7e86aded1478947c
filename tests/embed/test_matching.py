"""Top-k matching in SQL: one slot per implant, cosine similarity, model separation, the HNSW index."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from raiox.database import Connection, Database
from raiox.embed.matching import find_candidates
from raiox.repository import catalog

MODEL = "test-model"


def _unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)).astype(np.float32)


def _add_references(conn: Connection, implant_id: int, vectors: np.ndarray, model_id: str = MODEL,
                    offset: int = 0) -> None:
    with conn.cursor().copy(
        "COPY reference_images (implant_id, storage_key, sha256, model_id, embedding) FROM STDIN"
    ) as copy:
        for number, vector in enumerate(vectors, start=offset):
            sha = f"{implant_id:08x}{number:056x}"
            copy.write_row((implant_id, f"references/{sha[:2]}/{sha}.png", sha, model_id,
                            "[" + ",".join(f"{x:.7f}" for x in vector) + "]"))


@pytest.fixture
def clustered_catalog(db: Database) -> dict[str, np.ndarray]:
    """40 implants, each a cluster of 8 references around its own centre, plus rows of an older model."""
    rng = np.random.default_rng(11)
    centres = _unit(rng.normal(size=(40, 512)))
    with db.transaction() as conn:
        for number, centre in enumerate(centres):
            implant_id = catalog.upsert_implant(conn, f"Maker {number % 7}", f"System {number}").id
            refs = _unit(centre + 0.15 * rng.normal(size=(8, 512)) / np.sqrt(512) * 8)
            _add_references(conn, implant_id, refs)
            _add_references(conn, implant_id, _unit(rng.normal(size=(4, 512))), model_id="older-model",
                            offset=100)
        conn.execute("ANALYZE reference_images")
    return {"centres": centres}


def test_top_k_gives_distinct_implants_best_first(db: Database, clustered_catalog: dict) -> None:
    centres = clustered_catalog["centres"]
    with db.transaction() as conn:
        for target in (0, 17, 39):
            candidates = find_candidates(conn, centres[target], MODEL, k=3)
            assert [c.rank for c in candidates] == [1, 2, 3]
            assert candidates[0].system == f"System {target}"
            assert len({c.implant_id for c in candidates}) == 3  # never two slots for one implant
            sims = [c.similarity for c in candidates]
            assert sims == sorted(sims, reverse=True)
            # The reported similarity is the cosine similarity of that implant's best reference.
            best = conn.execute(
                "SELECT max(1 - (embedding <=> %s)) AS s FROM reference_images "
                "WHERE implant_id = %s AND model_id = %s", (centres[target], candidates[0].implant_id, MODEL)
            ).fetchone()["s"]
            assert candidates[0].similarity == pytest.approx(best, abs=1e-5)


def test_models_are_never_compared(db: Database, clustered_catalog: dict) -> None:
    with db.transaction() as conn:
        implant_id = catalog.upsert_implant(conn, "Only", "In other model").id
        query = _unit(np.ones(512))
        _add_references(conn, implant_id, query[None, :], model_id="other-model")
        assert all(c.implant_id != implant_id for c in find_candidates(conn, query, MODEL, k=3))
        assert [c.implant_id for c in find_candidates(conn, query, "other-model", k=3)] == [implant_id]
        assert find_candidates(conn, query, "unknown-model", k=3) == []


def test_fewer_candidates_than_k_fall_back_to_an_exact_scan(
    db: Database, clustered_catalog: dict, caplog: pytest.LogCaptureFixture
) -> None:
    """With ef_search 10 the scan sees about 10 references, of one or two implants only."""
    centres = clustered_catalog["centres"]
    with caplog.at_level(logging.INFO, logger="raiox.embed.matching"), db.transaction() as conn:
        for target in range(5):
            candidates = find_candidates(conn, centres[target], MODEL, k=5, ef_search=10)
            assert len(candidates) == 5 and len({c.implant_id for c in candidates}) == 5
            assert candidates[0].system == f"System {target}"
    assert "falling back to an exact scan" in caplog.text


def _plan(conn: Connection, sql: str, params: dict) -> str:
    return "\n".join(row["QUERY PLAN"] for row in conn.execute("EXPLAIN " + sql, params).fetchall())


def test_top_k_statement_uses_the_hnsw_cosine_index(db: Database) -> None:
    """At catalog scale (one model, thousands of references) the statement must scan the HNSW index.

    (With only a few hundred rows for a model the planner rightly prefers the model_id index and an
    exact sort; that plan is exact, so it needs no test.)"""
    rng = np.random.default_rng(5)
    with db.transaction() as conn:
        # Bulk-load without the index, then rebuild it from the migration's own definition (much faster).
        index_sql = conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s",
                                 ("reference_images_embedding_hnsw",)).fetchone()["indexdef"]
        conn.execute("DROP INDEX reference_images_embedding_hnsw")
        for number in range(30):
            implant_id = catalog.upsert_implant(conn, "Maker", f"System {number}").id
            _add_references(conn, implant_id, _unit(rng.normal(size=(100, 512))))
        conn.execute(index_sql)
        conn.execute("ANALYZE reference_images")
        params = {"query": _unit(rng.normal(size=512)), "model_id": MODEL, "k": 3, "candidates": 100}
        plan = _plan(conn, catalog.TOP_IMPLANTS_SQL, params)
        assert "reference_images_embedding_hnsw" in plan, plan
        # The control: ordering by an expression of the distance cannot use the index.
        by_expression = catalog.TOP_IMPLANTS_SQL.replace(
            "ORDER BY embedding <=> %(query)s", "ORDER BY 1 - (embedding <=> %(query)s) DESC")
        assert "reference_images_embedding_hnsw" not in _plan(conn, by_expression, params)


def test_low_confidence_rule() -> None:
    from raiox.embed.matching import is_low_confidence
    from raiox.settings import Settings

    settings = Settings(_env_file=None, raiox_low_confidence_margin=0.05, raiox_low_confidence_similarity=0.5)
    assert not is_low_confidence([0.9, 0.8, 0.7], settings)
    assert is_low_confidence([0.9, 0.88], settings)  # runner-up too close
    assert is_low_confidence([0.45], settings)  # weak best match
    assert is_low_confidence([], settings)


def test_case_detail_and_result_carry_the_confidence(catalogued) -> None:  # type: ignore[no-untyped-def]
    from raiox.delivery.document import load_result
    from raiox.embed.worker import run_embed_jobs
    from raiox.review import queue
    from support import make_xray, submit_case

    case_id = submit_case(catalogued, "conf-1", [make_xray(12)])
    run_embed_jobs(catalogued)
    catalogued.settings.raiox_low_confidence_margin = 0.0  # nothing is close enough to flag
    assert queue.case_detail(catalogued, case_id, "dr.test")["images"][0]["low_confidence"] is False
    catalogued.settings.raiox_low_confidence_margin = 2.0  # everything is
    assert queue.case_detail(catalogued, case_id, "dr.test")["images"][0]["low_confidence"] is True
    with catalogued.db.transaction() as conn:
        implant_id = conn.execute("SELECT id FROM implants WHERE system = 'S12'").fetchone()["id"]
        conn.execute("UPDATE cases SET status = 'approved' WHERE id = %s", (case_id,))
        conn.execute("INSERT INTO review_decisions (case_id, decision, implant_id, reviewer) "
                     "VALUES (%s, 'approved', %s, 'conf.reviewer')", (case_id, implant_id))
        document, _ = load_result(conn, case_id, catalogued.settings)
    assert document.confidence == "low" and document.field_values()["confidence"] == "low"
