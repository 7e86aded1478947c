"""Benchmarks of the embed step, each with its baseline measured in the same run: encoding and matching."""

from __future__ import annotations

import io
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from psycopg.conninfo import make_conninfo

from raiox import migrations
from raiox.adapters.encoder import Encoder, random_checkpoint
from raiox.database import Database, connect, embedded_database_url, stop_embedded_database
from raiox.repository import catalog


def machine() -> dict[str, Any]:
    import torch

    return {
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
    }


def synthetic_film(seed: int, size: tuple[int, int] = (1024, 1280)) -> bytes:
    """A periapical-sized greyscale JPEG (dark noisy film, bright post); bytes to time, not to match."""
    rng = np.random.default_rng(seed)
    width, height = size
    film = rng.normal(70, 15, size=(height, width))
    left = int(rng.integers(width // 4, width // 2))
    film[height // 5: height * 4 // 5, left:left + width // 8] = 235
    out = io.BytesIO()
    Image.fromarray(np.clip(film, 0, 255).astype(np.uint8), mode="L").save(out, format="JPEG", quality=90)
    return out.getvalue()


def _rate(count: int, run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return count / (time.perf_counter() - start)


def bench_embed(encoder: Encoder, *, images: int = 64, single: int = 16,
                batch_sizes: tuple[int, ...] = (1, 8, 16, 32, 64)) -> dict[str, Any]:
    """Images/s one at a time (the source manual's way), through the batched pipeline, and model-only."""
    films = [synthetic_film(seed) for seed in range(images)]
    encoder.encode(films[: encoder.batch_size])  # warm-up: first-call allocations, thread pools
    one_at_a_time = _rate(single, lambda: [encoder.encode_one(f) for f in films[:single]])
    pipeline = _rate(images, lambda: encoder.encode(films))
    preprocess = _rate(images, lambda: [encoder.prepare(f) for f in films])

    import torch

    tensors = torch.from_numpy(np.stack([encoder.prepare(f) for f in films]))
    model_only = {}
    for size in batch_sizes:
        batches = [tensors[i:i + size] for i in range(0, len(tensors), size)]
        model_only[size] = _rate(len(tensors), lambda b=batches: [encoder.encode_tensors(x) for x in b])
    best_size = max(model_only, key=lambda s: model_only[s])
    return {
        "benchmark": "embed",
        "model_id": encoder.model_id,
        "device": encoder.device,
        "film_size": [1024, 1280],
        "film_kib": round(sum(len(f) for f in films) / len(films) / 1024),
        "images": images,
        "pipeline_batch_size": encoder.batch_size,
        "one_at_a_time_images_per_s": round(one_at_a_time, 2),
        "pipeline_images_per_s": round(pipeline, 2),
        "preprocess_only_images_per_s": round(preprocess, 2),
        "model_only_images_per_s": {str(k): round(v, 2) for k, v in model_only.items()},
        "model_only_best_batch_size": best_size,
        "pipeline_vs_model_only": round(pipeline / model_only[best_size], 3),
        "pipeline_vs_one_at_a_time": round(pipeline / one_at_a_time, 2),
        "machine": machine(),
    }


def _unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)).astype(np.float32)


def synthetic_catalog(count: int, per_implant: int, rng: np.random.Generator,
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
        index_sql = conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s",
                                 ("reference_images_embedding_hnsw",)).fetchone()["indexdef"]
        conn.execute("DROP INDEX reference_images_embedding_hnsw")
        conn.execute("INSERT INTO implants (manufacturer, system) "
                     "SELECT 'Bench', 'System ' || n FROM generate_series(1, %s) AS n", (len(references),))
        first_id = conn.execute("SELECT min(id) AS id FROM implants").fetchone()["id"]
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


def latency_summary(samples: list[float]) -> dict[str, float]:
    """p50 and p99 in milliseconds of durations in seconds."""
    ordered = sorted(samples)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 3),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3)}


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
        centres, references = synthetic_catalog(size, per_implant, rng, structured)
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


# Pipeline benchmarks (`raiox bench pipeline`): webhook-to-ready and embed cold start ---------------------


def _raiox_process(args: list[str], env: dict[str, str], log: Path) -> Any:
    import subprocess
    import sys

    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "raiox.tools.cli", *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _stop_process(process: Any) -> None:
    import signal
    import subprocess

    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(15)


def _wait(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.005)


