"""DigitalOcean entry of the approve function: `main(event, context)` over raiox.review.http."""

from typing import Any

from raiox.review.http import APPROVE
from raiox.web.platforms import do_entry


def main(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    return do_entry(APPROVE, event, context)
