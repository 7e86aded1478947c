"""DigitalOcean-style entry of the notify function: `main(event, context)` over raiox.notify_api."""

from typing import Any

from raiox.notify_api import do_main


def main(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    return do_main(event)
