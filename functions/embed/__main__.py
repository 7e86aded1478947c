"""DigitalOcean-style entry of the embed function: `main(event, context)` over raiox.embed.http."""

from typing import Any

from raiox.embed.http import handle
from raiox.web.platforms import do_entry


def main(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    return do_entry(handle, event, context)
