"""DigitalOcean-style entry of the approve function: `main(event, context)` over raiox.review_api."""

from typing import Any

from raiox.review_api import handle
from raiox.web import do_entry


def main(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    return do_entry(handle, event)
