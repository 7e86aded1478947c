"""Commands for running Raiox on one machine: the one-port dev server, the demo, a batch test of a folder."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from pathlib import Path

import click
from werkzeug.serving import BaseWSGIServer

from raiox import migrations
from raiox.database import database_url, stop_embedded_database
from raiox.errors import RaioxError
from raiox.repository import catalog
from raiox.review.accounts import ensure_local_reviewer
from raiox.services import Services
from raiox.settings import Settings
from raiox.tools.commands.common import HTTP_URL, PORT, loaded_encoder, pass_services, pass_settings, require_references
from raiox.tools.demo import demo_defaults, seed_demo
from raiox.tools.devserver import FUNCTIONS, attach, start_dev_server
from raiox.tools.local import BASE_PATH, free_port, one_port, scratch_home
from raiox.tools.simulator import JotformApiStandIn


@click.command("dev")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=PORT, help="0 picks a free port.")
@click.option("--local-reviewer", is_flag=True,
              help="Create (or reset) `local-reviewer` even though DATABASE_URL names a database of its own.")
@click.option("--demo", is_flag=True, help="Start with the demo catalog and a few sample cases ready for review, "
              "and a local stand-in for Jotform's API, so review and delivery can be clicked through at once.")
@pass_settings
def dev_command(settings: Settings, host: str, port: int, local_reviewer: bool, demo: bool) -> None:
    """Serve every function, the admin page and local objects on one port (embedded defaults).

    Each function answers at its DigitalOcean-like path /api/v1/web/raiox/<function>[/…] through the same
    adapter as in production, the admin page at /admin/, signed local-object URLs at /objects/. Unless set:
    RAIOX_ENV=dev, and RAIOX_PUBLIC_URL, EMBED_URL and NOTIFY_URL point at this server. The database is migrated first;
    in dev mode a sign-in for the admin page is printed (reviewer `local-reviewer`, a new password on every
    start). The access log leaves out query strings (they carry tokens). SIGINT (Ctrl-C) and SIGTERM stop it,
    and the embedded PostgreSQL with it; one an earlier run left running is reused, never started twice."""
    stop_on_signals()
    port = port or free_port(host)
    try:
        _run_dev(settings, host, port, local_reviewer=local_reviewer, demo=demo)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM, while starting or serving: everything is stopped by now
        click.echo("stopped")


def _run_dev(settings: Settings, host: str, port: int, *, local_reviewer: bool, demo: bool) -> None:
    with contextlib.ExitStack() as stack:
        # Bound first: a taken port is refused (werkzeug says so and exits) before anything starts.
        server = start_dev_server(None, host, port)
        stack.callback(server.server_close)
        if settings.database_url is None:  # stopped after everything that uses it (the stack unwinds backwards)
            stack.callback(stop_embedded_database, settings.raiox_home / "pg")
        if demo:
            jotform = stack.enter_context(JotformApiStandIn())
            settings = demo_defaults(settings, jotform.url)
        services = stack.enter_context(Services(one_port(settings, host, port)))
        serving = threading.Thread(target=server.serve_forever, name="raiox-dev-server", daemon=True)
        serving.start()  # answers 503 until the app is attached
        stack.callback(server.shutdown)
        _serve(server, serving, services, host, port, local_reviewer=local_reviewer, demo=demo)


def stop_on_signals() -> None:
    """SIGTERM (a service manager, `kill`) and SIGINT end the process as Ctrl-C does, so its `finally` blocks run
    and the embedded PostgreSQL it started is stopped. Python's default would end it on the spot at SIGTERM, and
    would leave SIGINT ignored when the process was started so (a script's background job, some CI runners)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)


def _serve(server: BaseWSGIServer, serving: threading.Thread, services: Services, host: str, port: int, *,
           local_reviewer: bool, demo: bool) -> None:
    settings = services.settings
    try:
        services.refuse_placeholder_secrets()
    except RaioxError as exc:
        raise click.ClickException(exc.message) from None
    migrations.migrate(database_url(services.settings))
    attach(server, services)
    base = f"http://{host}:{port}"
    click.echo(f"Raiox dev server on {base} (RAIOX_ENV={services.settings.raiox_env})")
    click.echo(f"  admin page   {base}/admin/")
    if services.settings.is_dev and (settings.database_url is None or local_reviewer):
        reviewer, password = ensure_local_reviewer(services)
        click.echo(f"  sign in as   {reviewer} / {password}  (new password on every start)")
    elif services.settings.is_dev:
        click.echo("  reviewers    DATABASE_URL names a database of its own: no reviewer was created or changed "
                   "(raiox reviewer add NAME, or --local-reviewer)")
    for name in FUNCTIONS:
        click.echo(f"  {name:<12} {base}{BASE_PATH}/{name}")
    if demo:
        seed_demo(services, say=click.echo)
    elif not _has_references(services):
        click.echo("  catalog      empty: `raiox dev --demo` starts with a demo catalog and sample cases, or "
                   "`raiox catalog import MANIFEST`")
    click.echo("Ctrl-C stops it.")
    while serving.is_alive():
        serving.join(1.0)  # a signal interrupts the wait


@click.command("demo")
@click.option("--json", "as_json", is_flag=True, help="End with one JSON line: cases, ready, approved, notified, "
              "top1_accuracy, top3_accuracy, seconds.")
@click.option("--cases", "count", default=12, show_default=True, type=click.IntRange(1, 200))
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep the demo's database, objects and catalog here (default: a temporary folder).")
def demo_command(as_json: bool, count: int, home: Path | None) -> None:
    """The whole pipeline offline on embedded defaults: catalog, webhook, embed, review, notify."""
    from raiox.tools.demo import run_demo

    home = home.resolve() if home else scratch_home("raiox-demo-")
    click.echo(f"demo home: {home}")
    report = run_demo(home, count=count, say=click.echo)
    click.echo(f"\nencoder {report.model_id}")
    tops = [", ".join(f"{c['system']} ({c['similarity']:.3f})" for c in case.candidates[:3]) or case.status
            for case in report.cases]
    width = max(len("top-3 (similarity)"), *(len(top) for top in tops))
    approved = max(len("approved"), *(len(case.decision) for case in report.cases))
    click.echo(f"{'case':>5}  {'submitted system':<22} {'top-3 (similarity)':<{width}}  {'approved':<{approved}} "
               "notified")
    for case, top in zip(report.cases, tops, strict=True):
        click.echo(f"{case.case_id or '-':>5}  {case.truth:<22} {top:<{width}}  {case.decision or '-':<{approved}} "
                   f"{'yes' if case.delivered else 'no'}")
    summary = report.summary()
    click.echo(f"Jotform API stand-in received {report.jotform_writes} submission edit(s)")
    click.echo(json.dumps(summary) if as_json else ", ".join(f"{k}: {v}" for k, v in summary.items()))


@click.command("batch-test")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--url", type=HTTP_URL, default=None, help="Send each image through this webhook (Jotform-shaped), "
              "e.g. http://127.0.0.1:8080/api/v1/web/raiox/webhook under `raiox dev`; default: match directly against "
              "the catalog with the configured encoder, storing nothing.")
