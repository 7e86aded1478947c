"""The embed function: embed's web surface (`raiox.embed.http`: health, direct matching) with the sweeper's embed
round for a poke (due inbox, fetch and embed work). The GPU container and `raiox dev` serve it."""

from __future__ import annotations

from raiox.embed.http import body_limit, router
from raiox.sweeper.round import embed_round
from raiox.web.http import Function

ROUTES = router(sweep=embed_round)
EMBED = Function("embed", ROUTES, body_limit=body_limit, before_body=ROUTES.check_head)
