"""The embed function's handler: embed's web surface (`raiox.embed.http`: health, direct matching) with the
sweeper's embed round for a poke (due inbox, fetch and embed work). The GPU container and `raiox dev` serve it."""

from __future__ import annotations

from raiox.embed.http import body_limit, respond, token_first
from raiox.services import Services
from raiox.sweeper.round import embed_round
from raiox.web.http import HttpRequest, HttpResponse, serves


@serves("embed", body_limit=body_limit, before_body=token_first)
def handle(request: HttpRequest, services: Services) -> HttpResponse:
    """GET …/health answers without a token; POST …/match matches one image; POST otherwise (a poke, or the
    sweeper's `{"sweep": true}`) records what the inbox kept, fetches due X-rays, then embeds due cases."""
    return respond(request, services, sweep=embed_round)
