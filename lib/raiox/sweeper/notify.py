"""The notify function's handlers: delivery's web surface (`raiox.delivery.http`) with the sweeper's notify round
for `{"sweep": true}` (its scheduled trigger every minute). No object storage and no torch load here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from raiox.delivery.http import respond
from raiox.services import Services
from raiox.sweeper.round import sweep
from raiox.web.http import HttpRequest, HttpResponse, serves
from raiox.web.platforms import do_entry, is_web_event


def notify_round(services: Services) -> dict[str, Any]:
    """Deliver due decisions, reconcile, erase by retention, and hand due fetch and embed jobs to EMBED_URL."""
    return sweep(services, embed_here=False).as_dict()


@serves("notify")
def handle(request: HttpRequest, services: Services) -> HttpResponse:
    """A web call (functions-framework, the dev server, DigitalOcean web): Bearer NOTIFY_TOKEN. GET …/health
    answers without it; POST delivers due notify jobs, and with `sweep` also pokes embed when embed jobs are due."""
    return respond(request, services, trusted=False, sweep=notify_round)


@serves("notify")
def handle_platform_call(request: HttpRequest, services: Services) -> HttpResponse:
    """An invocation the platform authenticated (the scheduled trigger): no token."""
    return respond(request, services, trusted=True, sweep=notify_round)


def do_main(event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    """DigitalOcean entry: a web call carries `http` and needs the token; the scheduled trigger's event is its
    body alone (e.g. `{"sweep": true}`)."""
    return do_entry(handle if is_web_event(event) else handle_platform_call, event, context)
