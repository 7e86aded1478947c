"""The one table that turns errors into HTTP statuses, and the call that applies it around every handler."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg
from psycopg_pool import PoolTimeout

from raiox.adapters.storage import StorageError
from raiox.errors import (
    Conflict,
    InvalidInput,
    NotAuthenticated,
    NotConfigured,
    NotFound,
    NotPermitted,
    Throttled,
    TooLarge,
    Unavailable,
    Unprocessable,
    UnsupportedFormat,
)
from raiox.services import Services
from raiox.web.http import Handler, HttpRequest, HttpResponse, MethodNotAllowed, json_response

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ErrorRule:
    status: int
    message: str | None = None  # a fixed public message, where the error's own text says too much
    retry_after: int | None = None  # default Retry-After seconds (outages: nothing was kept, retry later)


_DATABASE_DOWN = ErrorRule(503, "the database is unavailable; retry later", retry_after=30)

# Looked up along the error's class hierarchy, most specific first (as Starlette's exception handlers are).
ERROR_STATUSES: dict[type[BaseException], ErrorRule] = {
    InvalidInput: ErrorRule(400),
    NotAuthenticated: ErrorRule(401),
    NotPermitted: ErrorRule(403),
    NotFound: ErrorRule(404),
    MethodNotAllowed: ErrorRule(405),
    Conflict: ErrorRule(409),
    TooLarge: ErrorRule(413),
    UnsupportedFormat: ErrorRule(415),
    Unprocessable: ErrorRule(422),
    Throttled: ErrorRule(429),
    NotConfigured: ErrorRule(503),
    Unavailable: ErrorRule(503, retry_after=30),
    StorageError: ErrorRule(503, "object storage is unavailable; retry later", retry_after=30),
    psycopg.OperationalError: _DATABASE_DOWN,
    PoolTimeout: _DATABASE_DOWN,
}


def rule_for(error: BaseException) -> ErrorRule | None:
    for cls in type(error).__mro__:
        if cls in ERROR_STATUSES:
            return ERROR_STATUSES[cls]
    return None


def error_response(error: BaseException, request: HttpRequest) -> HttpResponse:
    """The answer to an error a handler raised: its status and message, or a logged 500 that leaks nothing."""
    where = f"{request.method} {request.path or '/'}"
    rule = rule_for(error)
    if rule is None:
        log.error("%s -> 500", where, exc_info=error)
        return json_response(500, {"error": "internal error; it has been logged"})
    message = rule.message or str(getattr(error, "message", error))
    headers: dict[str, str] = {}
    retry_after = getattr(error, "retry_after", None) or rule.retry_after
    if retry_after:
        headers["Retry-After"] = str(retry_after)
    if isinstance(error, MethodNotAllowed):
        headers["Allow"] = ", ".join(error.allowed)
    if rule.message:  # infrastructure trouble: keep the whole story in the log
        log.error("%s -> %d: %s", where, rule.status, rule.message, exc_info=error)
    else:
        log.warning("%s -> %d: %s", where, rule.status, message)
    return json_response(rule.status, {"error": message}, headers)


def run_handler(handler: Handler, request: HttpRequest, services: Services) -> HttpResponse:
    """Call a step's handler; whatever it raises becomes an answer through ERROR_STATUSES."""
    try:
        services.refuse_placeholder_secrets()
        request.check_storable()
        return handler(request, services)
    except Exception as error:  # noqa: BLE001 - the table decides; anything it does not know is a logged 500
        return error_response(error, request)
