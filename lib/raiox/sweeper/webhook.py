"""The webhook function: a web call is intake's (`raiox.intake.http`); its scheduled trigger runs the sweeper's
webhook round (the inbox, due fetch jobs, erased objects, then due embed jobs handed to EMBED_URL)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from raiox.errors import InvalidInput
from raiox.intake.http import ROUTES, body_limit
from raiox.services import Services
from raiox.sweeper.round import webhook_round
from raiox.web.http import Function, HttpRequest, HttpResponse, json_response, parse_body


class SweepCall(BaseModel):
    """The scheduled trigger's body: `{"sweep": true}`, and nothing else is a platform invocation of the webhook."""

    sweep: Literal[True]


def scheduled(request: HttpRequest, services: Services) -> HttpResponse:
    """The scheduled trigger (no token: the platform authenticated it): replay the inbox, run due fetch jobs within
    the time limit, then hand due embed jobs to EMBED_URL."""
    parse_body(request, SweepCall, refusal=InvalidInput)
    return json_response(200, webhook_round(services))


WEBHOOK = Function("webhook", ROUTES, body_limit=body_limit, before_body=ROUTES.check_head, platform_call=scheduled)
