"""`raiox bench match`: top-3 latency and recall@3 of the HNSW statement against the exact scan."""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from psycopg.conninfo import make_conninfo

from raiox import migrations
from raiox.database import Database, connect, embedded_database_url, stop_embedded_database
from raiox.repository import catalog
from raiox.tools.bench.common import latency_summary


def _unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)).astype(np.float32)


def synthetic_embeddings(count: int, per_implant: int, rng: np.random.Generator,
                      structured: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(implant centres, references) for `count` references, `per_implant` around each centre.

    structured: like real image embeddings, everything shares one "dental X-ray" direction, systems of a
    manufacturer sit near each other, references near their system. Unstructured: centres uniform on the
    sphere, the worst case for HNSW (every other implant is about equally far)."""
    implants = count // per_implant
    if structured:
        common = _unit(rng.normal(size=512))
        makers = _unit(common + 0.8 * _unit(rng.normal(size=(max(1, implants // 20), 512))))
        centres = _unit(makers[rng.integers(0, len(makers), implants)] + 0.5 * _unit(rng.normal(size=(implants, 512))))
    else:
        centres = _unit(rng.normal(size=(implants, 512)))
    noise = rng.normal(scale=0.3 / np.sqrt(512), size=(implants, per_implant, 512))
    return centres, _unit(centres[:, None, :] + noise)


def _load_references(db: Database, references: np.ndarray) -> str:
    """Bulk-load (implants, per_implant, 512) references without the HNSW index; returns the migrations'
    definition of that index, to build it afterwards (much faster than inserting into it row by row)."""
    with db.transaction() as conn:
        index = conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s",
                             ("reference_images_embedding_hnsw",)).fetchone()
        assert index is not None
        index_sql = str(index["indexdef"])
        conn.execute("DROP INDEX reference_images_embedding_hnsw")
        conn.execute("INSERT INTO implants (manufacturer, system) "
                     "SELECT 'Bench', 'System ' || n FROM generate_series(1, %s) AS n", (len(references),))
        first = conn.execute("SELECT min(id) AS id FROM implants").fetchone()
        assert first is not None
        first_id = int(first["id"])
        with conn.cursor().copy("COPY reference_images (implant_id, storage_key, sha256, model_id, embedding) "
                                "FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["bigint", "text", "text", "text", "vector"])
            for number, refs in enumerate(references):
                for ref_number, ref in enumerate(refs):
                    sha = f"{number:032x}{ref_number:032x}"
                    copy.write_row((first_id + number, f"references/{sha[:2]}/{sha}.png", sha, "bench", ref))
    return index_sql


def _build_index(url: str, index_sql: str) -> float:
    start = time.perf_counter()
    with connect(url, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute("SET max_parallel_maintenance_workers = 2")
        conn.execute(index_sql)
        conn.execute("ANALYZE reference_images")
    return time.perf_counter() - start


def bench_match(sizes: tuple[int, ...] = (10_000, 100_000), *, queries: int = 200, k: int = 3,
                ef_search: int = 64, per_implant: int = 10, structured: bool = True,
                seed: int = 0) -> dict[str, Any]:
    """Top-k latency and recall@k of the HNSW statement against the exact scan, on a scratch database."""
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="raiox-bench-") as scratch:
        pgdata = Path(scratch) / "pg"
        admin_url = embedded_database_url(pgdata)
        try:
            results = [_bench_match_size(admin_url, size, queries=queries, k=k, ef_search=ef_search,
                                         per_implant=per_implant, structured=structured, rng=rng)
                       for size in sizes]
        finally:
            stop_embedded_database(pgdata)
    return {"benchmark": "match", "data": "structured" if structured else "uniform", "k": k,
            "ef_search": ef_search, "queries": queries, "references_per_implant": per_implant, "results": results,
            "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()}}


def _bench_match_size(admin_url: str, size: int, *, queries: int, k: int, ef_search: int, per_implant: int,
                      structured: bool, rng: np.random.Generator) -> dict[str, Any]:
    name = f"bench_{size}"
    with connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = make_conninfo(admin_url, dbname=name)
    migrations.migrate(url)
    with Database(url, max_size=1) as db:
        centres, references = synthetic_embeddings(size, per_implant, rng, structured)
        build_seconds = _build_index(url, _load_references(db, references))
        # A query is a new film of a catalogued implant: its centre plus more noise than the references.
        targets = rng.integers(0, len(centres), size=queries)
        probes = _unit(centres[targets] + rng.normal(scale=0.4 / np.sqrt(512), size=(queries, 512)))
        # Each mode runs over all probes in turn: interleaving would let every exact scan (the whole table
        # through shared buffers) evict the index pages the next HNSW query needs.
        timings: dict[str, list[float]] = {"hnsw": [], "exact": []}
        found: dict[str, list[set[int]]] = {"hnsw": [], "exact": []}
        with db.transaction() as conn:
            catalog.set_ef_search(conn, ef_search)
            for mode, candidates in (("exact", 2**31 - 1), ("hnsw", ef_search)):
                conn.execute("SELECT set_config('enable_indexscan', %s, true)", ("on" if mode == "hnsw" else "off",))
                for probe in probes[:20]:  # warm the pages and the plan
                    catalog.top_implants(conn, probe, "bench", k=k, candidates=candidates)
                for probe in probes:
                    start = time.perf_counter()
                    rows = catalog.top_implants(conn, probe, "bench", k=k, candidates=candidates)
                    timings[mode].append(time.perf_counter() - start)
                    found[mode].append({row["implant_id"] for row in rows})
        hits = sum(len(a & e) for a, e in zip(found["hnsw"], found["exact"], strict=True))
    hnsw, exact = latency_summary(timings["hnsw"]), latency_summary(timings["exact"])
    return {
        "references": size,
        "implants": len(centres),
        "index_build_s": round(build_seconds, 1),
        "hnsw": hnsw,
        "exact": exact,
        f"recall_at_{k}": round(hits / (queries * k), 4),
        "exact_over_hnsw_p50": round(exact["p50_ms"] / hnsw["p50_ms"], 1),
    }
