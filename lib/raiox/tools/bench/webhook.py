"""`raiox bench webhook`: ack latency of the webhook with 1 and 16 clients; a refused request is the baseline."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from werkzeug.serving import make_server

from raiox import migrations
from raiox.database import database_url
from raiox.services import Services
from raiox.tools.bench.common import latency_summary, synthetic_film
from raiox.tools.devserver import QuietRequestHandler, create_dev_app
from raiox.tools.local import BASE_PATH, isolated_settings, scratch_home
from raiox.tools.simulator import jotform_fields, multipart, new_submission_id, serve_files, with_token

Payload = tuple[str, bytes, str]  # url, body, content type


class _XrayVariants(Mapping[str, bytes]):
    """Every path answers the sample X-ray with the path appended after its end marker: still a valid JPEG,
    but different bytes per submission, so each new case really writes its object."""

    def __init__(self, xray: bytes) -> None:
        self.xray = xray

    def __getitem__(self, path: str) -> bytes:
        return self.xray + path.encode()

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _measure(send: Callable[[requests.Session, Payload], int], payloads: list[Payload],
             concurrency: int) -> dict[str, Any]:
    local = threading.local()

    def one(payload: Payload) -> tuple[float, int]:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        started = time.perf_counter()
        status = send(local.session, payload)
        return time.perf_counter() - started, status

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(one, payloads))
    elapsed = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "statuses": dict(sorted(Counter(str(status) for _, status in results).items())),
        **latency_summary([seconds for seconds, _ in results]),
        "throughput_rps": round(len(results) / elapsed, 1),
    }


def bench_webhook(*, count: int = 100) -> dict[str, Any]:
    """Scenarios `refused` (wrong token: the HTTP stack alone, the baseline), `new` and `duplicate` (the repeat
    fast path), each with 1 and 16 concurrent clients, against the webhook handler on loopback with a
    throw-away embedded database and local objects."""
    settings = isolated_settings(scratch_home("raiox-bench-"))
    logging.getLogger("raiox").setLevel(logging.ERROR)  # the `refused` scenario would log 2 × N warnings
    migrations.migrate(database_url(settings))
    token = settings.webhook_token.get_secret_value() if settings.webhook_token else None
    form_id = "251234567890123"
    results: list[dict[str, Any]] = []
    xray = synthetic_film(0)
    with Services(settings) as services:
        server = make_server("127.0.0.1", 0, create_dev_app(services), threaded=True,
                             request_handler=QuietRequestHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base_url = f"http://127.0.0.1:{server.server_port}{BASE_PATH}/webhook"
        try:
            with serve_files(_XrayVariants(xray)) as files:

                def send(session: requests.Session, payload: Payload) -> int:
                    url, body, content_type = payload
                    return session.post(url, data=body, headers={"Content-Type": content_type},
                                        timeout=60).status_code

                def payloads(ids: list[str], url: str) -> list[Payload]:
                    bodies = [multipart(jotform_fields(form_id=form_id, submission_id=i,
                                                       upload_urls=[f"{files}/uploads/bench/{i}.jpg"]))
                              for i in ids]
                    return [(url, body, content_type) for body, content_type in bodies]

                _measure(send, payloads([new_submission_id() for _ in range(5)], with_token(base_url, token)), 1)
                for concurrency in (1, 16):
                    ids = [new_submission_id() for _ in range(count)]
                    scenarios = {
                        "refused": payloads(ids, with_token(base_url, "wrong-token")),
                        "new": payloads(ids, with_token(base_url, token)),
                        "duplicate": payloads(ids, with_token(base_url, token)),
                    }
                    for scenario, batch in scenarios.items():
                        results.append({"scenario": scenario, **_measure(send, batch, concurrency)})
        finally:
            server.shutdown()
    return {"bench": "webhook", "server": "the webhook handler behind werkzeug (threaded) on loopback",
            "database_pool_max": settings.database_pool_max, "image_bytes": len(xray), "results": results}
