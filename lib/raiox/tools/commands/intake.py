"""Intake tools: `raiox simulate-webhook` (a Jotform-shaped POST, X-rays served locally), `raiox reconcile`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import click
import requests

from raiox.errors import RaioxError
from raiox.intake.reconcile import reconcile
from raiox.services import Services
from raiox.tools.commands.common import HTTP_URL, pass_services
from raiox.tools.local import BASE_PATH
from raiox.tools.simulator import jotform_fields, multipart, new_submission_id, serve_files, with_token

# simulate-webhook -----------------------------------------------------------------------------------


@click.command("simulate-webhook")
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--url", required=True, type=HTTP_URL,
              help="The webhook (no token in it); under `raiox dev`: http://127.0.0.1:8080/api/v1/web/raiox/webhook.")
@click.option("--submission-id", default=None, help="Jotform submission id; default: a new random one.")
@click.option("--form-id", default="251234567890123", show_default=True, help="Jotform form id.")
@click.option("--token", envvar="WEBHOOK_TOKEN", default=None, help="Webhook token (default: $WEBHOOK_TOKEN).")
@click.option("--wait", default=60.0, show_default=True, type=click.FloatRange(0),
              help="Seconds to keep serving the films until fetched.")
def simulate_webhook(images: tuple[Path, ...], url: str, submission_id: str | None, form_id: str,
                     token: str | None, wait: float) -> None:
    """POST a Jotform-shaped webhook for IMAGE…, serving the files from a local HTTP server until fetched.

    The webhook records the submission at once and intake fetches the films right after (embed runs the
    fetch jobs; `raiox dev` pokes its own), so the files stay served until they were. The webhook must accept
    loopback http URLs (RAIOX_ENV=dev)."""
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
        if response.status_code == 404:
            raise click.ClickException(f"no webhook at {url} (HTTP 404): under `raiox dev` it is "
                                       f"http://HOST:PORT{BASE_PATH}/webhook")
        if not response.headers.get("Content-Type", "").startswith("application/json"):
            raise click.ClickException(f"{url} is not a Raiox webhook: it answered HTTP {response.status_code} "
                                       f"with {response.headers.get('Content-Type') or 'no content type'}")
        click.echo(response.text)
        if response.status_code >= 400:
            raise SystemExit(1)
        if response.status_code == 202:  # recorded: intake fetches the films next, from this host
            try:
                base.wait_until_served(paths, wait)
                click.echo(f"{len(paths)} film(s) fetched")
            except TimeoutError:
                raise click.ClickException(f"the films were not fetched within {wait:g} s: is embed (or "
                                           "`raiox worker`) running?") from None


@click.command("reconcile")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]),
              default=None, help="Look at submissions created after this time (Jotform's clock) instead of a "
              "day before the newest one seen.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@pass_services
def reconcile_command(services: Services, since: datetime | None, as_json: bool) -> None:
    """Record every Jotform submission of JOTFORM_FORM_IDS that never became a case, as its webhook would have.

    Lists each form's submissions through Jotform's API (JOTFORM_API_KEY, paged, a day of overlap before the
    newest submission seen, stopping while daily API calls are left). Running it twice records nothing new;
    the sweeper runs it every JOTFORM_RECONCILE_MINUTES."""
    try:
        report = reconcile(services, force=True, since=since.replace(tzinfo=UTC) if since else None)
    except RaioxError as exc:
        raise click.ClickException(exc.message) from None
    if as_json:
        click.echo(json.dumps(report.__dict__))
        return
    click.echo(f"forms {', '.join(report.forms)}: {report.seen} submissions seen, {report.recorded} recorded, "
               f"{report.refused} refused")
    for error in report.errors:
        click.echo(f"  {error}", err=True)
