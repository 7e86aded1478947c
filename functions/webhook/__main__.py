"""DigitalOcean entry of the webhook function (`web: raw`): `main(event, context)` over raiox.intake.receive."""

from typing import Any

from raiox.intake.receive import webhook_handler
from raiox.web import do_entry


def main(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    return do_entry(webhook_handler, event)
