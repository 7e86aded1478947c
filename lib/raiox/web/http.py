"""One request/response shape for every function, whatever platform delivered the request; what a function is to
the platform adapters; the one body parser and the one token guard."""

from __future__ import annotations

import hmac
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.exceptions import HTTPException
from werkzeug.formparser import parse_form_data

from raiox.errors import InvalidInput, NotAuthenticated, NotConfigured, RaioxError, Unprocessable
from raiox.settings import Settings
from raiox.storable import check_text, load_json

if TYPE_CHECKING:
    from raiox.services import Services

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


@dataclass(frozen=True)
class Function:
    """One deployed function as the platform adapters serve it (`do_entry`, `flask_entry`): its name (in every log
    line of its requests), the handler of its web calls, the largest body it takes (refused before it is read),
    `before_body` (the route and the caller's token checked on the method, path, headers and query before the body
    is read or decoded, so an anonymous caller cannot make the function take in megabytes) and `platform_call`: the
    handler of an invocation the platform authenticated (a scheduled trigger); without one such an event is
    answered as a web call."""

    name: str
    handle: Handler
    body_limit: BodyLimit | None = None
    before_body: BeforeBody | None = None
    platform_call: Handler | None = None

    def max_body(self, settings: Settings) -> int:
        return self.body_limit(settings) if self.body_limit is not None else DEFAULT_BODY_LIMIT


Body = TypeVar("Body", bound=BaseModel)


def parse_body(request: HttpRequest, model: type[Body], *, refusal: type[RaioxError] = Unprocessable) -> Body:
    """The JSON body (an empty one reads as `{}`) as `model`: InvalidInput (400) when it is not JSON, `refusal`
    (422 unless told) when it is not an object or a field is wrong, naming each wrong field (never its value)."""
    data = request.json_body() if request.body.strip() else {}
    if not isinstance(data, dict):
        raise refusal("the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors())
        raise refusal(problems) from None


def bearer_token(request: HttpRequest) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


@dataclass(frozen=True)
class TokenGuard:
    """The guard of a function whose callers share one secret: the setting `setting` names (`EMBED_TOKEN`), sent as
    `Authorization: Bearer …`, or as `?token=` with `in_query` (Jotform's webhook cannot send headers). Compared in
    constant time; unset, it refuses everyone (503 naming the setting), or lets everyone in in dev mode."""

    setting: str
    in_query: bool = False

    def __post_init__(self) -> None:
        if self.setting.lower() not in Settings.model_fields:
            raise ValueError(f"no setting {self.setting}")

    def __call__(self, request: HttpRequest, services: Services) -> None:
        settings = services.settings
        expected: SecretStr | None = getattr(settings, self.setting.lower())
        if expected is None:
            if settings.is_dev:
                return
            raise NotConfigured(f"this endpoint is not configured: set {self.setting}")
        provided = request.query.get("token") if self.in_query else bearer_token(request)
        if not provided or not hmac.compare_digest(provided.encode(), expected.get_secret_value().encode()):
            raise NotAuthenticated("missing token" if not provided else "wrong token")


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> HttpResponse:
    return HttpResponse(status=status, body=body, headers=dict(headers or {}))
