"""DigitalOcean entry of the webhook function: `main(event, context)` over raiox.sweeper.webhook
(intake's web calls, the sweeper's scheduled round)."""

from typing import Any

from raiox.sweeper.webhook import WEBHOOK
from raiox.web.platforms import do_entry


def main(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    return do_entry(WEBHOOK, event, context)
