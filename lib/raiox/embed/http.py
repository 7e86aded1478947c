"""The embed function's web surface: its token, health, one image matched directly, and a poke that runs the round
the function's handler (`raiox.sweeper.embed`) passes in (due intake and embed jobs)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from raiox.embed.matching import film_candidates, match_implants
from raiox.errors import InvalidInput
from raiox.services import Services
from raiox.settings import Settings
from raiox.web.http import (
    HttpRequest,
    HttpResponse,
    bearer_token,
    health,
    json_response,
    require_method,
    require_secret,
)

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


def token_first(request: HttpRequest, services: Services) -> None:
    """A POST's bearer token is checked before its body (up to an image) is read."""
    if request.method == "POST" and not request.path.rstrip("/").endswith("/health"):
        settings = services.settings
        require_secret(bearer_token(request), settings.embed_token, setting="EMBED_TOKEN",
                       dev=settings.raiox_env == "dev")


def respond(request: HttpRequest, services: Services, *, sweep: Round) -> HttpResponse:
    """GET …/health answers without a token; POST …/match matches one image; POST otherwise (a poke, or the
    sweeper's `{"sweep": true}`) runs `sweep`."""
    settings = services.settings

    def authorized() -> None:
        require_secret(bearer_token(request), settings.embed_token, setting="EMBED_TOKEN",
                       dev=settings.raiox_env == "dev")

    if request.path.rstrip("/").endswith("/health"):
        return health(request, services, authorized=authorized)
    require_method(request, "POST")
    authorized()
    encoder = services.encoder
    if request.path.rstrip("/").endswith("/match"):
        implants = match_implants(services, _uploaded_image(request, settings.fetch_max_bytes))
        hidden = {"reference_storage_key"}
        return json_response(200, {
            "model_id": encoder.model_id,
            "candidates": [c.model_dump(exclude=hidden) for c in film_candidates(implants, settings.raiox_top_k)],
            "implants": [i.model_dump(exclude={"candidates": {"__all__": hidden}}) for i in implants]})
    return json_response(200, sweep(services))
