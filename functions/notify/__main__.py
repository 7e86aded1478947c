"""DigitalOcean entry of the notify function: `main(event, context)` over raiox.sweeper.notify
(delivery's web surface, the sweeper's scheduled round)."""

from typing import Any

from raiox.sweeper.notify import NOTIFY
from raiox.web.platforms import do_entry


def main(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    return do_entry(NOTIFY, event, context)
