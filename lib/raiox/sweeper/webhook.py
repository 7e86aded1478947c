"""The webhook function's handlers: a web call is intake's (`raiox.intake.http`); its scheduled trigger runs the
sweeper's webhook round (the inbox, due fetch jobs, erased objects, then due embed jobs handed to EMBED_URL)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from raiox.errors import InvalidInput
from raiox.intake.http import handle
from raiox.services import Services
from raiox.sweeper.round import webhook_round
from raiox.web.http import HttpRequest, HttpResponse, json_response, serves
from raiox.web.platforms import do_entry, is_web_event


@serves("webhook")
def handle_platform_call(request: HttpRequest, services: Services) -> HttpResponse:
    """The scheduled trigger (`{"sweep": true}`, no token: the platform authenticated it): replay the inbox,
    run due fetch jobs within the time limit, then hand due embed jobs to EMBED_URL."""
    body = request.json_body() if request.body.strip() else {}
    if not isinstance(body, dict) or body.get("sweep") is not True:
        raise InvalidInput('a platform invocation of the webhook must be {"sweep": true}')
    return json_response(200, webhook_round(services))


def do_main(event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    """DigitalOcean entry: a web call carries `http` (and needs the token); the scheduled trigger's event is
    its body alone."""
    return do_entry(handle if is_web_event(event) else handle_platform_call, event, context)
