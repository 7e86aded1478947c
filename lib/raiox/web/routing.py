"""Route tables: method + path pattern → handler, with path parameters, the caller's guard, `GET /health`, and 404
and 405 answered here."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from raiox.errors import NotFound
from raiox.web.http import HttpRequest, HttpResponse, MethodNotAllowed, json_response

if TYPE_CHECKING:
    from raiox.services import Services

_PARAMETER = re.compile(r"\{(\w+)\}")

# Checks who calls: raises NotAuthenticated (or NotConfigured) for a caller it refuses; returns the caller where the
# handlers need it (a signed-in reviewer), else None. A `TokenGuard` is one.
Guard = Callable[[HttpRequest, "Services"], object]


@dataclass(frozen=True)
class Route:
    """`pattern` is a path like `/cases/{case_id}/decision`; each `{name}` matches 1–18 digits (an id) and
    reaches the handler as an int keyword argument. `public` routes need nothing of the caller; the others pass
    the table's guard first. A handler answers an `HttpResponse`, or a body for a 200."""

    method: str
    pattern: str
    handler: Callable[..., Any]
    public: bool = False
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = _PARAMETER.split(self.pattern)  # literal, name, literal, name, …
        source = "".join(re.escape(part) if n % 2 == 0 else rf"(?P<{part}>\d{{1,18}})" for n, part in enumerate(parts))
        object.__setattr__(self, "regex", re.compile(f"^{source}$"))


@dataclass(frozen=True)
class Match:
    route: Route
    params: dict[str, int]


class Router:
    """A function's route table, and its handler: every table answers `GET /health` (public; `?deep=1` for callers
    the guard lets through), then its own routes. `storage`: whether the deep check asks object storage too."""

    def __init__(self, routes: Sequence[Route], *, guard: Guard, storage: bool = True) -> None:
        self.guard = guard
        self.storage = storage
        self.routes = [Route("GET", "/health", self.health, public=True), *routes]

    def match(self, request: HttpRequest) -> Match:
        """The route for the request's method and path; NotFound for an unknown path, MethodNotAllowed for a
        known path asked with another method."""
        path = "/" + request.path.strip("/")
        allowed: list[str] = []
        for route in self.routes:
            found = route.regex.match(path)
            if found is None:
                continue
            if route.method == request.method:
                return Match(route, {name: int(value) for name, value in found.groupdict().items()})
            allowed.append(route.method)
        if allowed:
            raise MethodNotAllowed(*dict.fromkeys(allowed))
        raise NotFound(f"no such endpoint: {path}")

    def __call__(self, request: HttpRequest, services: Services) -> HttpResponse:
        """The matched route's answer; a guarded route's handler gets what the guard returned, if anything, after
        `services` (the reviewer), then the path parameters."""
        return self._answer(request, services, guarded=True)

    def trusted(self, request: HttpRequest, services: Services) -> HttpResponse:
        """The same, without the guard: for an invocation the platform authenticated (a scheduled trigger)."""
        return self._answer(request, services, guarded=False)

    def check_head(self, request: HttpRequest, services: Services) -> None:
        """What can be refused before the body is read: an unknown path (404), another method (405), a caller the
        guard refuses (a platform adapter's `before_body`)."""
        if not self.match(request).route.public:
            self.guard(request, services)

    def health(self, request: HttpRequest, services: Services) -> HttpResponse:
        """`…/health`: 200 `{"status": "ok"}` to anyone. With `?deep=1`, for callers the guard lets through only:
        the database (and object storage, where the function uses it) checked, 503 naming what is down."""
        if request.query.get("deep") not in ("1", "true"):
            return json_response(200, {"status": "ok"})
        self.guard(request, services)
        parts = services.check(storage=self.storage)
        healthy = all(state == "ok" for state in parts.values())
        return json_response(200 if healthy else 503, {"status": "ok" if healthy else "degraded", **parts})

    def _answer(self, request: HttpRequest, services: Services, *, guarded: bool) -> HttpResponse:
        match = self.match(request)
        caller = self.guard(request, services) if guarded and not match.route.public else None
        callers = () if caller is None else (caller,)
        answer = match.route.handler(request, services, *callers, **match.params)
        return answer if isinstance(answer, HttpResponse) else json_response(200, answer)
