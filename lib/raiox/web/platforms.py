"""Platform adapters: a DigitalOcean event or a Flask request (functions-framework, the dev server) in, the
request shape handed to a step's handler, its response sent back the platform's way; one code path for both."""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from raiox import logs
from raiox.errors import TooLarge
from raiox.services import Services, get_services
from raiox.web.errors import error_response, run_handler
from raiox.web.http import Function, Handler, HttpRequest, HttpResponse

log = logging.getLogger(__name__)

# DigitalOcean Functions ---------------------------------------------------------------------------

_DO_RESERVED = {"http", "__ow_method", "__ow_headers", "__ow_path", "__ow_body", "__ow_query"}
# Keys OpenWhisk adds to the event of a web call; an event without them came from the platform itself.
_WEB_EVENT_KEYS = ("http", "__ow_method", "__ow_headers")


def is_web_event(event: Mapping[str, Any]) -> bool:
    """A web call carries `http`; an event without it is an invocation the platform authenticated (a scheduled
    trigger, whose parameters are the event, or an API invoke with the namespace's key)."""
    return any(key in event for key in _WEB_EVENT_KEYS)


def _client(forwarded_for: str, fallback: str = "") -> str:
    """The address the nearest proxy saw: the last entry of X-Forwarded-For (earlier ones are the caller's
    to write)."""
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    return hops[-1] if hops else fallback


def request_from_do_event(event: Mapping[str, Any], *, with_body: bool = True) -> HttpRequest:
    """A `web: raw` event (body + queryString in event["http"]) or a `web: true` event (fields merged);
    `with_body=False`: everything but the body (for the check that comes before it is decoded)."""
    http = event.get("http") or {}
    headers = {str(k).lower(): str(v) for k, v in (http.get("headers") or {}).items()}
    if "body" in http or "queryString" in http:  # web: raw
        raw = http.get("body") or ""
        body = b""
        if with_body:
            body = base64.b64decode(raw) if http.get("isBase64Encoded") else str(raw).encode("utf-8")
        query = dict(parse_qsl(http.get("queryString") or "", keep_blank_values=True))
    else:  # web: true — JSON/urlencoded fields and the query string arrive merged into the event
        fields = {k: v for k, v in event.items() if k not in _DO_RESERVED}
        body = json.dumps(fields).encode() if fields and with_body else b""
        query = {k: v for k, v in fields.items() if isinstance(v, str)}
        headers.setdefault("content-type", "application/json")
    return HttpRequest(
        method=str(http.get("method") or "POST").upper(),
        path=str(http.get("path") or ""),
        headers=headers,
        query=query,
        body=body,
        client=_client(headers.get("x-forwarded-for", "")),
    )


def _refused_before_body(function: Function, head: HttpRequest, services: Services) -> HttpResponse | None:
    """The function's `before_body` check on the request without its body: its refusal, or None."""
    check = function.before_body
    if check is None:
        return None

    def checked(request: HttpRequest, services: Services) -> HttpResponse:
        check(request, services)
        return HttpResponse(status=0)

    answer = run_handler(checked, head, services)
    return None if answer.status == 0 else answer


def do_response(response: HttpResponse) -> dict[str, Any]:
    body = response.body
    if isinstance(body, bytes):
        return {"statusCode": response.status, "headers": response.headers,
                "body": base64.b64encode(body).decode()}
    if body is None:
        body = ""
    return {"statusCode": response.status, "headers": response.headers, "body": body}


def do_entry(function: Function, event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    """Every function's DigitalOcean `main`: the process-wide services, the function's handler (its platform call's
    for an event without `http`, where it has one), a DigitalOcean answer."""
    services = get_services()
    logs.configure(json=services.settings.raiox_log_format == "json")
    request_id = str(getattr(context, "activation_id", "") or uuid.uuid4().hex[:16])
    if function.platform_call is not None and not is_web_event(event):
        return do_response(served(function.name, function.platform_call, request_from_do_event(event), services,
                                  request_id))
    head = request_from_do_event(event, with_body=False)
    refused = _refused_before_body(function, head, services)
    if refused is not None:  # the platform read the body; it is at least never decoded or parsed
        return do_response(served(function.name, lambda request, services: refused, head, services, request_id))
    return do_response(served(function.name, function.handle, request_from_do_event(event), services, request_id))


# functions-framework / Flask ----------------------------------------------------------------------


def request_from_flask(request: Any, *, max_body: int, path: str | None = None) -> HttpRequest:
    """The request with its body read only up to `max_body` bytes (TooLarge beyond), whatever Content-Length
    claims, so an anonymous caller cannot make the process hold more."""
    declared = request.content_length
    if declared is not None and declared > max_body:
        raise TooLarge(f"the request body is larger than {max_body} bytes")
    chunks: list[bytes] = []
    size = 0
    while chunk := request.stream.read(min(64 * 1024, max_body + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
        if size > max_body:
            raise TooLarge(f"the request body is larger than {max_body} bytes")
    body = b"".join(chunks)
    return HttpRequest(
        method=request.method,
        path=request.path if path is None else path,
        headers={k.lower(): v for k, v in request.headers.items()},
        query=dict(request.args.items()),
        body=body,
        client=request.remote_addr or "",
    )


def flask_response(response: HttpResponse) -> Any:
    from flask import Response

    body = response.body
    headers = dict(response.headers)
    if isinstance(body, (dict, list)):
        headers.setdefault("Content-Type", "application/json")
        body = json.dumps(body)
    return Response(b"" if body is None else body, status=response.status, headers=headers)


def flask_entry(function: Function, request: Any, *, services: Services | None = None,
                path: str | None = None) -> Any:
    """Every function served by functions-framework (or mounted by the dev server, which passes its services)."""
    services = services or get_services()
    logs.configure(json=services.settings.raiox_log_format == "json")
    request_id = request.headers.get("Function-Execution-Id") or uuid.uuid4().hex[:16]
    head = HttpRequest(method=request.method, path=request.path if path is None else path,
                       headers={k.lower(): v for k, v in request.headers.items()}, query=dict(request.args.items()),
                       client=request.remote_addr or "")
    refused = _refused_before_body(function, head, services)
    if refused is not None:  # the body is never read: an anonymous caller cannot make the process take it in
        return flask_response(served(function.name, lambda request, services: refused, head, services, request_id))
    try:
        parsed = request_from_flask(request, max_body=function.max_body(services.settings), path=path)
    except TooLarge as error:
        with logs.bound(function=function.name, request_id=request_id):
            return flask_response(error_response(error, HttpRequest(method=request.method, path=path or request.path)))
    return flask_response(served(function.name, function.handle, parsed, services, request_id))


def served(function: str, handler: Handler, request: HttpRequest, services: Services,
           request_id: str) -> HttpResponse:
    """The handler's answer, and one log line for the request: function, request id, method, path (never the
    query: it carries tokens), status and duration."""
    started = time.perf_counter()
    with logs.bound(function=function, request_id=request_id):
        response = run_handler(handler, request, services)
        log.info("%s %s -> %d", request.method, request.path or "/", response.status,
                 extra={"status": response.status, "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                        "outcome": "ok" if response.status < 400 else "refused" if response.status < 500
                        else "error"})
    return response
