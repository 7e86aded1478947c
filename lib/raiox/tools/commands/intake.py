"""Intake tools: `raiox simulate-webhook`, a Jotform-shaped POST with its X-rays served locally."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import click
import requests

from raiox.tools.simulator import jotform_fields, multipart, new_submission_id, serve_files, with_token

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
