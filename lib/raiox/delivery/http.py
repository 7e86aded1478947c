"""The notify function's HTTP handler: deliver due decisions; as the scheduled sweeper, also hand on embed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from raiox.delivery.sweep import sweep
from raiox.delivery.worker import run_notify_jobs
from raiox.errors import InvalidInput
from raiox.services import Services
from raiox.web.http import (
    HttpRequest,
    HttpResponse,
    bearer_token,
    health,
    json_response,
    require_method,
    require_secret,
    serves,
)
from raiox.web.platforms import do_entry, is_web_event


class NotifyCall(BaseModel):
    """The body of a call: `{}` or approve's `{"case_id": …}` delivers due jobs; `{"sweep": true}` sweeps."""

    model_config = ConfigDict(extra="ignore")

    sweep: bool = False


def _respond(request: HttpRequest, services: Services, *, trusted: bool) -> HttpResponse:
    settings = services.settings
    def authorized() -> None:
        if not trusted:
            require_secret(bearer_token(request), settings.notify_token, setting="NOTIFY_TOKEN",
                           dev=settings.raiox_env == "dev")

    if request.path.rstrip("/").endswith("/health"):
        return health(request, services, authorized=authorized, storage=False)  # notify touches no object
    require_method(request, "POST")
    authorized()
    body = request.json_body() if request.body.strip() else {}
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object, e.g. {\"sweep\": true}")
    try:
        call = NotifyCall.model_validate(body)
    except ValidationError:
        raise InvalidInput("`sweep` must be true or false") from None
    if call.sweep:
        return json_response(200, sweep(services, embed_here=False).as_dict())
    return json_response(200, {"notify": asdict(run_notify_jobs(services))})


@serves("notify")
def handle(request: HttpRequest, services: Services) -> HttpResponse:
    """A web call (functions-framework, the dev server, DigitalOcean web): Bearer NOTIFY_TOKEN. GET …/health
    answers without it; POST delivers due notify jobs, and with `sweep` also pokes embed when embed jobs are due."""
    return _respond(request, services, trusted=False)


@serves("notify")
def handle_platform_call(request: HttpRequest, services: Services) -> HttpResponse:
    """An invocation the platform authenticated (the scheduled trigger): no token."""
    return _respond(request, services, trusted=True)


def do_main(event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    """DigitalOcean entry: a web call carries `http` and needs the token; the scheduled trigger's event is its
    body alone (e.g. `{"sweep": true}`)."""
    return do_entry(handle if is_web_event(event) else handle_platform_call, event, context)
