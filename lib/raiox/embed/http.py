"""The embed function's core: run due embed jobs, direct image matching, health."""

from __future__ import annotations

import logging

from raiox.adapters.imaging import ImageError
from raiox.embed.matching import match_image, run_embed_jobs
from raiox.services import Services, get_services
from raiox.web import HttpError, HttpRequest, HttpResponse, bearer_token, json_response, require_secret

log = logging.getLogger(__name__)


def _uploaded_image(request: HttpRequest, max_bytes: int) -> bytes:
    """The image of a direct match: a raw body, or the `file` field of a multipart form."""
    if request.content_type.startswith("multipart/form-data"):
        upload = request.form(max_memory=max_bytes)[1].get("file")
        if upload is None:
            raise HttpError(400, "multipart upload needs a `file` field")
        return upload.read()
    if not request.body:
        raise HttpError(400, "send the image as the request body or as a multipart `file` field")
    return request.body


def handle_embed(request: HttpRequest, services: Services) -> HttpResponse:
    """GET …/health answers without a token; POST …/match matches one image; POST otherwise runs due jobs."""
    settings = services.settings
    if request.path.rstrip("/").endswith("/health"):
        return json_response(200, {"status": "ok"})
    if request.method != "POST":
        raise HttpError(405, "use POST", headers={"Allow": "POST"})
    require_secret(bearer_token(request), settings.embed_token, setting="EMBED_TOKEN",
                   dev=settings.raiox_env == "dev")
    encoder = services.encoder
    if request.path.rstrip("/").endswith("/match"):
        try:
            candidates = match_image(services, _uploaded_image(request, settings.fetch_max_bytes))
        except ImageError as exc:
            raise HttpError(exc.status, str(exc)) from None
        return json_response(200, {"model_id": encoder.model_id,
                                   "candidates": [c.model_dump(exclude={"reference_storage_key"})
                                                  for c in candidates]})
    report = run_embed_jobs(services)
    return json_response(200, {"model_id": encoder.model_id, **report.__dict__})


def handle(request: HttpRequest) -> HttpResponse:
    """Entry for the function adapters: the process-wide services and encoder."""
    return handle_embed(request, get_services())
