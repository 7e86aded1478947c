"""Route tables: method + path pattern → handler, with path parameters, 404 and 405 answered here."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from raiox.errors import NotFound
from raiox.web.http import HttpRequest, MethodNotAllowed

_PARAMETER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Route:
    """`pattern` is a path like `/cases/{case_id}/decision`; each `{name}` matches 1–18 digits (an id) and
    reaches the handler as an int keyword argument. `public` routes need no sign-in."""

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
    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = list(routes)

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
