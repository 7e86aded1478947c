"""DigitalOcean entry of the webhook function (`web: raw`): `main(event, context)` over raiox.intake.http."""

from typing import Any

from raiox.intake.http import do_main


def main(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    return do_main(event, context)
