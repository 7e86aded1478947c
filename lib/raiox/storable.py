"""Text and JSON that PostgreSQL can store, checked before anything is written: no NUL character, no lone
surrogate, no NaN or Infinity, and JSON nested no deeper than a limit. Refusals are `InvalidInput`."""

from __future__ import annotations

import json
import math
from typing import Any

from raiox.errors import InvalidInput

MAX_JSON_DEPTH = 32


def check_text(value: str, what: str) -> str:
    """`value` unchanged when PostgreSQL can store it as text; InvalidInput naming `what` otherwise."""
    if "\x00" in value:
        raise InvalidInput(f"{what} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{what} is not valid Unicode (a lone surrogate)") from None
    return value


def check_json(value: Any, what: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`value` unchanged when it is JSON PostgreSQL's jsonb can hold within `max_depth` levels."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise InvalidInput(f"{what} is nested deeper than {max_depth} levels")
        if isinstance(item, str):
            check_text(item, what)
        elif isinstance(item, float) and not math.isfinite(item):
            raise InvalidInput(f"{what} holds NaN or Infinity, which JSON does not have")
        elif isinstance(item, dict):
            for key, child in item.items():
                check_text(str(key), what)
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def load_json(raw: str | bytes, what: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse JSON that Raiox will keep: InvalidInput when it is not JSON, nests too deep, or holds what
    PostgreSQL cannot store (NaN, NUL, lone surrogates)."""
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        raise InvalidInput(f"{what} is nested deeper than {max_depth} levels") from None
    except (UnicodeDecodeError, ValueError):  # JSONDecodeError is a ValueError, so is a NaN
        raise InvalidInput(f"{what} is not valid JSON") from None
    return check_json(value, what, max_depth=max_depth)
