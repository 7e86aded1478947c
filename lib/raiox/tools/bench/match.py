"""`raiox bench match`: top-3 latency and recall@3 of matching (one model, up to a million references; or two
models in one table, one HNSW graph for both against one per model), with an exact answer as the baseline."""

from __future__ import annotations

import logging
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from psycopg import sql
from psycopg.conninfo import make_conninfo

from raiox import migrations
from raiox.database import Connection, Database, connect, embedded_database_url, stop_embedded_database
from raiox.embed.matching import find_candidates
from raiox.repository import catalog
from raiox.repository import migrations as migration_sql
from raiox.tools.bench.common import latency_summary

EXACT = 2**31 - 1  # candidates: every row
MAIN, RETRAINED = "bench-main", "bench-retrained"
# The layout before migration 0005: one graph over every model's rows (0002's definition).
SHARED_INDEX = "reference_images_embedding_hnsw"
SHARED_INDEX_SQL = (f"CREATE INDEX {SHARED_INDEX} ON reference_images USING hnsw (embedding vector_cosine_ops) "
                    "WITH (m = 32, ef_construction = 128)")
RETRAIN_SHIFT = 0.3  # how far a retrained model moves an implant's centre (cosine about 0.96 to the main one)
_CHUNK = 2_000  # implants generated, loaded and scored at a time: a million references never sit in memory


def _unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)).astype(np.float32)


