"""Commands for running Raiox on one machine: the one-port dev server, the demo, a batch test of a folder."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import click

from raiox import migrations
from raiox.database import database_url
from raiox.errors import RaioxError
from raiox.repository import catalog
from raiox.review.accounts import ensure_local_reviewer
from raiox.services import Services
from raiox.settings import Settings
from raiox.tools.commands.common import pass_services, pass_settings
from raiox.tools.demo import demo_defaults, seed_demo
from raiox.tools.devserver import FUNCTIONS, start_dev_server
from raiox.tools.local import BASE_PATH, free_port, one_port, scratch_home
from raiox.tools.simulator import JotformApiStandIn


@click.command("dev")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, help="0 picks a free port.")
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
    start). The access log leaves out query strings (they carry tokens)."""
    port = port or free_port(host)
    with contextlib.ExitStack() as stack:
        if demo:
            jotform = stack.enter_context(JotformApiStandIn())
            settings = demo_defaults(settings, jotform.url)
        _serve(Services(one_port(settings, host, port)), host, port, local_reviewer=local_reviewer, demo=demo)


def _serve(services: Services, host: str, port: int, *, local_reviewer: bool, demo: bool) -> None:
    settings = services.settings
    try:
        services.refuse_placeholder_secrets()
    except RaioxError as exc:
        raise click.ClickException(exc.message) from None
    migrations.migrate(database_url(services.settings))
    server = start_dev_server(services, host, port)
    base = f"http://{host}:{port}"
    click.echo(f"Raiox dev server on {base} (RAIOX_ENV={services.settings.raiox_env})")
    click.echo(f"  admin page   {base}/admin/")
    if services.settings.raiox_env == "dev" and (settings.database_url is None or local_reviewer):
        reviewer, password = ensure_local_reviewer(services)
        click.echo(f"  sign in as   {reviewer} / {password}  (new password on every start)")
    elif services.settings.raiox_env == "dev":
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
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        server.server_close()
        services.close()


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
    click.echo(f"{'case':>5}  {'submitted system':<22} {'top-3 (similarity)':<{width}}  {'decision':<21} notified")
    for case, top in zip(report.cases, tops, strict=True):
        click.echo(f"{case.case_id or '-':>5}  {case.truth:<22} {top:<{width}}  {case.decision or '-':<21} "
                   f"{'yes' if case.delivered else 'no'}")
    summary = report.summary()
    click.echo(f"Jotform API stand-in received {report.jotform_writes} submission edit(s)")
    click.echo(json.dumps(summary) if as_json else ", ".join(f"{k}: {v}" for k, v in summary.items()))


@click.command("batch-test")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--url", default=None, help="Send each image through this webhook (Jotform-shaped); default: match "
              "directly against the catalog with the configured encoder, storing nothing.")
@click.option("--token", envvar="WEBHOOK_TOKEN", default=None, help="Webhook token (default: $WEBHOOK_TOKEN).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the full JSON report here as well.")
@pass_services
def batch_test_command(services: Services, folder: Path, url: str | None, token: str | None,
                       report_path: Path | None) -> None:
    """Every JPEG/PNG/TIFF/DICOM (.dcm) below FOLDER through matching or the webhook; the last line is a JSON summary.

    Sub-folders named after systems (`<system>/<film>`) make it report top-1 and top-3 accuracy."""
    from raiox.tools.batch import match_folder, report, send_folder

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
        return any(row["references"] for row in catalog.catalog_summary(conn))