def bench_pipeline(*, submissions: int = 20, warmup: int = 2, model: str = "raiox-tiny-vit",
                   pretrained: str | None = None, cold_runs: int = 3, warm_runs: int = 10) -> dict[str, Any]:
    """Webhook-to-`ready` time through `raiox dev` (its webhook pokes its embed) plus a `raiox worker`, one
    submission at a time, against the webhook ack alone (the baseline); and embed cold start: a fresh
    `raiox match IMAGE --json` process against a warm in-process match. Throw-away embedded database."""
    import json
    import socket
    import subprocess
    import sys

    import requests

    from raiox.database import database_url
    from raiox.embed.matching import match_image
    from raiox.repository import cases
    from raiox.services import get_services, reset_services
    from raiox.settings import get_settings
    from raiox.tools.catalog_import import import_manifest
    from raiox.tools.devserver import BASE_PATH
    from raiox.tools.simulator import isolated_environment, jotform_fields, multipart, serve_files, with_token

    home = isolated_environment("raiox-bench-pipeline-")
    checkpoint = pretrained or str(random_checkpoint(model, home / "random-weights.pt"))
    os.environ.update({"RAIOX_CLIP_MODEL": model, "RAIOX_CLIP_PRETRAINED": checkpoint})
    reset_services()
    settings = get_settings()
    url = database_url(settings)
    migrations.migrate(url)
    os.environ["DATABASE_URL"] = url  # the child processes share this process's embedded server
    reset_services()
    services = get_services()
    refs = home / "refs"
    refs.mkdir()
    for seed in range(5):
        (refs / f"{seed}.jpg").write_bytes(synthetic_film(1000 + seed, (512, 640)))
    (home / "catalog.csv").write_text("manufacturer,system,images\n" + "".join(
        f"Bench,S{seed},refs/{seed}.jpg\n" for seed in range(5)))
    import_manifest(services, home / "catalog.csv", progress=False)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ)
    token = env["WEBHOOK_TOKEN"]
    dev = _raiox_process(["dev", "--port", str(port)], env, home / "dev.log")
    worker = _raiox_process(["worker", "--poll", "0.2"], env, home / "worker.log")
    base = f"http://127.0.0.1:{port}"
    films = [synthetic_film(seed) for seed in range(warmup + submissions)]
    ack: list[float] = []
    ready: list[float] = []
    try:
        def up() -> bool:
            if dev.poll() is not None or worker.poll() is not None:
                raise RuntimeError(f"raiox dev or worker exited; see {home}")
            try:
                return requests.get(f"{base}{BASE_PATH}/embed/health", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        _wait(up, 120, "raiox dev")
        _wait(lambda: "worker " in (home / "worker.log").read_text(), 120, "raiox worker")
        files = {f"/uploads/bench/{n}.jpg": film for n, film in enumerate(films)}
        with serve_files(files) as file_base, requests.Session() as session:
            for n in range(len(films)):
                body, content_type = multipart(jotform_fields(
                    form_id="251234567890123", submission_id=str(8_000_000_000_000_000_000 + n),
                    upload_urls=[f"{file_base}/uploads/bench/{n}.jpg"]))
                started = time.perf_counter()
                answer = session.post(with_token(f"{base}{BASE_PATH}/webhook", token), data=body,
                                      headers={"Content-Type": content_type}, timeout=60)
                acked = time.perf_counter()
                if answer.status_code != 202:
                    raise RuntimeError(f"webhook answered {answer.status_code}: {answer.text}")
                case_id = answer.json()["case_id"]

                def is_ready(case_id: int = case_id) -> bool:
                    with services.db.transaction() as conn:
                        case = cases.get_case(conn, case_id)
                    return case is not None and case.status == "ready"

                _wait(is_ready, 60, f"case {case_id} to be ready")
                if n >= warmup:  # the first ones load the dev server's encoder
                    ack.append(acked - started)
                    ready.append(time.perf_counter() - started)
    finally:
        _stop_process(worker)
        _stop_process(dev)

    image = home / "film.jpg"
    image.write_bytes(films[0])
    cold: list[float] = []
    for _ in range(cold_runs):
        started = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "raiox.tools.cli", "match", str(image), "--json"], env=env,
                             capture_output=True, text=True, timeout=300)
        cold.append(time.perf_counter() - started)
        if run.returncode != 0 or not json.loads(run.stdout)["candidates"]:
            raise RuntimeError(f"raiox match failed: {run.stderr[-2000:]}")
    match_image(services, films[0])  # warm-up
    warm = []
    for _ in range(warm_runs):
        started = time.perf_counter()
        match_image(services, films[0])
        warm.append(time.perf_counter() - started)
    encoder = services.encoder
    reset_services()
    stop_embedded_database(home / "pg")
    ack_summary, ready_summary = latency_summary(ack), latency_summary(ready)
    cold_s, warm_ms = statistics.median(cold), latency_summary(warm)["p50_ms"]
    return {
        "benchmark": "pipeline",
        "model_id": encoder.model_id,
        "device": encoder.device,
        "film_size": [1024, 1280],
        "webhook_to_ready": {"submissions": len(ready), "server": "raiox dev + raiox worker --poll 0.2",
                             "ack": ack_summary, "ready": ready_summary,
                             "ready_over_ack_p50": round(ready_summary["p50_ms"] / ack_summary["p50_ms"], 1)},
        "cold_start": {"runs": cold_runs, "process_to_first_result_s": round(cold_s, 2),
                       "warm_match_p50_ms": warm_ms,
                       "cold_over_warm": round(cold_s * 1000 / warm_ms, 1)},
        "machine": machine(),
    }
