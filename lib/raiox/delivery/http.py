"""The notify function's core: deliver due decisions; called as the scheduled sweeper, also hand on embed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from raiox.delivery.service import run_notify_jobs
from raiox.delivery.sweep import sweep
from raiox.services import Services, get_services
from raiox.web import HttpError, HttpRequest, HttpResponse, bearer_token, do_entry, json_response, require_secret

# Keys OpenWhisk adds to the event of a web call; an event without them came from the platform itself.
_WEB_EVENT_KEYS = ("http", "__ow_method", "__ow_headers")


class NotifyCall(BaseModel):
    """The body of a call: `{}` or approve's `{"case_id": …}` delivers due jobs; `{"sweep": true}` sweeps."""

    model_config = ConfigDict(extra="ignore")

    sweep: bool = False


def handle_notify(request: HttpRequest, services: Services, *, trusted: bool = False) -> HttpResponse:
    """GET …/health answers without a token; POST delivers due notify jobs, and with `sweep` also pokes
    embed when embed jobs are due. `trusted`: the platform invoked it (no token needed)."""
    settings = services.settings
    if request.path.rstrip("/").endswith("/health"):
        return json_response(200, {"status": "ok"})
    if request.method != "POST":
        raise HttpError(405, "use POST", headers={"Allow": "POST"})
    if not trusted:
        require_secret(bearer_token(request), settings.notify_token, setting="NOTIFY_TOKEN",
                       dev=settings.raiox_env == "dev")
    body = request.json() if request.body.strip() else {}
    if not isinstance(body, dict):
        raise HttpError(400, "the body must be a JSON object, e.g. {\"sweep\": true}")
    try:
        call = NotifyCall.model_validate(body)
    except ValidationError:
        raise HttpError(400, "`sweep` must be true or false") from None
    if call.sweep:
        return json_response(200, sweep(services, embed_here=False).as_dict())
    return json_response(200, {"notify": asdict(run_notify_jobs(services))})


def handle(request: HttpRequest) -> HttpResponse:
    """Entry for web calls (functions-framework, the dev server, DigitalOcean web): Bearer NOTIFY_TOKEN."""
    return handle_notify(request, get_services())


def _handle_platform_call(request: HttpRequest) -> HttpResponse:
    return handle_notify(request, get_services(), trusted=True)


def do_main(event: Mapping[str, Any]) -> dict[str, Any]:
    """DigitalOcean entry. A web call carries `http` and needs the token; an event without it is an
    invocation the platform authenticated (the scheduled trigger, whose parameters are the event, e.g.
    `{"sweep": true}`, or an API invoke with the namespace's key), so it runs without a token."""
    trusted = not any(key in event for key in _WEB_EVENT_KEYS)
    return do_entry(_handle_platform_call if trusted else handle, event)
