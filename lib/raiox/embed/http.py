"""The embed function's web surface: its route table (token, health, one image matched directly, and a poke that
runs the round the function's handler, `raiox.sweeper.embed`, passes in: due intake and embed jobs)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from raiox.embed.matching import film_candidates, match_implants
from raiox.errors import InvalidInput
from raiox.services import Services
from raiox.settings import Settings
from raiox.web.http import HttpRequest, TokenGuard
from raiox.web.routing import Route, Router

Round = Callable[[Services], dict[str, Any]]  # the sweeper's round: what it did, as the answer's body


def _uploaded_image(request: HttpRequest, max_bytes: int) -> bytes:
    """The image of a direct match: a raw body, or the `file` field of a multipart form."""
    if request.media_type == "multipart/form-data":
        upload = request.form(max_memory=max_bytes)[1].get("file")
        if upload is None:
            raise InvalidInput("multipart upload needs a `file` field")
        return upload.stream.read()
    if not request.body:
        raise InvalidInput("send the image as the request body or as a multipart `file` field")
    return request.body


def body_limit(settings: Settings) -> int:
    """The largest body a call may carry: one film for a direct match, and a little room for its form."""
    return settings.fetch_max_bytes + 64 * 1024


def match(request: HttpRequest, services: Services) -> dict[str, Any]:
    """POST …/match: one image (the body, or a multipart `file`) matched; no case is created."""
    settings = services.settings
    implants = match_implants(services, _uploaded_image(request, settings.fetch_max_bytes))
    hidden = {"reference_storage_key"}
    return {
        "model_id": services.encoder.model_id,
        "candidates": [c.model_dump(exclude=hidden) for c in film_candidates(implants, settings.raiox_top_k)],
        "implants": [i.model_dump(exclude={"candidates": {"__all__": hidden}}) for i in implants]}


def router(sweep: Round) -> Router:
    """GET …/health answers without a token; every POST needs Bearer EMBED_TOKEN: …/match matches one image, the
    function's own URL (a poke, whatever its body, or the sweeper's `{"sweep": true}`) runs `sweep`."""

    def poke(request: HttpRequest, services: Services) -> dict[str, Any]:
        return sweep(services)

    return Router([Route("POST", "/match", match), Route("POST", "/", poke)], guard=TokenGuard("EMBED_TOKEN"))
