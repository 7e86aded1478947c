"""The approve function's HTTP core: routes, bodies, tokens and CORS around raiox.review.service."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from raiox.review import service as review
from raiox.services import Services, get_services
from raiox.web import HttpError, HttpRequest, HttpResponse, bearer_token, json_response, run_handler

_CASE_PATH = re.compile(r"^/cases/(\d{1,18})(?:/(decision|redeliver))?$")
MAX_PER_PAGE = 100


def _body(request: HttpRequest, model: type[BaseModel]) -> Any:
    """The JSON body as `model`: 400 when it is not JSON, 422 naming each wrong field (never its value)."""
    data = request.json()
    if not isinstance(data, dict):
        raise HttpError(422, "the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors())
        raise HttpError(422, problems) from None


def _positive(request: HttpRequest, name: str, default: int, maximum: int) -> int:
    text = request.query.get(name, "") or str(default)
    if not text.isdigit() or not 1 <= int(text) <= maximum:
        raise HttpError(400, f"`{name}` must be a whole number from 1 to {maximum}")
    return int(text)


def _allow(*methods: str) -> HttpError:
    return HttpError(405, f"use {' or '.join(methods)}", headers={"Allow": ", ".join(methods)})


def route(request: HttpRequest, services: Services) -> HttpResponse:
    """GET /health and POST /login are open; every other route needs `Authorization: Bearer <token>`."""
    path = "/" + request.path.strip("/")
    method = request.method
    if path == "/health":
        if method != "GET":
            raise _allow("GET")
        return json_response(200, {"status": "ok"})
    if path == "/login":
        if method != "POST":
            raise _allow("POST")
        return json_response(200, review.login(services, _body(request, review.LoginBody)))

    case_match = _CASE_PATH.match(path)
    if path not in ("/cases", "/catalog") and case_match is None:
        raise HttpError(404, f"no such endpoint: {path}")
    reviewer = review.authenticate(services, bearer_token(request))
    if path == "/cases":
        if method != "GET":
            raise _allow("GET")
        statuses = review.parse_statuses(request.query.get("status") or "ready")
        return json_response(200, review.list_cases(
            services, statuses, page=_positive(request, "page", 1, 100_000),
            per_page=_positive(request, "per_page", 25, MAX_PER_PAGE)))
    if path == "/catalog":
        if method != "GET":
            raise _allow("GET")
        return json_response(200, {"implants": review.search_catalog(services, request.query.get("q", ""))})

    assert case_match is not None
    case_id, action = int(case_match[1]), case_match[2]
    if action is None:
        if method != "GET":
            raise _allow("GET")
        return json_response(200, review.case_detail(services, case_id))
    if method != "POST":
        raise _allow("POST")
    if action == "decision":
        return json_response(200, review.decide(services, reviewer, case_id, _body(request, review.DecisionBody)))
    return json_response(202, review.redeliver(services, reviewer, case_id))


def _allowed_origin(request: HttpRequest, services: Services) -> str | None:
    origin = request.headers.get("origin")
    allowed = {part.strip().rstrip("/") for part in (services.settings.admin_origin or "").split(",") if part.strip()}
    return origin if origin and origin.rstrip("/") in allowed else None


def handle_review(request: HttpRequest, services: Services) -> HttpResponse:
    """Route with review refusals as their status, CORS for the configured admin origin, no caching."""
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
        response = run_handler(_refusals_as_http(services), request)
    headers = dict(response.headers)
    headers["Cache-Control"] = "no-store"
    headers["Vary"] = "Origin"
    if origin is not None:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Expose-Headers"] = "Retry-After"
    return response.model_copy(update={"headers": headers})


def _refusals_as_http(services: Services) -> Callable[[HttpRequest], HttpResponse]:
    def call(request: HttpRequest) -> HttpResponse:
        try:
            return route(request, services)
        except review.ReviewError as exc:
            headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
            raise HttpError(exc.status, exc.message, headers=headers) from None

    return call


def handle(request: HttpRequest) -> HttpResponse:
    """Entry for the function adapters and the dev server: the process-wide services."""
    return handle_review(request, get_services())
