"""DigitalOcean entry of the embed function: `main(event, context)` over raiox.sweeper.embed
(embed's web surface, the sweeper's round for a poke)."""

from typing import Any

from raiox.sweeper.embed import EMBED
from raiox.web.platforms import do_entry


def main(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    return do_entry(EMBED, event, context)
