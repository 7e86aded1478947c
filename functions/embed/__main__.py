"""DigitalOcean-style entry of the embed function: `main(event, context)` over raiox.embed_api."""

from typing import Any

from raiox.embed_api import handle
from raiox.web import do_entry


def main(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    return do_entry(handle, event)
