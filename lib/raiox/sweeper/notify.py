"""The notify function: delivery's web surface (`raiox.delivery.http`) with the sweeper's notify round for
`{"sweep": true}` (its scheduled trigger every minute). No object storage and no torch load here."""

from __future__ import annotations

from typing import Any

from raiox.delivery.http import router
from raiox.services import Services
from raiox.sweeper.round import sweep
from raiox.web.http import Function


def notify_round(services: Services) -> dict[str, Any]:
    """Deliver due decisions, reconcile, erase by retention, and hand due fetch and embed jobs to EMBED_URL."""
    return sweep(services, embed_here=False).as_dict()


ROUTES = router(sweep=notify_round)
# A web call needs Bearer NOTIFY_TOKEN; an invocation the platform authenticated (the scheduled trigger, whose event
# is its body alone: `{"sweep": true}`) takes the same routes without it.
NOTIFY = Function("notify", ROUTES, before_body=ROUTES.check_head, platform_call=ROUTES.trusted)
