"""One HTTP shape for every function: DigitalOcean events and Flask requests in, one response type out.

Each function's core is `handler(request: HttpRequest) -> HttpResponse`; `do_entry` serves it as a
DigitalOcean `main(event, context)` and `flask_entry` through functions-framework, so both run one code path.
"""

from __future__ import annotations

import base64
import hmac
import io
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

import psycopg
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.exceptions import HTTPException
from werkzeug.formparser import parse_form_data

from raiox.adapters.storage import StorageError

log = logging.getLogger(__name__)


class HttpRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    method: str = "GET"
    path: str = ""
    headers: dict[str, str] = Field(default_factory=dict)  # names lower-cased
    query: dict[str, str] = Field(default_factory=dict)
    body: bytes = b""

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    def json(self) -> Any:
        """The body parsed as JSON; raises HttpError(400) when it is not."""
        try:
            return json.loads(self.body or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise HttpError(400, "the request body is not valid JSON") from None

    def form(self, *, max_memory: int) -> tuple[dict[str, str], MultiDict[str, FileStorage]]:
        """Text fields and uploaded files of a multipart or urlencoded body (werkzeug's parser)."""
        environ = {
            "REQUEST_METHOD": "POST",
            "CONTENT_TYPE": self.content_type,
            "CONTENT_LENGTH": str(len(self.body)),
            "wsgi.input": io.BytesIO(self.body),
        }
        try:
            _, fields, files = parse_form_data(environ, silent=False, max_form_memory_size=max_memory)
        except (HTTPException, ValueError):
            raise HttpError(400, "the form body is malformed") from None
        return fields.to_dict(), files


class HttpResponse(BaseModel):
    status: int = 200
    body: Any = None  # dict/list → JSON; str/bytes sent as is
    headers: dict[str, str] = Field(default_factory=dict)


class HttpError(Exception):
    """An error meant for the caller: becomes `{"error": message}` with this status."""

    def __init__(self, status: int, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


Handler = Callable[[HttpRequest], HttpResponse]


def require_secret(provided: str | None, expected: SecretStr | None, *, setting: str, dev: bool) -> None:
    """Constant-time check of a caller's secret. Unset secret: refuse (503), or allow everyone in dev mode."""
    if expected is None:
        if dev:
            return
        raise HttpError(503, f"this endpoint is not configured: set {setting}")
    if not provided or not hmac.compare_digest(provided.encode(), expected.get_secret_value().encode()):
        raise HttpError(401, "missing token" if not provided else "wrong token")


def bearer_token(request: HttpRequest) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> HttpResponse:
    return HttpResponse(status=status, body=body, headers=dict(headers or {}))


RETRY_AFTER = {"Retry-After": "30"}


def run_handler(handler: Handler, request: HttpRequest) -> HttpResponse:
    """Call the core. Caller errors become their status; an unreachable database or object store a 503
    with Retry-After (nothing was kept, the sender may retry); anything else a logged 500 that leaks nothing."""
    try:
        return handler(request)
    except HttpError as exc:
        log.warning("%s %s -> %d: %s", request.method, request.path or "/", exc.status, exc.message)
        return json_response(exc.status, {"error": exc.message}, exc.headers)
    except (psycopg.OperationalError, PoolTimeout):
        log.exception("%s %s -> 503: database unavailable", request.method, request.path or "/")
        return json_response(503, {"error": "the database is unavailable; retry later"}, RETRY_AFTER)
    except StorageError:
        log.exception("%s %s -> 503: object storage unavailable", request.method, request.path or "/")
        return json_response(503, {"error": "object storage is unavailable; retry later"}, RETRY_AFTER)
    except Exception:
        log.exception("%s %s -> 500", request.method, request.path or "/")
        return json_response(500, {"error": "internal error; it has been logged"})


# DigitalOcean Functions ---------------------------------------------------------------------------

_DO_RESERVED = {"http", "__ow_method", "__ow_headers", "__ow_path", "__ow_body", "__ow_query"}


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
    return do_response(run_handler(handler, request_from_do_event(event)))


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


def flask_entry(handler: Handler, request: Any, *, path: str | None = None) -> Any:
    return flask_response(run_handler(handler, request_from_flask(request, path=path)))
