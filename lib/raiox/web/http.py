"""One request/response shape for every function, whatever platform delivered the request."""

from __future__ import annotations

import hmac
import io
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.exceptions import HTTPException
from werkzeug.formparser import parse_form_data

from raiox.errors import InvalidInput, NotAuthenticated, NotConfigured
from raiox.storable import check_text, load_json

if TYPE_CHECKING:
    from raiox.services import Services
    from raiox.settings import Settings

MAX_FORM_PARTS = 64  # a Jotform webhook has about 25 fields; an upload, a few files


class HttpRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    method: str = "GET"
    path: str = ""
    headers: dict[str, str] = Field(default_factory=dict)  # names lower-cased
    query: dict[str, str] = Field(default_factory=dict)
    body: bytes = b""
    client: str = ""  # the caller's address, as the platform reports it

    def check_storable(self) -> None:
        """Path and query values PostgreSQL can store (no NUL, no lone surrogate); InvalidInput otherwise."""
        check_text(self.path, "the path")
        for name, value in self.query.items():
            check_text(name, "a query parameter")
            check_text(value, f"query parameter `{name}`")

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    @property
    def media_type(self) -> str:
        """The content type without parameters, lower-cased (`multipart/form-data`)."""
        return self.content_type.split(";", 1)[0].strip().lower()

    def json_body(self) -> Any:
        """The body parsed as JSON Raiox can keep; InvalidInput when it is not JSON, nests too deep, or holds
        what PostgreSQL cannot store."""
        return load_json(self.body or b"null", "the request body")

    def form(self, *, max_memory: int) -> tuple[dict[str, str], MultiDict[str, FileStorage]]:
        """Text fields and uploaded files of a multipart or urlencoded body (werkzeug's parser)."""
        environ = {
            "REQUEST_METHOD": "POST",
            "CONTENT_TYPE": self.content_type,
            "CONTENT_LENGTH": str(len(self.body)),
            "wsgi.input": io.BytesIO(self.body),
        }
        try:
            _, fields, files = parse_form_data(environ, silent=False, max_form_memory_size=max_memory,
                                               max_form_parts=MAX_FORM_PARTS)
        except (HTTPException, ValueError):
            raise InvalidInput(f"the form body is malformed (or has more than {MAX_FORM_PARTS} parts)") from None
        text = fields.to_dict()
        for name, value in text.items():
            check_text(name, "a form field name")
            check_text(value, f"form field `{name}`")
        return text, files


class HttpResponse(BaseModel):
    status: int = 200
    body: Any = None  # dict/list → JSON; str/bytes sent as is
    headers: dict[str, str] = Field(default_factory=dict)


class MethodNotAllowed(Exception):
    """The path exists but not with this method (an edge matter: 405 with `Allow`)."""

    def __init__(self, *allowed: str) -> None:
        super().__init__(f"use {' or '.join(allowed)}")
        self.message = str(self)
        self.allowed = allowed


Handler = Callable[[HttpRequest, "Services"], HttpResponse]
BodyLimit = Callable[["Settings"], int]
BeforeBody = Callable[[HttpRequest, "Services"], None]
DEFAULT_BODY_LIMIT = 64 * 1024  # sign-ins, decisions, pokes: small JSON


def serves(function: str, *, body_limit: BodyLimit | None = None,
           before_body: BeforeBody | None = None) -> Callable[[Handler], Handler]:
    """Mark a step's handler with the function it serves (named in every log line of its requests), the largest
    body it takes (platform adapters refuse bigger ones before reading them) and `before_body`: the check of a
    caller's secret that platform adapters run on the request's method, path, headers and query before they read
    (or decode) its body, so an anonymous caller cannot make the function take in megabytes."""

    def mark(handler: Handler) -> Handler:
        handler.function = function  # type: ignore[attr-defined]
        handler.body_limit = body_limit  # type: ignore[attr-defined]
        handler.before_body = before_body  # type: ignore[attr-defined]
        return handler

    return mark


def before_body_of(handler: Handler) -> BeforeBody | None:
    return getattr(handler, "before_body", None)


def function_of(handler: Handler) -> str:
    return str(getattr(handler, "function", getattr(handler, "__name__", "function")))


def limit_of(handler: Handler, settings: Settings) -> int:
    limit: BodyLimit | None = getattr(handler, "body_limit", None)
    return limit(settings) if limit is not None else DEFAULT_BODY_LIMIT


def require_method(request: HttpRequest, *allowed: str) -> None:
    if request.method not in allowed:
        raise MethodNotAllowed(*allowed)


def require_secret(provided: str | None, expected: SecretStr | None, *, setting: str, dev: bool) -> None:
    """Constant-time check of a caller's secret. Unset secret: refuse, or allow everyone in dev mode."""
    if expected is None:
        if dev:
            return
        raise NotConfigured(f"this endpoint is not configured: set {setting}")
    if not provided or not hmac.compare_digest(provided.encode(), expected.get_secret_value().encode()):
        raise NotAuthenticated("missing token" if not provided else "wrong token")


def bearer_token(request: HttpRequest) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> HttpResponse:
    return HttpResponse(status=status, body=body, headers=dict(headers or {}))


def health(request: HttpRequest, services: Services, *, authorized: Callable[[], object],
           storage: bool = True) -> HttpResponse:
    """`…/health`: 200 `{"status": "ok"}` to anyone. With `?deep=1`, for callers `authorized` lets through only:
    the database (and object storage, where the function uses it) checked, 503 naming what is down."""
    if request.query.get("deep") not in ("1", "true"):
        return json_response(200, {"status": "ok"})
    authorized()
    parts = services.check(storage=storage)
    healthy = all(state == "ok" for state in parts.values())
    return json_response(200 if healthy else 503, {"status": "ok" if healthy else "degraded", **parts})
