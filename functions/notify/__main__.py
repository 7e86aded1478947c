"""DigitalOcean-style entry of the notify function: `main(event, context)` over raiox.delivery.http."""

from typing import Any

from raiox.delivery.http import do_main


def main(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    return do_main(event, context)
