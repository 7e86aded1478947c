"""`raiox bench pipeline`: webhook-to-ready time through `raiox dev` + `raiox worker`, against the webhook ack
alone; embed cold start (a fresh `raiox match`) against a warm match in one process."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from typing import Any

import requests
from pydantic import SecretStr

from raiox import migrations
from raiox.adapters.encoder import random_checkpoint
from raiox.database import database_url, stop_embedded_database
from raiox.embed.matching import match_image
from raiox.repository import cases
from raiox.services import Services
from raiox.tools.bench.common import latency_summary, machine, synthetic_film
from raiox.tools.catalog import ReferenceSystem, import_manifest, write_catalog
from raiox.tools.local import BASE_PATH, environment_of, isolated_settings, scratch_home
from raiox.tools.processes import start_dev, start_worker
from raiox.tools.simulator import jotform_fields, multipart, serve_files, with_token
from raiox.tools.waiting import wait_until


def bench_pipeline(*, submissions: int = 20, warmup: int = 2, model: str = "raiox-tiny-vit",
                   pretrained: str | None = None, cold_runs: int = 3, warm_runs: int = 10) -> dict[str, Any]:
    """Webhook-to-`ready` time through `raiox dev` (its webhook pokes its embed) plus a `raiox worker`, one
    submission at a time, against the webhook ack alone (the baseline); and embed cold start: a fresh
    `raiox match IMAGE --json` process against a warm in-process match. Throw-away embedded database."""
    home = scratch_home("raiox-bench-pipeline-")
    checkpoint = pretrained or str(random_checkpoint(model, home / "random-weights.pt"))
    settings = isolated_settings(home, raiox_clip_model=model, raiox_clip_pretrained=checkpoint)
    url = database_url(settings)
    migrations.migrate(url)
    # The child processes share this process's embedded server.
    settings = settings.model_copy(update={"database_url": SecretStr(url)})
    env = environment_of(settings)
    token = env["WEBHOOK_TOKEN"]
    films = [synthetic_film(seed) for seed in range(warmup + submissions)]
    ack: list[float] = []
    ready: list[float] = []
    with Services(settings) as services:
        import_manifest(services, write_catalog(home / "refs", [
            ReferenceSystem("Bench", f"S{seed}", [synthetic_film(1000 + seed, (512, 640))]) for seed in range(5)]),
            progress=False)
        base, dev = start_dev(env, home / "dev.log", cwd=home)
        worker = start_worker(env, home / "worker.log", cwd=home)
        try:
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

                    wait_until(is_ready, 60, f"case {case_id} to be ready", interval=0.005)
                    if n >= warmup:  # the first ones load the dev server's encoder
                        ack.append(acked - started)
                        ready.append(time.perf_counter() - started)
        finally:
            worker.stop()
            dev.stop()

        image = home / "film.jpg"
        image.write_bytes(films[0])
        cold: list[float] = []
        for _ in range(cold_runs):
            started = time.perf_counter()
            run = subprocess.run([sys.executable, "-m", "raiox.tools.cli", "match", str(image), "--json"], env=env,
                                 cwd=home, capture_output=True, text=True, timeout=300)
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
