"""One HNSW index per model id: named from its hash, built concurrently, rebuilt when a failed build left it
invalid, never built twice at once, and the same whether the migration or the repository made it."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from raiox import migrations
from raiox.database import Connection, Database, connect
from raiox.repository import catalog

ODD = "odd'model\\with \"quotes\" and a name longer than sixty-three characters, which identifiers are not"


def _add(conn: Connection, model_id: str, count: int, seed: int = 0) -> None:
    # Plain SQL, not catalog.upsert_implant: the migration test runs this on the schema as it was before 0005.
    implant_id = conn.execute(
        "INSERT INTO implants (manufacturer, system) VALUES ('Maker', 'System') ON CONFLICT "
        "(lower(manufacturer), lower(system)) DO UPDATE SET system = EXCLUDED.system RETURNING id").fetchone()["id"]
    vectors = np.random.default_rng(seed).normal(size=(count, 512)).astype(np.float32)
    for number, vector in enumerate(vectors):
        sha = hashlib.sha256(f"{model_id}{number}".encode()).hexdigest()
        conn.execute("INSERT INTO reference_images (implant_id, storage_key, sha256, model_id, embedding) "
                     "VALUES (%s, %s, %s, %s, %s)", (implant_id, f"references/{sha[:2]}/{sha}.png", sha, model_id,
                                                     vector / np.linalg.norm(vector)))


def _index_oid(conn: Connection, model_id: str) -> int | None:
    row = conn.execute("SELECT to_regclass(%s)::oid AS oid", (catalog.model_index_name(model_id),)).fetchone()
    return row["oid"] if row else None


def test_index_is_named_from_the_model_ids_hash_and_built_once(db: Database) -> None:
    with db.transaction() as conn:
        _add(conn, ODD, 20)
    name = catalog.model_index_name(ODD)
    assert name == "reference_images_hnsw_" + hashlib.md5(ODD.encode()).hexdigest() and len(name) <= 63
    with db.autocommit() as conn:
        assert catalog.model_index_state(conn, ODD) == "missing"
        assert catalog.ensure_model_index(conn, ODD, build_memory="96MB") == "ready"
        first = _index_oid(conn, ODD)
        assert catalog.ensure_model_index(conn, ODD) == "ready"
        assert _index_oid(conn, ODD) == first  # not rebuilt
        assert conn.execute("SHOW maintenance_work_mem").fetchone()["maintenance_work_mem"] != "96MB"
        definition = conn.execute("SELECT pg_get_indexdef(%s::oid) AS d", (first,)).fetchone()["d"]
        # The model id is a quoted literal of the predicate, exactly as given.
        predicate = conn.execute("SELECT pg_get_expr(indpred, indrelid) AS p FROM pg_index WHERE indexrelid = %s",
                                 (first,)).fetchone()["p"]
        assert conn.execute(f"SELECT {predicate.replace('model_id', '%s::text')} AS ok", (ODD,)).fetchone()["ok"]
    assert "USING hnsw (embedding vector_cosine_ops) WITH (m='32', ef_construction='128')" in definition


def test_index_needs_an_autocommit_connection(db: Database) -> None:
    with db.transaction() as conn, pytest.raises(ValueError, match="autocommit"):
        catalog.ensure_model_index(conn, "m")


def test_an_invalid_leftover_is_built_again(db: Database) -> None:
    with db.transaction() as conn:
        _add(conn, "m", 20)
    with db.autocommit() as conn:
        catalog.ensure_model_index(conn, "m")
        leftover = _index_oid(conn, "m")
        # What a CREATE INDEX CONCURRENTLY that was cancelled half-way leaves behind.
        conn.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = %s", (leftover,))
        assert catalog.model_index_state(conn, "m") == "invalid"
        assert catalog.ensure_model_index(conn, "m") == "ready"
        assert _index_oid(conn, "m") != leftover


def test_a_build_under_way_elsewhere_is_not_waited_for(db: Database) -> None:
    with db.transaction() as conn:
        _add(conn, "m", 20)
    with connect(db.url, autocommit=True) as other, db.autocommit() as conn:
        other.execute("SELECT pg_advisory_lock(%s, hashtext(%s))",
                      (catalog._INDEX_LOCK_CLASS, catalog.model_index_name("m")))
        assert catalog.ensure_model_index(conn, "m") == "building"
        assert catalog.model_index_state(conn, "m") == "missing"
        other.execute("SELECT pg_advisory_unlock_all()")
        assert catalog.ensure_model_index(conn, "m") == "ready"


def test_migration_indexes_the_models_present_like_the_repository_does(empty_db_url: str, tmp_path: Path) -> None:
    """0005 gives every model already in the table its index (and drops the shared one); the definition
    is the one ensure_model_index creates, so either may build it."""
    folder = tmp_path / "sql"
    folder.mkdir()
    for path in sorted(migrations.migrations_dir().glob("*.sql")):
        if int(path.name[:4]) < 5:
            shutil.copy(path, folder)
    migrations.migrate(empty_db_url, folder)
    with Database(empty_db_url, max_size=2) as db:
        with db.transaction() as conn:
            _add(conn, "old-model", 10, seed=1)
            _add(conn, ODD, 10, seed=2)
        migrations.migrate(empty_db_url)
        with db.autocommit() as conn:
            definitions = {row["indexname"]: row["indexdef"] for row in conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'reference_images'")}
            assert "reference_images_embedding_hnsw" not in definitions
            for model_id in ("old-model", ODD):
                name = catalog.model_index_name(model_id)
                assert catalog.model_index_state(conn, model_id) == "ready"
                conn.execute(f'DROP INDEX "{name}"')
                assert catalog.ensure_model_index(conn, model_id) == "ready"
                again = conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", (name,)).fetchone()
                assert again["indexdef"] == definitions[name]
            storage = conn.execute("SELECT attstorage FROM pg_attribute WHERE attrelid = 'reference_images'::regclass "
                                   "AND attname = 'embedding'").fetchone()["attstorage"]
    assert storage == "p"  # plain: inline, not TOAST
