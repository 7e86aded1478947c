"""Top-k matching in SQL: one slot per implant, cosine similarity, model separation, the HNSW index."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from raiox.database import Connection, Database
from raiox.embed.matching import find_candidates
from raiox.repository import catalog
from raiox.tools.quality import rank_systems

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
            # The reported similarity blends the cosines of that implant's two best references; the reference
            # shown is its best.
            rows = conn.execute(
                "SELECT id, 1 - (embedding <=> %s) AS s FROM reference_images WHERE implant_id = %s AND model_id = %s "
                "ORDER BY s DESC LIMIT 2", (centres[target], candidates[0].implant_id, MODEL)).fetchall()
            weight = catalog.SECOND_REFERENCE_WEIGHT
            assert candidates[0].similarity == pytest.approx((rows[0]["s"] + weight * rows[1]["s"]) / (1 + weight),
                                                             abs=1e-5)
            assert candidates[0].reference_image_id == rows[0]["id"]


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


def _two_model_catalog(db: Database, rng: np.random.Generator, models: dict[str, int]) -> dict[str, np.ndarray]:
    """30 implants; `models` maps a model id to its references per implant (clustered around a centre of
    that model's own); then each model's index, built as catalog import does. Returns the centres."""
    centres = {model: _unit(rng.normal(size=(30, 512))) for model in models}
    with db.transaction() as conn:
        ids = [catalog.upsert_implant(conn, "Maker", f"System {number}").id for number in range(30)]
        for model, per_implant in models.items():
            for implant_id, centre in zip(ids, centres[model], strict=True):
                refs = _unit(centre + 0.5 * _unit(rng.normal(size=(per_implant, 512))))
                _add_references(conn, implant_id, refs, model_id=model)
        conn.execute("ANALYZE reference_images")
    with db.autocommit() as conn:
        for model in models:
            assert catalog.ensure_model_index(conn, model) == "ready"
    return centres


RETRAINED = "retrained'); DROP TABLE implants; --"  # a model id is data, never SQL


def test_top_k_statement_uses_the_models_own_hnsw_index(db: Database) -> None:
    """At catalog scale every model's query scans that model's partial HNSW index, a minority model's too.

    (With only a few hundred rows for a model the planner rightly prefers the model_id index and an
    exact sort; that plan is exact, so it needs no test.)"""
    rng = np.random.default_rng(5)
    _two_model_catalog(db, rng, {MODEL: 100, RETRAINED: 40})
    with db.transaction() as conn:
        for model, other in ((MODEL, RETRAINED), (RETRAINED, MODEL)):
            params = {"query": _unit(rng.normal(size=512)), "model_id": model, "k": 3, "candidates": 64,
                      "second_weight": catalog.SECOND_REFERENCE_WEIGHT,
                      "same_picture": catalog.SAME_PICTURE_SIMILARITY}
            plan = _plan(conn, catalog.TOP_IMPLANTS_SQL, params)
            assert catalog.model_index_name(model) in plan, plan
            assert catalog.model_index_name(other) not in plan
        # A model without an index of its own is never matched through another model's graph: exact scan.
        params = {"query": _unit(rng.normal(size=512)), "model_id": "no-index-yet", "k": 3, "candidates": 64,
                      "second_weight": catalog.SECOND_REFERENCE_WEIGHT,
                      "same_picture": catalog.SAME_PICTURE_SIMILARITY}
        assert "hnsw" not in _plan(conn, catalog.TOP_IMPLANTS_SQL, params)
        # The control: ordering by an expression of the distance cannot use the index.
        by_expression = catalog.TOP_IMPLANTS_SQL.replace(
            "ORDER BY embedding <=> %(query)s", "ORDER BY 1 - (embedding <=> %(query)s) DESC")
        params = {"query": _unit(rng.normal(size=512)), "model_id": MODEL, "k": 3, "candidates": 64,
                      "second_weight": catalog.SECOND_REFERENCE_WEIGHT,
                      "same_picture": catalog.SAME_PICTURE_SIMILARITY}
        assert catalog.model_index_name(MODEL) not in _plan(conn, by_expression, params)
    assert {row["tablename"] for row in _indexes(db) if "hnsw" in row["indexname"]} == {"reference_images"}
    assert not [row for row in _indexes(db) if row["indexname"] == "reference_images_embedding_hnsw"]


def _indexes(db: Database) -> list[dict]:
    with db.transaction() as conn:
        return conn.execute("SELECT tablename, indexname, indexdef FROM pg_indexes").fetchall()


def test_minority_model_gets_exact_answers_from_its_own_index(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A retrained model with a tenth of the references: every answer equals the exact top-3 of its own
    rows, without the exact-scan fallback, and repeated calls on one connection keep scanning its index
    (a cached generic plan could not use a partial index)."""
    rng = np.random.default_rng(7)
    centres = _two_model_catalog(db, rng, {MODEL: 100, RETRAINED: 10})
    with db.transaction() as conn:
        refs = conn.execute("SELECT implant_id, embedding FROM reference_images WHERE model_id = %s",
                            (RETRAINED,)).fetchall()
    implants = np.array([row["implant_id"] for row in refs])
    vectors = np.stack([row["embedding"].to_numpy() for row in refs])
    queries = _unit(centres[RETRAINED] + 0.6 * _unit(rng.normal(size=(30, 512))))
    index = catalog.model_index_name(RETRAINED)
    with caplog.at_level(logging.INFO, logger="raiox.embed.matching"), db.transaction() as conn:
        before = conn.execute("SELECT pg_stat_get_xact_numscans(%s::regclass) AS n", (index,)).fetchone()["n"]
        for query in queries:
            exact = [int(label) for label, _ in rank_systems(query, vectors, implants.astype(str).tolist())[:3]]
            assert [c.implant_id for c in find_candidates(conn, query, RETRAINED, k=3)] == exact
        scans = conn.execute("SELECT pg_stat_get_xact_numscans(%s::regclass) AS n", (index,)).fetchone()["n"]
    assert scans - before == len(queries)
    assert "falling back" not in caplog.text


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
