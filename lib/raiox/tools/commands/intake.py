"""Intake tools: `raiox simulate-webhook` (a Jotform-shaped POST, X-rays served locally) and `raiox bench webhook`."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
import requests

import raiox
from raiox.tools.bench import latency_summary, synthetic_film
from raiox.tools.devserver import QuietRequestHandler
from raiox.tools.simulator import (
    isolated_environment,
    jotform_fields,
    multipart,
    new_submission_id,
    serve_files,
    with_token,
)

WEBHOOK_SOURCE = Path(raiox.__file__).resolve().parents[2] / "functions" / "webhook" / "webhook_http.py"


# simulate-webhook -----------------------------------------------------------------------------------


@click.command("simulate-webhook")
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--url", required=True, help="The webhook, e.g. http://127.0.0.1:8080/webhook (no token in it).")
@click.option("--submission-id", default=None, help="Jotform submission id; default: a new random one.")
@click.option("--form-id", default="251234567890123", show_default=True, help="Jotform form id.")
@click.option("--token", envvar="WEBHOOK_TOKEN", default=None, help="Webhook token (default: $WEBHOOK_TOKEN).")
def simulate_webhook(images: tuple[Path, ...], url: str, submission_id: str | None, form_id: str,
                     token: str | None) -> None:
    """POST a Jotform-shaped webhook for IMAGE…, serving the files from a local HTTP server meanwhile.

    The webhook must accept loopback http URLs (RAIOX_ENV=dev)."""
    submission_id = submission_id or new_submission_id()
    paths = {f"/uploads/simulator/{form_id}/{submission_id}/{quote(image.name)}": image.read_bytes()
             for image in images}
    with serve_files(paths) as base:
        fields = jotform_fields(form_id=form_id, submission_id=submission_id,
                                upload_urls=[base + path for path in paths], webhook_url=url)
        body, content_type = multipart(fields)
        try:
            response = requests.post(with_token(url, token), data=body, headers={"Content-Type": content_type},
                                     timeout=120)
        except requests.RequestException as exc:
            raise click.ClickException(f"cannot reach the webhook: {type(exc).__name__}") from None
    click.echo(f"submission {submission_id}: HTTP {response.status_code}")
    click.echo(response.text)
    if response.status_code >= 400:
        raise SystemExit(1)


# bench webhook --------------------------------------------------------------------------------------


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


def _measure(send: Any, payloads: list[Any], concurrency: int) -> dict[str, Any]:
    local = threading.local()

    def one(payload: Any) -> tuple[float, int]:
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


@click.command("webhook")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line.")
@click.option("--requests", "count", default=100, show_default=True, type=click.IntRange(1),
              help="Requests per scenario and concurrency.")
def bench_webhook(as_json: bool, count: int) -> None:
    """Ack latency of the webhook (functions-framework on loopback, embedded database, local objects).

    Scenarios: `refused` (wrong token: the HTTP stack alone, the baseline), `new` (download, decode, store,
    one transaction) and `duplicate` (the repeat fast path), each with 1 and 16 concurrent clients."""
    import functions_framework
    from werkzeug.serving import make_server

    from raiox import migrations
    from raiox.database import database_url
    from raiox.services import reset_services
    from raiox.settings import get_settings

    if not WEBHOOK_SOURCE.is_file():
        raise click.ClickException(f"{WEBHOOK_SOURCE} not found: run from a checkout of the repository")
    isolated_environment("raiox-bench-")
    reset_services()
    logging.getLogger("raiox").setLevel(logging.ERROR)  # the `refused` scenario would log 2 × N warnings
    settings = get_settings()
    migrations.migrate(database_url(settings))
    app = functions_framework.create_app(target="webhook", source=str(WEBHOOK_SOURCE))
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    token = settings.webhook_token.get_secret_value() if settings.webhook_token else None
    base_url = f"http://127.0.0.1:{server.server_port}/"
    form_id = "251234567890123"
    results: list[dict[str, Any]] = []
    xray = synthetic_film(0)
    try:
        with serve_files(_XrayVariants(xray)) as files:

            def send(session: requests.Session, payload: tuple[str, bytes, str]) -> int:
                url, body, content_type = payload
                return session.post(url, data=body, headers={"Content-Type": content_type}, timeout=60).status_code

            def payloads(ids: list[str], url: str) -> list[tuple[str, bytes, str]]:
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
        reset_services()
    report = {"bench": "webhook", "server": "functions-framework (werkzeug, threaded) on loopback",
              "database_pool_max": settings.database_pool_max, "image_bytes": len(xray),
              "results": results}
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(f"{'scenario':<10} {'clients':>7} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>7}  statuses")
    for row in results:
        click.echo(f"{row['scenario']:<10} {row['concurrency']:>7} {row['requests']:>8} {row['p50_ms']:>8} "
                   f"{row['p99_ms']:>8} {row['throughput_rps']:>7}  {row['statuses']}")
