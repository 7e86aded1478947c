"""Reviewers and their sessions: scrypt passwords, sign-in with a database-backed rate limit, signed tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from raiox.adapters.storage import local_signing_key
from raiox.errors import NotAuthenticated, NotConfigured, Throttled
from raiox.repository import reviewers as sql
from raiox.services import Services
from raiox.settings import Settings

log = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")  # the same CHECK as in 0003_reviewers.sql
MIN_PASSWORD_LENGTH = 10
LOCAL_REVIEWER = "local-reviewer"


# Passwords: scrypt from the standard library (no extra dependency in the function's build) -------------

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1  # 16 MiB and ~50 ms per hash


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    return "$".join(["scrypt", str(_SCRYPT_N), str(_SCRYPT_R), str(_SCRYPT_P),
                     base64.b64encode(salt).decode(), base64.b64encode(digest).decode()])


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check against a stored hash, under the parameters it was made with."""
    scheme, n, r, p, salt, digest = stored.split("$")
    if scheme != "scrypt":
        return False
    expected = base64.b64decode(digest)
    actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                            dklen=len(expected))
    return hmac.compare_digest(actual, expected)


@lru_cache(maxsize=1)
def _decoy_hash() -> str:
    """Checked when the name is unknown, so a wrong name costs as long as a wrong password."""
    return hash_password(secrets.token_urlsafe(16))


# Reviewers -------------------------------------------------------------------------------------------


def check_new_reviewer(name: str, password: str) -> None:
    if not NAME_PATTERN.match(name):
        raise ValueError("a reviewer name is 1-64 letters, digits or . _ @ - (starting with a letter or digit)")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"the password needs at least {MIN_PASSWORD_LENGTH} characters")


def add_reviewer(services: Services, name: str, password: str, *, reset: bool = False) -> bool:
    """Create the reviewer; with `reset`, an existing one gets the new password instead (and is enabled).
    Returns whether it was created. Raises ValueError for a bad name or password, or a taken name."""
    check_new_reviewer(name, password)
    password_hash = hash_password(password)
    with services.db.transaction() as conn:
        if sql.add_reviewer(conn, name, password_hash) is not None:
            return True
        if not reset:
            raise ValueError(f"reviewer {name} exists (use --reset to give them a new password)")
        sql.reset_reviewer(conn, name, password_hash)
    return False


def disable_reviewer(services: Services, name: str) -> bool:
    with services.db.transaction() as conn:
        return sql.disable_reviewer(conn, name)


def list_reviewers(services: Services) -> list[sql.ReviewerListing]:
    with services.db.transaction() as conn:
        return sql.list_reviewers(conn)


def ensure_local_reviewer(services: Services) -> tuple[str, str]:
    """For `raiox dev`: the local reviewer with a fresh random password; returns (name, password)."""
    password = secrets.token_urlsafe(12)
    add_reviewer(services, LOCAL_REVIEWER, password, reset=True)
    return LOCAL_REVIEWER, password


# Tokens: HMAC-SHA256 over a JSON payload with an expiry ------------------------------------------------


@dataclass(frozen=True)
class Reviewer:
    id: int
    name: str


def token_key(settings: Settings) -> bytes:
    """REVIEW_TOKEN_SECRET; in dev mode without it, a key derived from the local signing key."""
    if settings.review_token_secret is not None:
        return settings.review_token_secret.get_secret_value().encode()
    if settings.is_dev:
        return hmac.new(local_signing_key(settings), b"raiox review tokens", hashlib.sha256).digest()
    raise NotConfigured("sign-in is not configured: set REVIEW_TOKEN_SECRET")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, b"raiox-review." + payload.encode(), hashlib.sha256).digest())


def _fingerprint(key: bytes, password_hash: str) -> str:
    """Ties a token to the password it was issued under; a new password makes older tokens invalid."""
    return _b64(hmac.new(key, password_hash.encode(), hashlib.sha256).digest()[:12])


def issue_token(key: bytes, reviewer: sql.Account, ttl_seconds: int, *, now: float | None = None) -> tuple[str, int]:
    expires = int(now if now is not None else time.time()) + ttl_seconds
    claims = {"rid": reviewer.id, "sub": reviewer.name, "exp": expires,
              "pwv": _fingerprint(key, reviewer.password_hash), "sep": reviewer.session_epoch}
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{payload}.{_sign(key, payload)}", expires


