"""DigitalOcean-style entry of the notify function: `main(event, context)` over raiox.sweeper.notify (delivery's web
surface and the sweeper's round)."""

from typing import Any

from raiox.sweeper.notify import do_main


def main(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    return do_main(event, context)
