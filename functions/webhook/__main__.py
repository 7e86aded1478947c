"""DigitalOcean entry of the webhook function (`web: raw`): `main(event, context)` over raiox.sweeper.webhook (web
calls: raiox.intake.http; the scheduled trigger: the sweeper's round)."""

from typing import Any

from raiox.sweeper.webhook import do_main


def main(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    return do_main(event, context)
