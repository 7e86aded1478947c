"""`raiox bench intake`: peak memory of intake under a mix of decompression bombs and good films, and how fast the
same process answers `GET …/health` meanwhile.

Each scenario runs in a fresh interpreter (so its peak resident memory is its own): a throw-away Raiox (embedded
database, local objects, dev mode), the one-port dev app on loopback, every film of the mix submitted by URL
through the webhook, then the fetch step run as production runs it (a batch of submissions, eight downloads at
once) while a thread asks `/health` every 100 ms.

- `isolated`: the default: header limits, then decoding in child processes under a memory and time limit;
- `in_process`: header limits, decoding in the process itself (RAIOX_DECODE_ISOLATION=false);
- `unguarded` (the baseline): decoding in the process with the header limits lifted: what the decoders ask for
  when nothing refuses a film first (before this bench's change Raiox did this, with float64 copies on top).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import requests

from raiox.tools.bench import bombs
from raiox.tools.bench.common import synthetic_film

MIB = 1024 * 1024
SCENARIOS: dict[str, dict[str, Any]] = {
    "isolated": {},
    "in_process": {"raiox_decode_isolation": False},
    "unguarded": {"raiox_decode_isolation": False, "raiox_max_decoded_mb": 1 << 20, "raiox_max_image_pixels": 1 << 40},
}


def bomb_mix(scale: int = 1) -> dict[str, bytes]:
    """Path → bytes: one bomb of each kind (`scale` doubles the inflating ones) and four good films."""
    mix = {
        "/uploads/deflated.dcm": bombs.deflated_dicom_bomb(1024 * scale),
        "/uploads/rle32.dcm": bombs.rle_dicom_bomb(),
        "/uploads/rle-segment.dcm": bombs.rle_segment_bomb(1024 * scale),
        "/uploads/bomb.png": bombs.png_bomb(),
        "/uploads/progressive.jpg": bombs.progressive_jpeg_bomb(),
    }
    mix.update({f"/uploads/film-{n}.jpg": synthetic_film(n) for n in range(4)})
    return mix


def _rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)  # Linux: kilobytes


def _latency(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"count": 0}
    return {"count": len(samples), "p50_ms": round(statistics.median(samples) * 1000, 1),
            "max_ms": round(max(samples) * 1000, 1)}


def run_scenario(scenario: str, scale: int = 1) -> dict[str, Any]:
    """One scenario in this process (`python -m raiox.tools.bench.intake <scenario>` runs it in a fresh one)."""
    from raiox import migrations
    from raiox.database import database_url
    from raiox.intake.worker import run_fetch_jobs
    from raiox.repository import images
    from raiox.services import Services
    from raiox.tools.devserver import start_dev_server
    from raiox.tools.local import BASE_PATH, free_port, isolated_settings, scratch_home
    from raiox.tools.simulator import serve_files

    logging.basicConfig(level=logging.ERROR)
    mix = bomb_mix(scale)
    settings = isolated_settings(scratch_home("raiox-bench-intake-"), fetch_max_bytes=64 * MIB,
                                 fetch_timeout_seconds=600, fetch_deadline_seconds=600, fetch_jobs_per_call=16,
                                 **SCENARIOS[scenario])
    migrations.migrate(database_url(settings))
    port = free_port()
    base = f"http://127.0.0.1:{port}{BASE_PATH}/webhook"
    token = settings.webhook_token.get_secret_value() if settings.webhook_token else ""
    with Services(settings) as services, serve_files(mix) as files:
        server = start_dev_server(services, "127.0.0.1", port)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            session = requests.Session()
            for path in mix:
                answer = session.post(base, params={"token": token}, json={"image_url": f"{files}{path}"}, timeout=60)
                answer.raise_for_status()
            idle: list[float] = []
            busy: list[float] = []
            stop = threading.Event()

            def ask_health(into: list[float]) -> None:
                while not stop.is_set():
                    started = time.perf_counter()
                    requests.get(f"{base}/health", timeout=120).raise_for_status()
                    into.append(time.perf_counter() - started)
                    stop.wait(0.1)

            poller = threading.Thread(target=ask_health, args=(idle,), daemon=True)
            poller.start()
            time.sleep(2)
            stop.set()
            poller.join()
            stop.clear()
            before = _rss_mib()
            poller = threading.Thread(target=ask_health, args=(busy,), daemon=True)
            poller.start()
            started = time.perf_counter()
            report = run_fetch_jobs(services)
            elapsed = time.perf_counter() - started
            stop.set()
            poller.join()
            with services.db.transaction() as conn:
                outcomes = images.fetch_outcomes(conn)
        finally:
            server.shutdown()
    return {
        "scenario": scenario,
        "films": {film.source_url.rsplit("/", 1)[-1]: (film.status if film.status != "failed"
                                                        else f"failed: {film.error}") for film in outcomes},
        "fetch_seconds": round(elapsed, 1), "claimed": report.claimed,
        "peak_rss_before_fetch_mib": before, "peak_rss_mib": _rss_mib(),
        "children_peak_rss_mib": _rss_mib(resource.RUSAGE_CHILDREN),
        "health_idle": _latency(idle), "health_during_fetch": _latency(busy),
    }


def bench_intake(*, scenarios: list[str], scale: int = 1, timeout: float = 1800) -> dict[str, Any]:
    """Each scenario in its own interpreter; their reports side by side (`unguarded` is the baseline)."""
    results = []
    for scenario in scenarios:
        done = subprocess.run([sys.executable, "-m", "raiox.tools.bench.intake", scenario, str(scale)],
                              capture_output=True, text=True, timeout=timeout, env=dict(os.environ))
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            results.append({"scenario": scenario, "error": f"exit status {done.returncode}",
                            "stderr_tail": done.stderr[-2000:]})
            continue
        results.append(json.loads(lines[-1]))
    mix = {path.rsplit("/", 1)[-1]: len(data) for path, data in bomb_mix(scale).items()}
    return {"bench": "intake", "mix_bytes": mix, "cpu_count": os.cpu_count(), "results": results}


if __name__ == "__main__":
    print(json.dumps(run_scenario(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1)))
