"""The notify function's web surface: its token, health (no object storage), the body, and due decisions delivered.
The function's handlers (`raiox.sweeper.notify`) pass in the sweeper's round, which a `{"sweep": true}` call runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

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
)

Round = Callable[[Services], dict[str, Any]]  # the sweeper's round: what it did, as the answer's body


class NotifyCall(BaseModel):
    """The body of a call: `{}` or approve's `{"case_id": …}` delivers due jobs; `{"sweep": true}` sweeps."""

    model_config = ConfigDict(extra="ignore")

    sweep: bool = False


def respond(request: HttpRequest, services: Services, *, trusted: bool, sweep: Round) -> HttpResponse:
    """GET …/health answers without a token; POST (Bearer NOTIFY_TOKEN unless the platform authenticated the call,
    `trusted`) delivers due notify jobs, or with `{"sweep": true}` runs `sweep`."""
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
        return json_response(200, sweep(services))
    return json_response(200, {"notify": asdict(run_notify_jobs(services))})
