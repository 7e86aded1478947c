"""SQL for the implant catalog and its reference images, including nearest-neighbour search."""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Literal

import numpy as np
from pgvector import Vector
from psycopg import sql
from psycopg.types.json import Jsonb

from raiox.database import Connection
from raiox.models import Implant, Record
from raiox.repository import rows


class ImplantSizes(Record):
    """An implant's diameter and length ranges in mm (None where the catalog does not say)."""

    diameter_min_mm: float | None
    diameter_max_mm: float | None
    length_min_mm: float | None
    length_max_mm: float | None


class NearestImplant(Record):
    """An implant system near a vector: its best reference under the model and the system's similarity (its two
    best references' cosines blended, SECOND_REFERENCE_WEIGHT)."""

    implant_id: int
    reference_image_id: int
    storage_key: str
    similarity: float
    manufacturer: str
    system: str


class ImplantReferences(Record):
    """An implant and how many references one model (None: no model at all) has embedded of it."""

    id: int
    manufacturer: str
    system: str
    implant_type: str | None
    connection: str | None
    model_id: str | None
    references: int


class StoredReference(Record):
    """A reference film in object storage, as re-embedding under another model reads it."""

    implant_id: int
    storage_key: str
    sha256: str
    source: str
    source_case_id: int | None


class ImplantListing(ImplantSizes):
    """An implant found by a catalog search: its references and the key of its first catalog film."""

    id: int
    manufacturer: str
    system: str
    implant_type: str | None
    connection: str | None
    references: int
    reference_storage_key: str | None


class LabelledFilm(Record):
    """A film whose implant system is known, in object storage: a reference image or an approved case's X-ray,
    labelled "manufacturer system"."""

    storage_key: str
    label: str


class CatalogSize(Record):
    """How many implant systems the catalog has, and its reference images per model id."""

    implants: int
    references: dict[str, int]

log = logging.getLogger(__name__)


def upsert_implant(
    conn: Connection,
    manufacturer: str,
    system: str,
    *,
    implant_type: str | None = None,
    connection: str | None = None,
    notes: str | None = None,
    diameter_mm: tuple[float, float] | None = None,
    length_mm: tuple[float, float] | None = None,
) -> Implant:
    """Insert the implant system, or fill in its descriptive fields and size ranges (min, max); names match
    ignoring case. A range given replaces the stored one; one not given leaves it."""
    implant = rows.one(
        conn, Implant,
        """
        INSERT INTO implants (manufacturer, system, implant_type, connection, notes,
                              diameter_min_mm, diameter_max_mm, length_min_mm, length_max_mm)
        VALUES (%(manufacturer)s, %(system)s, %(implant_type)s, %(connection)s, %(notes)s,
                %(diameter_min)s, %(diameter_max)s, %(length_min)s, %(length_max)s)
        ON CONFLICT (lower(manufacturer), lower(system)) DO UPDATE
           SET implant_type    = coalesce(EXCLUDED.implant_type, implants.implant_type),
               connection      = coalesce(EXCLUDED.connection, implants.connection),
               notes           = coalesce(EXCLUDED.notes, implants.notes),
               diameter_min_mm = coalesce(EXCLUDED.diameter_min_mm, implants.diameter_min_mm),
               diameter_max_mm = coalesce(EXCLUDED.diameter_max_mm, implants.diameter_max_mm),
               length_min_mm   = coalesce(EXCLUDED.length_min_mm, implants.length_min_mm),
               length_max_mm   = coalesce(EXCLUDED.length_max_mm, implants.length_max_mm)
        RETURNING id, manufacturer, system, implant_type, connection, notes
        """,
        {
            "manufacturer": manufacturer.strip(),
            "system": system.strip(),
            "implant_type": implant_type,
            "connection": connection,
            "notes": notes,
            "diameter_min": diameter_mm[0] if diameter_mm else None,
            "diameter_max": diameter_mm[1] if diameter_mm else None,
            "length_min": length_mm[0] if length_mm else None,
            "length_max": length_mm[1] if length_mm else None,
        },
    )
    assert implant is not None
    return implant


