"""One request/response shape for every function, whatever platform delivered the request."""

from __future__ import annotations

import hmac
import io
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.exceptions import HTTPException
from werkzeug.formparser import parse_form_data

from raiox.errors import InvalidInput, NotAuthenticated, NotConfigured

if TYPE_CHECKING:
    from raiox.services import Services


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

    @property
    def media_type(self) -> str:
        """The content type without parameters, lower-cased (`multipart/form-data`)."""
        return self.content_type.split(";", 1)[0].strip().lower()

    def json_body(self) -> Any:
        """The body parsed as JSON; InvalidInput when it is not."""
        try:
            return json.loads(self.body or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise InvalidInput("the request body is not valid JSON") from None

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
            raise InvalidInput("the form body is malformed") from None
        return fields.to_dict(), files


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