def authenticate(services: Services, token: str | None) -> Reviewer:
    """The reviewer a bearer token names; 401 when it is missing, forged, expired or no longer valid."""
    key = token_key(services.settings)
    if not token:
        raise NotAuthenticated("sign in first")
    payload, _, signature = token.partition(".")
    if not hmac.compare_digest(_sign(key, payload).encode(), signature.encode()):
        raise NotAuthenticated("the sign-in token is not valid; sign in again")
    claims = json.loads(_unb64(payload))
    if claims["exp"] <= time.time():
        raise NotAuthenticated("the session has expired; sign in again")
    with services.db.transaction() as conn:
        account = sql.reviewer_by_id(conn, claims["rid"])
    if (account is None or account.disabled or claims.get("sep") != account.session_epoch
            or not hmac.compare_digest(claims["pwv"], _fingerprint(key, account.password_hash))):
        raise NotAuthenticated("the sign-in token is no longer valid; sign in again")
    return Reviewer(id=account.id, name=account.name)


def logout(services: Services, reviewer: Reviewer) -> dict[str, Any]:
    """End the reviewer's sessions on the server: every token issued before now stops working, on every
    device (a leaked token included)."""
    with services.db.transaction() as conn:
        sql.end_sessions(conn, reviewer.id)
    log.info("reviewer %s signed out", reviewer.name)
    return {"signed_out": True}


class LoginBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


def throttle_delay(failures: int, free: int, window_seconds: int) -> float:
    """Seconds a client must wait after its last wrong password: none for the first `free` failures, then
    1 s, 2 s, 4 s … doubling, never more than the window."""
    return 0.0 if failures < free else float(min(window_seconds, 2 ** (failures - free)))


def login(services: Services, body: LoginBody, *, client: str = "") -> dict[str, Any]:
    """A token for a right name and password. Every try is counted in the database (so the limits hold across
    function instances) before the password is checked, and forgiven when it was right. Two limits:

    - per name and client address: past REVIEW_LOGIN_MAX_FAILURES, that client waits a growing delay before its
      next try is even checked; another client — the reviewer herself — is not held back by it;
    - per name, across every client: past REVIEW_LOGIN_MAX_FAILURES_PER_NAME within the window, nobody signs in
      under that name until the window has passed. This one relies on no address header, so a guesser who can
      pose as many clients is bounded too.

    scrypt runs after the counting transaction has committed, with no pooled connection held."""
    settings = services.settings
    key = token_key(settings)
    name_key = body.name.strip().lower()
    window = timedelta(seconds=settings.review_login_window_seconds)
    retry_after: int | None = None
    with services.db.transaction() as conn:
        sql.lock_sign_in(conn, name_key)  # parallel tries for one name are counted one after the other
        failures, since = sql.recent_failures(conn, name_key, client, window)
        wait = throttle_delay(failures, settings.review_login_max_failures, settings.review_login_window_seconds)
        name_failures, frees_in = sql.recent_failures_of_name(conn, name_key, window)
        if since < wait:
            retry_after = max(1, math.ceil(wait - since))
            why = f"sign-in for {name_key!r} from {client or '?'} held back: {failures} wrong passwords"
        elif name_failures >= settings.review_login_max_failures_per_name:
            retry_after = max(1, math.ceil(frees_in))
            why = f"sign-in for {name_key!r} held back for every client: {name_failures} wrong passwords"
        else:
            attempt = sql.record_failure(conn, name_key, client, window)  # until the password proves right
            account = sql.reviewer_by_name(conn, body.name.strip())
    if retry_after is not None:
        log.warning("%s", why)
        raise Throttled(f"too many wrong passwords; try again in {retry_after} s", retry_after=retry_after)
    right = verify_password(body.password, account.password_hash if account else _decoy_hash())
    if account is None or not right or account.disabled:
        log.warning("wrong name or password for %r", name_key)
        raise NotAuthenticated("wrong name or password")
    with services.db.transaction() as conn:
        sql.forgive(conn, attempt, name_key, client)
    token, expires = issue_token(key, account, settings.review_token_ttl_seconds)
    log.info("reviewer %s signed in", account.name)
    return {"token": token, "name": account.name, "expires_at": datetime.fromtimestamp(expires, tz=UTC).isoformat()}