def synthetic_centres(implants: int, rng: np.random.Generator, structured: bool = True) -> np.ndarray:
    """One centre per implant system. structured: like real image embeddings, everything shares one "dental
    X-ray" direction and systems of a manufacturer sit near each other. Unstructured: uniform on the sphere,
    the worst case for HNSW (every other implant is about equally far)."""
    if not structured:
        return _unit(rng.normal(size=(implants, 512)))
    common = _unit(rng.normal(size=512))
    makers = _unit(common + 0.8 * _unit(rng.normal(size=(max(1, implants // 20), 512))))
    return _unit(makers[rng.integers(0, len(makers), implants)] + 0.5 * _unit(rng.normal(size=(implants, 512))))


def retrained_centres(centres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same implants seen by a retrained model: every centre moved a little, so in one graph both
    models' rows interleave (the hard case for a shared index)."""
    return _unit(centres + RETRAIN_SHIFT * _unit(rng.normal(size=centres.shape)))


@dataclass
class BenchModel:
    """One model's references in the scratch table, its queries and their exact top-k (implant numbers)."""

    model_id: str
    centres: np.ndarray
    probes: np.ndarray
    truth: list[set[int]]


def _load_model(conn: Connection, model_id: str, centres: np.ndarray, *, first_id: int, per_implant: int,
                queries: int, k: int, rng: np.random.Generator) -> BenchModel:
    """COPY `per_implant` references around each centre (implant `first_id + number`) and score them against
    the model's queries as they go: the exact answer without a second pass over the table."""
    # A query is a new film of a catalogued implant: its centre plus more noise than the references.
    targets = rng.integers(0, len(centres), size=queries)
    probes = _unit(centres[targets] + rng.normal(scale=0.4 / np.sqrt(512), size=(queries, 512)))
    scores = np.empty((len(centres), queries), dtype=np.float32)  # each implant's similarity to each query
    with conn.cursor().copy("COPY reference_images (implant_id, storage_key, sha256, model_id, embedding) "
                            "FROM STDIN WITH (FORMAT BINARY)") as copy:
        copy.set_types(["bigint", "text", "text", "text", "vector"])
        for start in range(0, len(centres), _CHUNK):
            chunk = centres[start:start + _CHUNK]
            noise = rng.normal(scale=0.3 / np.sqrt(512), size=(len(chunk), per_implant, 512)).astype(np.float32)
            refs = _unit(chunk[:, None, :] + noise)
            ranked = np.sort((refs.reshape(-1, 512) @ probes.T).reshape(len(chunk), per_implant, queries), axis=1)
            second = ranked[:, -2] if per_implant > 1 else ranked[:, -1]
            scores[start:start + len(chunk)] = catalog.system_similarity(ranked[:, -1], second)
            for offset, implant_refs in enumerate(refs):
                number = start + offset
                for ref_number, ref in enumerate(implant_refs):
                    sha = f"{number:032x}{ref_number:032x}"
                    copy.write_row((first_id + number, f"references/{sha[:2]}/{sha}.png", sha, model_id, ref))
    truth = []
    for column in scores.T:
        top = np.argpartition(-column, k)[:k + 1] if len(column) > k + 1 else np.arange(len(column))
        ordered = sorted(top.tolist(), key=lambda number: (-column[number], number))[:k]
        truth.append({first_id + number for number in ordered})
    return BenchModel(model_id, centres, probes, truth)


class _FallbackCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "falling back" in record.getMessage()


def _measure(db: Database, model: BenchModel, *, k: int, ef_search: int) -> dict[str, Any]:
    """Production matching (`find_candidates`: the model's HNSW scan, exact fallback when it covers fewer
    than k implants) over every query: p50/p99, recall@k against the exact answer, fallbacks."""
    matching_log = logging.getLogger("raiox.embed.matching")
    counter = _FallbackCounter()
    level = matching_log.level
    matching_log.addHandler(counter)
    matching_log.setLevel(logging.INFO)
    timings, hits = [], 0
    try:
        with db.transaction() as conn:
            for probe in model.probes[:20]:  # warm the pages and the plan
                find_candidates(conn, probe, model.model_id, k=k, ef_search=ef_search)
            counter.count = 0
            for probe, truth in zip(model.probes, model.truth, strict=True):
                start = time.perf_counter()
                found = find_candidates(conn, probe, model.model_id, k=k, ef_search=ef_search)
                timings.append(time.perf_counter() - start)
                hits += len({c.implant_id for c in found} & truth)
    finally:
        matching_log.removeHandler(counter)
        matching_log.setLevel(level)
    return {**latency_summary(timings), f"recall_at_{k}": round(hits / (len(model.truth) * k), 4),
            "exact_fallbacks": counter.count}


def _measure_exact(db: Database, model: BenchModel, *, k: int, count: int) -> dict[str, Any]:
    """The same statement forced to an exact scan, over the first `count` queries (the baseline; at a
    million references each takes seconds), and whether it agrees with the exact answer computed here."""
    timings, agree = [], 0
    with db.transaction() as conn:
        conn.execute("SELECT set_config('enable_indexscan', 'off', true)")
        for probe in model.probes[:3]:
            catalog.top_implants(conn, probe, model.model_id, k=k, candidates=EXACT)
        for probe, truth in zip(model.probes[:count], model.truth[:count], strict=True):
            start = time.perf_counter()
            rows = catalog.top_implants(conn, probe, model.model_id, k=k, candidates=EXACT)
            timings.append(time.perf_counter() - start)
            agree += {row.implant_id for row in rows} == truth
    return {**latency_summary(timings), "queries": count, "agrees_with_numpy": round(agree / count, 4)}


def _build(url: str, statement: Any, *, build_memory: str, workers: int) -> float:
    start = time.perf_counter()
    with connect(url, autocommit=True) as conn:
        conn.execute("SELECT set_config('maintenance_work_mem', %s, false)", (build_memory,))
        conn.execute("SELECT set_config('max_parallel_maintenance_workers', %s, false)", (str(workers),))
        statement(conn)
        conn.execute("ANALYZE reference_images")
    return time.perf_counter() - start


def _build_model_index(url: str, model_id: str, **options: Any) -> float:
    def build(conn: Connection) -> None:
        if catalog.ensure_model_index(conn, model_id) != "ready":
            raise RuntimeError(f"the index of {model_id} was not built")

    return _build(url, build, **options)


def _megabytes(db: Database, relation: str) -> float:
    with db.transaction() as conn:
        return round(catalog.relation_bytes(conn, relation) / 2**20, 1)


def _scratch_database(admin_url: str, name: str) -> str:
    with connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(admin_url, dbname=name)
    migrations.migrate(url)
    return url


def bench_match(sizes: tuple[int, ...] = (10_000, 100_000), *, queries: int = 200, k: int = 3,
                ef_search: int = 64, per_implant: int = 10, structured: bool = True, seed: int = 0,
                two_models: bool = False, minority: float = 0.1, exact_queries: int = 50,
                build_memory: str = "1GB", workers: int = 2, shared_buffers: str | None = None,
                more_ef_search: tuple[int, ...] = ()) -> dict[str, Any]:
    """On a scratch embedded database: per size, either one model (matching vs exact scan, index build time
    and size; also at each of `more_ef_search`) or two models sharing the table, `minority` of the
    references under a retrained one, with one HNSW graph for both (the layout before 0005, the baseline)
    and with one index per model."""
    rng = np.random.default_rng(seed)
    options = {"build_memory": build_memory, "workers": workers}
    with tempfile.TemporaryDirectory(prefix="raiox-bench-") as scratch:
        pgdata = Path(scratch) / "pg"
        admin_url = _start(pgdata, shared_buffers)
        try:
            if two_models:
                results = [_bench_two_models(admin_url, size, queries=queries, k=k, ef_search=ef_search,
                                             per_implant=per_implant, structured=structured, minority=minority,
                                             rng=rng, **options) for size in sizes]
            else:
                results = [_bench_one_model(admin_url, size, queries=queries, k=k, ef_search=ef_search,
                                            per_implant=per_implant, structured=structured,
                                            exact_queries=exact_queries, rng=rng, more_ef_search=more_ef_search,
                                            **options) for size in sizes]
            with connect(admin_url) as conn:
                server = {name: migration_sql.server_setting(conn, name)
                          for name in ("server_version", "shared_buffers")}
        finally:
            stop_embedded_database(pgdata)
    return {"benchmark": "match", "scenario": "two_models" if two_models else "one_model",
            "data": "structured" if structured else "uniform", "k": k, "ef_search": ef_search, "queries": queries,
            "references_per_implant": per_implant, "build_memory": build_memory, "build_workers": workers,
            "results": results, "server": server,
            "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()}}


def _start(pgdata: Path, shared_buffers: str | None) -> str:
    url = embedded_database_url(pgdata)
    if shared_buffers:  # takes a restart
        with connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER SYSTEM SET shared_buffers = {}").format(sql.Literal(shared_buffers)))
        stop_embedded_database(pgdata)
        url = embedded_database_url(pgdata)
    return url


def _bench_one_model(admin_url: str, size: int, *, queries: int, k: int, ef_search: int, per_implant: int,
                     structured: bool, exact_queries: int, rng: np.random.Generator,
                     more_ef_search: tuple[int, ...] = (), **options: Any) -> dict[str, Any]:
    url = _scratch_database(admin_url, f"bench_{size}")
    with Database(url, max_size=1) as db:
        start = time.perf_counter()
        with db.transaction() as conn:
            first_id = catalog.add_numbered_implants(conn, size // per_implant)
            model = _load_model(conn, MAIN, synthetic_centres(size // per_implant, rng, structured),
                                first_id=first_id, per_implant=per_implant, queries=queries, k=k, rng=rng)
        load_seconds = time.perf_counter() - start
        build_seconds = _build_model_index(url, MAIN, **options)
        # Each mode runs over all probes in turn: interleaving would let every exact scan (the whole table
        # through shared buffers) evict the index pages the next HNSW query needs.
        exact = _measure_exact(db, model, k=k, count=min(exact_queries, queries))
        sweep = [{"ef_search": ef, **_measure(db, model, k=k, ef_search=ef)} for ef in (ef_search, *more_ef_search)]
        matching = sweep[0]
        index_mb = _megabytes(db, catalog.model_index_name(MAIN))
        table_mb = _megabytes(db, "reference_images")
    return {
        "references": size,
        "implants": len(model.centres),
        "load_s": round(load_seconds, 1),
        "index_build_s": round(build_seconds, 1),
        "index_mb": index_mb,
        "table_mb": table_mb,
        "hnsw": {key: matching[key] for key in ("p50_ms", "p99_ms")},
        f"recall_at_{k}": matching[f"recall_at_{k}"],
        "exact_fallbacks": matching["exact_fallbacks"],
        "exact": exact,
        "exact_over_hnsw_p50": round(exact["p50_ms"] / matching["p50_ms"], 1),
        "ef_search_sweep": sweep,  # the same index and queries at every ef_search asked for
    }


def _bench_two_models(admin_url: str, size: int, *, queries: int, k: int, ef_search: int, per_implant: int,
                      structured: bool, minority: float, rng: np.random.Generator, **options: Any) -> dict[str, Any]:
    url = _scratch_database(admin_url, f"bench_two_{size}")
    main_refs = round(size * (1 - minority))
    implants = main_refs // per_implant
    retrained_implants = round(size * minority) // per_implant
    with Database(url, max_size=1) as db:
        with db.transaction() as conn:
            first_id = catalog.add_numbered_implants(conn, implants)
            centres = synthetic_centres(implants, rng, structured)
            models = [_load_model(conn, MAIN, centres, first_id=first_id, per_implant=per_implant,
                                  queries=queries, k=k, rng=rng),
                      # The retrained model's references so far: the first implants' (a re-embed under way).
                      _load_model(conn, RETRAINED, retrained_centres(centres[:retrained_implants], rng),
                                  first_id=first_id, per_implant=per_implant, queries=queries, k=k, rng=rng)]
        layouts: dict[str, Any] = {}
        build = _build(url, lambda conn: conn.execute(SHARED_INDEX_SQL), **options)
        layouts["shared"] = {"index_build_s": round(build, 1), "index_mb": _megabytes(db, SHARED_INDEX),
                             **{m.model_id: _measure(db, m, k=k, ef_search=ef_search) for m in models}}
        with connect(url, autocommit=True) as conn:
            conn.execute(f"DROP INDEX {SHARED_INDEX}")
        builds = [_build_model_index(url, m.model_id, **options) for m in models]
        layouts["per_model"] = {
            "index_build_s": round(sum(builds), 1),
            "index_mb": round(sum(_megabytes(db, catalog.model_index_name(m.model_id)) for m in models), 1),
            **{m.model_id: _measure(db, m, k=k, ef_search=ef_search) for m in models}}
    return {"references": size, "minority": minority,
            "models": {m.model_id: {"references": len(m.centres) * per_implant, "implants": len(m.centres)}
                       for m in models},
            "layouts": layouts}
