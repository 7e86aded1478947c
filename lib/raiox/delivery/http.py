"""The notify function's web surface: its route table (token, health without object storage, the body, and due
decisions delivered). The function's handlers (`raiox.sweeper.notify`) pass in the sweeper's round, which a
`{"sweep": true}` call runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from pydantic import BaseModel, ConfigDict

from raiox.delivery.worker import run_notify_jobs
from raiox.errors import InvalidInput
from raiox.services import Services
from raiox.web.http import HttpRequest, TokenGuard, parse_body
from raiox.web.routing import Route, Router

Round = Callable[[Services], dict[str, Any]]  # the sweeper's round: what it did, as the answer's body


class NotifyCall(BaseModel):
    """The body of a call: `{}` or approve's `{"case_id": …}` delivers due jobs; `{"sweep": true}` sweeps."""

    model_config = ConfigDict(extra="ignore")

    sweep: bool = False


def router(sweep: Round) -> Router:
    """GET …/health answers without a token (its deep check asks no object storage: notify touches none); POST
    (Bearer NOTIFY_TOKEN) delivers due notify jobs, or with `{"sweep": true}` runs `sweep`; anything but a JSON
    object, or a `sweep` that is not a boolean, is a 400."""

    def notify(request: HttpRequest, services: Services) -> dict[str, Any]:
        if parse_body(request, NotifyCall, refusal=InvalidInput).sweep:
            return sweep(services)
        return {"notify": asdict(run_notify_jobs(services))}

    return Router([Route("POST", "/", notify)], guard=TokenGuard("NOTIFY_TOKEN"), storage=False)
