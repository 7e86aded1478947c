"""Domain errors: the kinds of refusal every step raises; only the web edge turns them into HTTP statuses.

A step says *what* went wrong (the request is malformed, the case is not found, the store is down); the
table in `raiox.web.errors` says which status each kind becomes. Messages are written for the caller and
must never carry a secret or a Python object's repr.
"""

from __future__ import annotations


class RaioxError(Exception):
    """A refusal whose message is safe to show the caller. `retry_after`: seconds after which trying
    again may help (throttling, outages)."""

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class InvalidInput(RaioxError):
    """The request's content is malformed: not JSON, a missing or mistyped field, a bad identifier."""


class Unprocessable(RaioxError):
    """Well-formed, but unusable: an image that does not decode, a candidate or implant that does not exist."""


class TooLarge(RaioxError):
    """A body, file or image over its limit."""


class UnsupportedFormat(RaioxError):
    """A body or file in a format Raiox does not take."""


class NotAuthenticated(RaioxError):
    """No credentials, or credentials that are wrong, forged or expired."""


class NotPermitted(RaioxError):
    """Authenticated (or anonymous), but not allowed this: a form not accepted here, a foreign origin."""


class NotFound(RaioxError):
    """The thing asked for does not exist."""


class Conflict(RaioxError):
    """The request contradicts the current state: a case already decided, a delivery still running."""


class Throttled(RaioxError):
    """Too many attempts; `retry_after` says when to try again."""


class NotConfigured(RaioxError):
    """A setting this needs is missing; the message names it."""


class Unavailable(RaioxError):
    """Something Raiox depends on (object storage, the database) cannot be reached right now."""
