"""The approve function's HTTP handler: a route table over the review step, bodies as pydantic models, CORS for
the admin page's origin, `Cache-Control: no-store` on every API answer, and the admin page's own files."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict

from raiox import deletions
from raiox.errors import InvalidInput, Unprocessable
from raiox.review import accounts, admin_page, decisions, queue, system
from raiox.review.accounts import Reviewer
from raiox.services import Services
from raiox.web.errors import run_handler
from raiox.web.http import Function, HttpRequest, HttpResponse, bearer_token, json_response, parse_body
from raiox.web.routing import Route, Router

MAX_PER_PAGE = 100
_DIGITS = re.compile(r"^[0-9]{1,9}$")  # ASCII digits only: str.isdigit() also takes "²", which int() refuses


def _positive(request: HttpRequest, name: str, default: int, maximum: int) -> int:
    text = request.query.get(name, "") or str(default)
    if not _DIGITS.match(text) or not 1 <= int(text) <= maximum:
        raise InvalidInput(f"`{name}` must be a whole number from 1 to {maximum}")
    return int(text)


def signed_in(request: HttpRequest, services: Services) -> Reviewer:
    """The guard: the reviewer whose `Authorization: Bearer <token>` this is (401 without a valid one)."""
    return accounts.authenticate(services, bearer_token(request))


def login(request: HttpRequest, services: Services) -> Any:
    return accounts.login(services, parse_body(request, accounts.LoginBody), client=request.client)


def logout(request: HttpRequest, services: Services, reviewer: Reviewer) -> Any:
    return accounts.logout(services, reviewer)


def list_cases(request: HttpRequest, services: Services, reviewer: Reviewer) -> Any:
    statuses = queue.parse_statuses(request.query.get("status") or "ready")
    return queue.list_cases(services, statuses, page=_positive(request, "page", 1, 100_000),
                            per_page=_positive(request, "per_page", 25, MAX_PER_PAGE))


def search_catalog(request: HttpRequest, services: Services, reviewer: Reviewer) -> Any:
    return {"implants": queue.search_catalog(services, request.query.get("q", ""))}


def case_detail(request: HttpRequest, services: Services, reviewer: Reviewer, case_id: int) -> Any:
    return queue.case_detail(services, case_id, reviewer.name)


def decide(request: HttpRequest, services: Services, reviewer: Reviewer, case_id: int) -> Any:
    return decisions.decide(services, reviewer, case_id, parse_body(request, decisions.DecisionBody))


def redeliver(request: HttpRequest, services: Services, reviewer: Reviewer, case_id: int) -> Any:
    return HttpResponse(status=202, body=decisions.redeliver(services, reviewer, case_id))


def retry(request: HttpRequest, services: Services, reviewer: Reviewer, case_id: int) -> Any:
    return HttpResponse(status=202, body=decisions.retry(services, reviewer, case_id))


class EraseBody(BaseModel):
    """The case id again, typed by the reviewer: erasing cannot be undone."""

    model_config = ConfigDict(extra="forbid")

    confirm: int


def erase(request: HttpRequest, services: Services, reviewer: Reviewer, case_id: int) -> Any:
    if parse_body(request, EraseBody).confirm != case_id:
        raise Unprocessable(f"to erase case {case_id}, confirm with its id: {{\"confirm\": {case_id}}}")
    report = deletions.erase_now(services, case_id, actor=reviewer.name)
    return {"case_id": case_id, "erased": True, "objects_deleted": report.objects_deleted,
            "at_source": report.at_source.get(case_id)}


def status(request: HttpRequest, services: Services, reviewer: Reviewer) -> Any:
    return system.system_status(services)


# Every route but the public ones needs a signed-in reviewer, whom the handler gets after `services`.
ROUTES = Router([
    Route("POST", "/login", login, public=True),
    Route("POST", "/logout", logout),
    Route("GET", "/cases", list_cases),
    Route("GET", "/catalog", search_catalog),
    Route("GET", "/cases/{case_id}", case_detail),
    Route("POST", "/cases/{case_id}/decision", decide),
    Route("POST", "/cases/{case_id}/redeliver", redeliver),
    Route("POST", "/cases/{case_id}/retry", retry),
    Route("POST", "/cases/{case_id}/erase", erase),
    Route("GET", "/status", status),
    *admin_page.ROUTES,
], guard=signed_in)


def _allowed_origin(request: HttpRequest, services: Services) -> str | None:
    origin = request.headers.get("origin")
    allowed = {part.strip().rstrip("/") for part in (services.settings.admin_origin or "").split(",") if part.strip()}
    return origin if origin and origin.rstrip("/") in allowed else None


def handle(request: HttpRequest, services: Services) -> HttpResponse:
    """Route (refusals become their status), CORS for the configured admin origin, no caching."""
    origin = _allowed_origin(request, services)
    if request.method == "OPTIONS":
        if request.headers.get("origin") and origin is None:
            response = json_response(403, {"error": "this origin may not call the approve API"})
        else:
            response = HttpResponse(status=204, headers={
                "Allow": "GET, POST, OPTIONS",
                "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                "Access-Control-Allow-Headers": "Authorization, Content-Type",
                "Access-Control-Max-Age": "600",
            })
    else:
        response = run_handler(ROUTES, request, services)
    headers = dict(response.headers)
    headers.setdefault("Cache-Control", "no-store")
    headers["Vary"] = "Origin"
    if origin is not None:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Expose-Headers"] = "Retry-After"
    return response.model_copy(update={"headers": headers})


APPROVE = Function("approve", handle)
