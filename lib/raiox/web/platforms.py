"""Platform adapters: a DigitalOcean event or a Flask request (functions-framework, the dev server) in, the
request shape handed to a step's handler, its response sent back the platform's way; one code path for both."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from raiox.services import Services, get_services
from raiox.web.errors import run_handler
from raiox.web.http import Handler, HttpRequest, HttpResponse

# DigitalOcean Functions ---------------------------------------------------------------------------

_DO_RESERVED = {"http", "__ow_method", "__ow_headers", "__ow_path", "__ow_body", "__ow_query"}
# Keys OpenWhisk adds to the event of a web call; an event without them came from the platform itself.
_WEB_EVENT_KEYS = ("http", "__ow_method", "__ow_headers")


def is_web_event(event: Mapping[str, Any]) -> bool:
    """A web call carries `http`; an event without it is an invocation the platform authenticated (a scheduled
    trigger, whose parameters are the event, or an API invoke with the namespace's key)."""
    return any(key in event for key in _WEB_EVENT_KEYS)


def request_from_do_event(event: Mapping[str, Any]) -> HttpRequest:
    """A `web: raw` event (body + queryString in event["http"]) or a `web: true` event (fields merged)."""
    http = event.get("http") or {}
    headers = {str(k).lower(): str(v) for k, v in (http.get("headers") or {}).items()}
    if "body" in http or "queryString" in http:  # web: raw
        raw = http.get("body") or ""
        body = base64.b64decode(raw) if http.get("isBase64Encoded") else str(raw).encode("utf-8")
        query = dict(parse_qsl(http.get("queryString") or "", keep_blank_values=True))
    else:  # web: true — JSON/urlencoded fields and the query string arrive merged into the event
        fields = {k: v for k, v in event.items() if k not in _DO_RESERVED}
        body = json.dumps(fields).encode() if fields else b""
        query = {k: v for k, v in fields.items() if isinstance(v, str)}
        headers.setdefault("content-type", "application/json")
    return HttpRequest(
        method=str(http.get("method") or "POST").upper(),
        path=str(http.get("path") or ""),
        headers=headers,
        query=query,
        body=body,
    )


def do_response(response: HttpResponse) -> dict[str, Any]:
    body = response.body
    if isinstance(body, bytes):
        return {"statusCode": response.status, "headers": response.headers,
                "body": base64.b64encode(body).decode()}
    if body is None:
        body = ""
    return {"statusCode": response.status, "headers": response.headers, "body": body}


def do_entry(handler: Handler, event: Mapping[str, Any]) -> dict[str, Any]:
    """A function's DigitalOcean `main`: the process-wide services, the handler, a DigitalOcean answer."""
    return do_response(run_handler(handler, request_from_do_event(event), get_services()))


# functions-framework / Flask ----------------------------------------------------------------------


def request_from_flask(request: Any, *, path: str | None = None) -> HttpRequest:
    return HttpRequest(
        method=request.method,
        path=request.path if path is None else path,
        headers={k.lower(): v for k, v in request.headers.items()},
        query=dict(request.args.items()),
        body=request.get_data(cache=False),
    )


def flask_response(response: HttpResponse) -> Any:
    from flask import Response

    body = response.body
    headers = dict(response.headers)
    if isinstance(body, (dict, list)):
        headers.setdefault("Content-Type", "application/json")
        body = json.dumps(body)
    return Response(b"" if body is None else body, status=response.status, headers=headers)


def flask_entry(handler: Handler, request: Any, *, services: Services | None = None, path: str | None = None) -> Any:
    """A function served by functions-framework (or mounted by the dev server, which passes its services)."""
    return flask_response(run_handler(handler, request_from_flask(request, path=path), services or get_services()))
