"""DigitalOcean-style entry of the embed function: `main(event, context)` over raiox.sweeper.embed (embed's web surface
and the sweeper's round)."""

from typing import Any

from raiox.sweeper.embed import handle
from raiox.web.platforms import do_entry


def main(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    return do_entry(handle, event, context)