@click.option("--token", envvar="WEBHOOK_TOKEN", default=None, help="Webhook token (default: $WEBHOOK_TOKEN).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the full JSON report here as well.")
@pass_services
def batch_test_command(services: Services, folder: Path, url: str | None, token: str | None,
                       report_path: Path | None) -> None:
    """Every JPEG/PNG/TIFF/DICOM (.dcm) below FOLDER through matching or the webhook; the last line is a JSON summary.

    Sub-folders named after systems (`<system>/<film>`) make it report top-1 and top-3 accuracy."""
    from raiox.tools.batch import images_in, match_folder, report, send_folder

    if not any(True for _ in images_in(folder)):
        raise click.ClickException(f"no JPEG, PNG, TIFF or DICOM (.dcm) files below {folder}")
    if not url:
        require_references(services)
        loaded_encoder(services)
    items = send_folder(folder, url, token) if url else match_folder(services, folder)
    document = report(items)
    if report_path is not None:
        report_path.write_text(json.dumps(document, indent=1))
    for item in items:
        best = f"{item.top3[0]['system']} ({item.top3[0]['similarity']:.3f})" if item.top3 else item.detail
        click.echo(f"{item.status:<9} {item.seconds * 1000:7.0f} ms  {item.file}  {best}")
    click.echo(json.dumps(document["summary"]))


def _has_references(services: Services) -> bool:
    with services.db.transaction() as conn:
        return any(row.references for row in catalog.catalog_summary(conn))