def set_spec(conn: Connection, implant_id: int, spec: dict[str, Any]) -> None:
    """Keep the spec sheet an implant system's reference films were rendered from."""
    conn.execute("UPDATE implants SET spec = %s WHERE id = %s", (Jsonb(spec), implant_id))


def add_numbered_implants(conn: Connection, count: int, *, manufacturer: str = "Bench") -> int:
    """`count` implant systems of one manufacturer, "System 1" to "System <count>", in one statement (the
    scratch catalogs of `raiox bench match`); returns the first one's id, the others' following it in order
    (one statement on a sequence no other session draws from meanwhile)."""
    row = conn.execute(
        """WITH added AS (INSERT INTO implants (manufacturer, system)
                          SELECT %s, 'System ' || n FROM generate_series(1, %s) AS n RETURNING id)
           SELECT min(id) AS id FROM added""",
        (manufacturer, count),
    ).fetchone()
    if row is None or row["id"] is None:
        raise ValueError(f"no implants added (count {count})")
    return int(row["id"])


def add_reference_image(
    conn: Connection,
    *,
    implant_id: int,
    storage_key: str,
    sha256: str,
    model_id: str,
    embedding: np.ndarray | Vector,
    source: str = "catalog",
    source_case_id: int | None = None,
    crop_key: str | None = None,
    summary: dict[str, Any] | None = None,
) -> tuple[int, bool]:
    """Store one embedded reference image (with its implant's canonical crop and measurements); returns
    (id, created). The same image and model twice is a no-op."""
    row = conn.execute(
        """
        WITH inserted AS (
            INSERT INTO reference_images
                   (implant_id, storage_key, sha256, source, source_case_id, model_id, embedding, crop_key, summary)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (implant_id, sha256, model_id) DO NOTHING
            RETURNING id
        )
        SELECT id, true AS created FROM inserted
        UNION ALL
        SELECT id, false FROM reference_images
         WHERE implant_id = %s AND sha256 = %s AND model_id = %s AND NOT EXISTS (SELECT 1 FROM inserted)
        """,
        (implant_id, storage_key, sha256, source, source_case_id, model_id, embedding, crop_key,
         Jsonb(summary) if summary is not None else None, implant_id, sha256, model_id),
    ).fetchone()
    assert row is not None
    if row["created"] and source != "rendered":
        _retire_rendered(conn, implant_id, model_id)
    return int(row["id"]), bool(row["created"])


def _retire_rendered(conn: Connection, implant_id: int, model_id: str) -> None:
    """Films rendered from a spec sheet stand in until real ones arrive: from two real references on, they go."""
    conn.execute(
        """DELETE FROM reference_images
            WHERE implant_id = %(implant)s AND model_id = %(model)s AND source = 'rendered'
              AND (SELECT count(*) FROM reference_images
                    WHERE implant_id = %(implant)s AND model_id = %(model)s AND source <> 'rendered') >= 2""",
        {"implant": implant_id, "model": model_id})


# A system's similarity blends its best reference's cosine with its second best's (1 : this weight; a system with
# one reference counts it twice): with four references of a system, one film cropped or turned badly no longer
# decides alone. Measured with `raiox eval` (docs/quality.md, "Ranking systems").
SECOND_REFERENCE_WEIGHT = 0.5
# ...except that a reference of the very same picture (a film sent again after a reviewer approved it) decides alone.
SAME_PICTURE_SIMILARITY = 0.9999


def system_similarity(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Systems' similarities from their best and second-best references' cosines (second = first for a system
    with one reference), as TOP_IMPLANTS_SQL computes them."""
    blended = (first + SECOND_REFERENCE_WEIGHT * second) / (1 + SECOND_REFERENCE_WEIGHT)
    return np.asarray(np.where(first >= SAME_PICTURE_SIMILARITY, first, blended))

# One statement: the HNSW scan yields `candidates` nearest references (bare `<=>` + LIMIT, so the index is used);
# every reference of the implants among them is then compared exactly (few rows, through the implant_id index),
# each implant scored on its two best, and the k best implants returned with their best reference.
TOP_IMPLANTS_SQL = """
    WITH nearest AS (
        SELECT implant_id
          FROM reference_images
         WHERE model_id = %(model_id)s
         ORDER BY embedding <=> %(query)s
         LIMIT %(candidates)s
    ), scored AS (
        SELECT implant_id, id, storage_key, 1 - (embedding <=> %(query)s) AS similarity,
               row_number() OVER (PARTITION BY implant_id ORDER BY embedding <=> %(query)s, id) AS place
          FROM reference_images
         WHERE model_id = %(model_id)s AND implant_id IN (SELECT implant_id FROM nearest)
    ), best AS (
        SELECT first.implant_id, first.id, first.storage_key,
               CASE WHEN first.similarity >= %(same_picture)s THEN first.similarity
                    ELSE (first.similarity + %(second_weight)s * coalesce(second.similarity, first.similarity))
                         / (1 + %(second_weight)s) END AS similarity
          FROM scored AS first
          LEFT JOIN scored AS second ON second.implant_id = first.implant_id AND second.place = 2
         WHERE first.place = 1
    )
    SELECT best.implant_id, best.id AS reference_image_id, best.storage_key, best.similarity,
           implants.manufacturer, implants.system
      FROM best JOIN implants ON implants.id = best.implant_id
     ORDER BY best.similarity DESC, best.implant_id
     LIMIT %(k)s
"""


def set_ef_search(conn: Connection, ef_search: int) -> None:
    """hnsw.ef_search for the current transaction only."""
    conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(ef_search),))


def top_implants(
    conn: Connection, query: np.ndarray, model_id: str, *, k: int, candidates: int
) -> list[NearestImplant]:
    # Never a server-side prepared statement: only a plan made with the model id's value can use that
    # model's partial index (a generic plan cannot prove `model_id = $1` matches its predicate).
    return rows.many(conn, NearestImplant, TOP_IMPLANTS_SQL,
                     {"query": query, "model_id": model_id, "k": k, "candidates": candidates,
                      "second_weight": SECOND_REFERENCE_WEIGHT, "same_picture": SAME_PICTURE_SIMILARITY},
                     prepare=False)


# The per-model HNSW index (migration 0005 creates the same one, by the same name, for models present then).
_MODEL_INDEX_SQL = (
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON reference_images USING hnsw (embedding vector_cosine_ops) "
    "WITH (m = 32, ef_construction = 128) WHERE model_id = {model_id}"
)
_INDEX_LOCK_CLASS = 0x7269  # advisory lock class ("ri") for index builds; the second key is the name's hash

IndexState = Literal["ready", "building", "invalid", "missing"]


def model_index_name(model_id: str) -> str:
    """`reference_images_hnsw_<md5 of the model id>`: any model id (quotes, length) gives a safe, fixed-size
    identifier, and SQL computes the same one (`'reference_images_hnsw_' || md5(model_id)`)."""
    return "reference_images_hnsw_" + hashlib.md5(model_id.encode()).hexdigest()


def model_index_state(conn: Connection, model_id: str) -> IndexState:
    """`ready` (valid: the planner uses it), `building` (a concurrent build is under way), `invalid` (a
    concurrent build that failed left it behind) or `missing`."""
    row = conn.execute(
        """
        SELECT pg_index.indisvalid AS valid,
               EXISTS (SELECT 1 FROM pg_stat_progress_create_index AS p
                        WHERE p.index_relid = pg_index.indexrelid) AS building
          FROM pg_index WHERE pg_index.indexrelid = to_regclass(%s)
        """,
        (model_index_name(model_id),),
    ).fetchone()
    if row is None:
        return "missing"
    if row["valid"]:
        return "ready"
    return "building" if row["building"] else "invalid"


def ensure_model_index(conn: Connection, model_id: str, *, build_memory: str | None = None) -> IndexState:
    """Build the model's partial HNSW index unless a valid one exists; returns the state it leaves.

    Called when a model id gets references: catalog import, re-embedding, spec sheets, a reference learned from a
    decision (a lookup when the index is ready). CONCURRENTLY, so references and cases keep being written
    meanwhile; `conn` must therefore be in autocommit mode (`Database.autocommit()`). An invalid leftover is
    dropped and built again. When another session is already building it, this one returns `building` at once
    instead of waiting. `build_memory` sets maintenance_work_mem for the build (pgvector builds much faster while
    the graph fits in it; callers pass RAIOX_INDEX_BUILD_MEMORY)."""
    if not conn.autocommit:
        raise ValueError("ensure_model_index needs an autocommit connection (CREATE INDEX CONCURRENTLY)")
    if model_index_state(conn, model_id) == "ready":
        return "ready"
    name = model_index_name(model_id)
    locked = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s)) AS locked",
                          (_INDEX_LOCK_CLASS, name)).fetchone()
    if not (locked and locked["locked"]):
        return "building"
    try:
        state = model_index_state(conn, model_id)
        if state == "ready":
            return state
        if state == "invalid":
            conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(name)))
        log.info("building the HNSW index of %s", model_id)
        if build_memory:
            conn.execute("SELECT set_config('maintenance_work_mem', %s, false)", (build_memory,))
        try:
            conn.execute(sql.SQL(_MODEL_INDEX_SQL).format(name=sql.Identifier(name), model_id=sql.Literal(model_id)))
        finally:
            if build_memory:
                conn.execute("RESET maintenance_work_mem")
        state = model_index_state(conn, model_id)
        log.info("HNSW index of %s: %s", model_id, state)
        return state
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (_INDEX_LOCK_CLASS, name))


def relation_bytes(conn: Connection, relation: str) -> int:
    """Size on disk of the catalog's table or one of its indexes (`reference_images`, `model_index_name(…)`),
    in bytes; 0 when there is no such relation."""
    row = conn.execute("SELECT pg_relation_size(to_regclass(%s)) AS size", (relation,)).fetchone()
    return int(row["size"] or 0) if row else 0


def implant_count(conn: Connection, model_id: str) -> int:
    """Implants that have at least one reference embedded by this model."""
    row = conn.execute(
        "SELECT count(DISTINCT implant_id) AS n FROM reference_images WHERE model_id = %s", (model_id,)
    ).fetchone()
    return int(row["n"]) if row else 0


def catalog_summary(conn: Connection) -> list[ImplantReferences]:
    """Every implant with its reference count per model id."""
    return rows.many(
        conn, ImplantReferences,
        """
        SELECT implants.id, implants.manufacturer, implants.system, implants.implant_type,
               implants.connection, reference_images.model_id, count(reference_images.id) AS references
          FROM implants LEFT JOIN reference_images ON reference_images.implant_id = implants.id
         GROUP BY implants.id, reference_images.model_id
         ORDER BY lower(implants.manufacturer), lower(implants.system), reference_images.model_id
        """,
    )


def reference_vectors(conn: Connection, implant_ids: list[int], model_id: str) -> dict[int, list[np.ndarray]]:
    """The stored reference vectors of these implants under `model_id`, per implant."""
    found: dict[int, list[np.ndarray]] = {}
    for row in conn.execute("SELECT implant_id, embedding FROM reference_images WHERE implant_id = ANY(%s) "
                            "AND model_id = %s ORDER BY id", (implant_ids, model_id)):
        found.setdefault(row["implant_id"], []).append(row["embedding"].to_numpy().astype(np.float32))
    return found


def existing_reference_shas(conn: Connection, implant_id: int, model_id: str) -> set[str]:
    rows = conn.execute(
        "SELECT sha256 FROM reference_images WHERE implant_id = %s AND model_id = %s", (implant_id, model_id)
    )
    return {row["sha256"] for row in rows}


_MISSING_MODEL_WHERE = """
     WHERE NOT EXISTS (SELECT 1 FROM reference_images AS o
                        WHERE o.implant_id = r.implant_id AND o.sha256 = r.sha256 AND o.model_id = %(model_id)s)
"""


def references_missing_model(conn: Connection, model_id: str, *, after: tuple[int, str] | None = None,
                             limit: int | None = None) -> list[StoredReference]:
    """One row per stored reference image that has no embedding under `model_id` yet, in (implant_id,
    sha256) order: `after` the last one of the previous page, at most `limit` of them."""
    return rows.many(
        conn, StoredReference,
        """
        SELECT DISTINCT ON (implant_id, sha256) implant_id, storage_key, sha256, source, source_case_id
          FROM reference_images AS r
        """ + _MISSING_MODEL_WHERE + """
           AND (r.implant_id, r.sha256) > (%(after_implant)s, %(after_sha)s)
         ORDER BY implant_id, sha256, id
         LIMIT %(limit)s
        """,
        {"model_id": model_id, "after_implant": after[0] if after else 0, "after_sha": after[1] if after else "",
         "limit": limit},
    )


def count_references_missing_model(conn: Connection, model_id: str) -> int:
    row = conn.execute(
        "SELECT count(*) AS n FROM (SELECT DISTINCT implant_id, sha256 FROM reference_images AS r"
        + _MISSING_MODEL_WHERE + ") AS missing",
        {"model_id": model_id},
    ).fetchone()
    return int(row["n"]) if row else 0


def labelled_films(conn: Connection) -> list[LabelledFilm]:
    """Every film whose implant system is known (`raiox eval` against the database): the reference images of
    every model and the stored X-rays of approved cases, each image once per implant."""
    return rows.many(
        conn, LabelledFilm,
        """
        SELECT DISTINCT ON (films.sha256, films.implant_id) films.storage_key,
               implants.manufacturer || ' ' || implants.system AS label
          FROM (SELECT implant_id, storage_key, sha256 FROM reference_images
                UNION ALL
                SELECT d.implant_id, ci.storage_key, ci.sha256
                  FROM review_decisions d JOIN case_images ci ON ci.case_id = d.case_id
                 WHERE d.decision = 'approved' AND ci.status IN ('stored', 'embedded')
                   AND ci.storage_key IS NOT NULL
               ) films
          JOIN implants ON implants.id = films.implant_id
         ORDER BY films.sha256, films.implant_id
        """,
    )


# An implant's size ranges as the review page reads them (NULL where the catalog does not say).
SIZE_COLUMNS = "implants.diameter_min_mm, implants.diameter_max_mm, implants.length_min_mm, implants.length_max_mm"


def search_implants(conn: Connection, words: list[str], *, limit: int) -> list[ImplantListing]:
    """Implants whose "manufacturer system" contains every word (ignoring case), with reference counts, size
    ranges and the storage key of their first catalog reference image (never a film learned from a case)."""
    patterns = ["%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%" for word in words]
    return rows.many(
        conn, ImplantListing,
        f"""
        SELECT implants.id, implants.manufacturer, implants.system, implants.implant_type, implants.connection,
               {SIZE_COLUMNS},
               (SELECT count(*) FROM reference_images WHERE reference_images.implant_id = implants.id)
                   AS references,
               (SELECT storage_key FROM reference_images
                 WHERE reference_images.implant_id = implants.id AND source <> 'approved_case'
                 ORDER BY id LIMIT 1) AS reference_storage_key
          FROM implants
         WHERE (implants.manufacturer || ' ' || implants.system) ILIKE ALL(%s)
         ORDER BY lower(implants.manufacturer), lower(implants.system)
         LIMIT %s
        """,
        (patterns, limit),
    )


def implant_exists(conn: Connection, implant_id: int) -> bool:
    return conn.execute("SELECT 1 FROM implants WHERE id = %s", (implant_id,)).fetchone() is not None


def catalog_size(conn: Connection) -> CatalogSize:
    """How many implant systems the catalog has, and its reference images per model id (for the system view)."""
    implants = conn.execute("SELECT count(*) AS n FROM implants").fetchone()
    per_model = conn.execute(
        "SELECT model_id, count(*) AS n FROM reference_images GROUP BY model_id ORDER BY model_id"
    ).fetchall()
    return CatalogSize(implants=int(implants["n"]) if implants else 0,
                       references={row["model_id"]: int(row["n"]) for row in per_model})
