"""Review: reviewers and their sign-in, case lists and details, decisions (with learning and notify), delivery."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from raiox.adapters.storage import local_signing_key
from raiox.embed.matching import is_low_confidence
from raiox.jobloop import poke
from raiox.models import CaseStatus, JobKind, JobStatus
from raiox.repository import cases, catalog, jobs
from raiox.repository import review as sql
from raiox.services import Services
from raiox.settings import Settings

log = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")  # the same CHECK as in 0003_reviewers.sql
MIN_PASSWORD_LENGTH = 10
DECIDED = [CaseStatus.APPROVED, CaseStatus.REJECTED, CaseStatus.NOTIFIED]
LOCAL_REVIEWER = "local-reviewer"


class ReviewError(Exception):
    """A refusal meant for the caller, with its HTTP status (and Retry-After seconds for 429)."""

    def __init__(self, status: int, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


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


def list_reviewers(services: Services) -> list[dict[str, Any]]:
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
    if settings.raiox_env == "dev":
        return hmac.new(local_signing_key(settings), b"raiox review tokens", hashlib.sha256).digest()
    raise ReviewError(503, "sign-in is not configured: set REVIEW_TOKEN_SECRET")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, b"raiox-review." + payload.encode(), hashlib.sha256).digest())


def _fingerprint(key: bytes, password_hash: str) -> str:
    """Ties a token to the password it was issued under; a new password makes older tokens invalid."""
    return _b64(hmac.new(key, password_hash.encode(), hashlib.sha256).digest()[:12])


def issue_token(key: bytes, reviewer: dict[str, Any], ttl_seconds: int, *, now: float | None = None) -> tuple[str, int]:
    expires = int(now if now is not None else time.time()) + ttl_seconds
    claims = {"rid": reviewer["id"], "sub": reviewer["name"], "exp": expires,
              "pwv": _fingerprint(key, reviewer["password_hash"])}
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{payload}.{_sign(key, payload)}", expires


def authenticate(services: Services, token: str | None) -> Reviewer:
    """The reviewer a bearer token names; 401 when it is missing, forged, expired or no longer valid."""
    key = token_key(services.settings)
    if not token:
        raise ReviewError(401, "sign in first")
    payload, _, signature = token.partition(".")
    if not hmac.compare_digest(_sign(key, payload).encode(), signature.encode()):
        raise ReviewError(401, "the sign-in token is not valid; sign in again")
    claims = json.loads(_unb64(payload))
    if claims["exp"] <= time.time():
        raise ReviewError(401, "the session has expired; sign in again")
    with services.db.transaction() as conn:
        row = sql.reviewer_by_id(conn, claims["rid"])
    if row is None or row["disabled"] or not hmac.compare_digest(
            claims["pwv"], _fingerprint(key, row["password_hash"])):
        raise ReviewError(401, "the sign-in token is no longer valid; sign in again")
    return Reviewer(id=row["id"], name=row["name"])


class LoginBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


def login(services: Services, body: LoginBody) -> dict[str, Any]:
    """A token for a right name and password. Wrong ones are counted per name (known or not) in the
    database; past REVIEW_LOGIN_MAX_FAILURES within the window every attempt, even a right one, gets 429."""
    settings = services.settings
    key = token_key(settings)
    name_key = body.name.strip().lower()
    window = timedelta(seconds=settings.review_login_window_seconds)
    with services.db.transaction() as conn:
        sql.lock_sign_in(conn, name_key)
        failures, retry_after = sql.recent_failures(conn, name_key, window)
        limited = failures >= settings.review_login_max_failures
        reviewer = None
        if not limited:
            row = sql.reviewer_by_name(conn, body.name.strip())
            right = verify_password(body.password, row["password_hash"] if row else _decoy_hash())
            if row is not None and right and not row["disabled"]:
                reviewer = row
                sql.clear_failures(conn, name_key)
            else:
                sql.record_failure(conn, name_key, window)
    if limited:
        log.warning("sign-in for %r refused: %d wrong passwords within %s", name_key, failures, window)
        raise ReviewError(429, f"too many wrong passwords; try again in {_minutes(retry_after)}",
                          retry_after=retry_after)
    if reviewer is None:
        log.warning("wrong name or password for %r", name_key)
        raise ReviewError(401, "wrong name or password")
    token, expires = issue_token(key, reviewer, settings.review_token_ttl_seconds)
    log.info("reviewer %s signed in", reviewer["name"])
    return {"token": token, "name": reviewer["name"], "expires_at": _iso(datetime.fromtimestamp(expires, tz=UTC))}


def _minutes(seconds: int) -> str:
    minutes = max(1, -(-seconds // 60))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


# Lists, details, catalog ---------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def parse_statuses(text: str) -> list[str]:
    """`ready`, `decided` (approved, rejected, notified) or a comma-separated list of case statuses."""
    if text.strip() == "decided":
        return [str(status) for status in DECIDED]
    statuses = [part.strip() for part in text.split(",") if part.strip()]
    known = {str(status) for status in CaseStatus}
    unknown = [status for status in statuses if status not in known]
    if unknown or not statuses:
        raise ReviewError(400, f"status must be `decided` or any of {', '.join(sorted(known))}")
    return statuses


def delivery_state(case_status: str, job: dict[str, Any] | None) -> dict[str, Any] | None:
    """Where the answer to the submitter is: none (not decided), queued, sending, retrying, delivered, failed."""
    if case_status not in {str(status) for status in DECIDED}:
        return None
    if case_status == CaseStatus.NOTIFIED:
        state = "delivered"
    elif job is None:
        state = "none"
    else:
        state = {JobStatus.PENDING: "retrying" if job["attempts"] else "queued", JobStatus.RUNNING: "sending",
                 JobStatus.DONE: "delivered", JobStatus.FAILED: "failed"}[JobStatus(job["status"])]
    return {
        "state": state,
        "attempts": job["attempts"] if job else 0,
        "max_attempts": job["max_attempts"] if job else None,
        "last_error": job["last_error"] if job and state != "delivered" else None,
        "updated_at": _iso(job["updated_at"]) if job else None,
    }


def _decision_view(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None or row.get("decision") is None:
        return None
    return {
        "decision": row["decision"],
        "implant_id": row.get("implant_id"),
        "manufacturer": row.get("manufacturer"),
        "system": row.get("system"),
        "chosen_rank": row["chosen_rank"],
        "reviewer": row["reviewer"],
        "reason": row["reason"],
        "note": row.get("note"),
        "decided_at": _iso(row["decided_at"]),
    }


def list_cases(services: Services, statuses: list[str], *, page: int, per_page: int) -> dict[str, Any]:
    with services.db.transaction() as conn:
        counts = sql.status_counts(conn)
        rows = sql.list_cases(conn, statuses, limit=per_page, offset=(page - 1) * per_page)
        deliveries = sql.latest_notify_jobs(conn, [row["id"] for row in rows])
    items = []
    for row in rows:
        top = None
        if row["top_system"] is not None:
            top = {"manufacturer": row["top_manufacturer"], "system": row["top_system"],
                   "similarity": round(float(row["top_similarity"]), 4)}
        decided = _decision_view({**row, "manufacturer": row["decided_manufacturer"],
                                  "system": row["decided_system"]})
        items.append({
            "id": row["id"], "submission_id": row["submission_id"], "submitter_name": row["submitter_name"],
            "client_id": row["client_id"], "status": row["status"], "error": row["error"],
            "created_at": _iso(row["created_at"]), "images": row["images"], "top": top, "decision": decided,
            "delivery": delivery_state(row["status"], deliveries.get(row["id"])),
        })
    return {
        "statuses": statuses, "page": page, "per_page": per_page,
        "total": sum(counts.get(status, 0) for status in statuses),
        "counts": {str(status): counts.get(status, 0) for status in CaseStatus},
        "cases": items,
    }


def case_detail(services: Services, case_id: int) -> dict[str, Any]:
    """The case, its X-rays and each one's candidates as expiring URLs, its decision and delivery."""
    with services.db.transaction() as conn:
        case = sql.case_row(conn, case_id)
        if case is None:
            raise ReviewError(404, f"there is no case {case_id}")
        images = sql.case_images(conn, case_id)
        ranked = sql.candidates(conn, case_id)
        decided = sql.decision(conn, case_id)
        delivery = sql.latest_notify_jobs(conn, [case_id]).get(case_id)
    expiry = services.settings.raiox_url_expiry_seconds
    store = services.store
    by_image: dict[int, list[dict[str, Any]]] = {}
    for row in ranked:
        key = row["reference_storage_key"]
        by_image.setdefault(row["case_image_id"], []).append({
            "rank": row["rank"], "implant_id": row["implant_id"], "manufacturer": row["manufacturer"],
            "system": row["system"], "similarity": round(float(row["similarity"]), 4),
            "reference_image_id": row["reference_image_id"],
            "reference_url": store.presigned_url(key, expiry) if key else None,
        })
    return {
        "case": {
            "id": case["id"], "submission_id": case["submission_id"], "submitter_name": case["submitter_name"],
            "submitter_email": case["submitter_email"], "client_id": case["client_id"], "status": case["status"],
            "error": case["error"], "created_at": _iso(case["created_at"]),
            "notified_at": _iso(case["notified_at"]),
        },
        "images": [{
            "id": image["id"], "position": image["position"], "status": image["status"], "error": image["error"],
            "width": image["width"], "height": image["height"],
            "url": store.presigned_url(image["storage_key"], expiry) if image["storage_key"] else None,
            "candidates": by_image.get(image["id"], []),
            "low_confidence": bool(by_image.get(image["id"])) and is_low_confidence(
                [c["similarity"] for c in by_image[image["id"]]], services.settings),
        } for image in images],
        "decision": _decision_view(decided),
        "delivery": delivery_state(case["status"], delivery),
        "url_expires_in": expiry,
    }


def search_catalog(services: Services, query: str, *, limit: int = 25) -> list[dict[str, Any]]:
    """Implant systems whose manufacturer and system together contain every word of the query."""
    with services.db.transaction() as conn:
        rows = sql.search_implants(conn, query.split()[:8], limit=limit)
    return [dict(row) for row in rows]


# Decisions -------------------------------------------------------------------------------------------


class DecisionBody(BaseModel):
    """approve with a candidate's `rank` (of `image_id`, default the first X-ray) or an `implant_id` from
    the catalog (override); or reject with a `reason`. A `note` is optional."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    action: Literal["approve", "reject"]
    rank: int | None = Field(default=None, ge=1, le=20)
    implant_id: int | None = Field(default=None, ge=1)
    image_id: int | None = Field(default=None, ge=1)
    reason: str | None = Field(default=None, max_length=2000)
    note: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _consistent(self) -> DecisionBody:
        if self.action == "approve" and (self.rank is None) == (self.implant_id is None):
            raise ValueError("approve needs exactly one of `rank` (a candidate) or `implant_id` (an override)")
        if self.action == "reject":
            if self.rank is not None or self.implant_id is not None:
                raise ValueError("reject takes a `reason`, not a `rank` or `implant_id`")
            if not self.reason:
                raise ValueError("reject needs a `reason`")
        return self


def decide(services: Services, reviewer: Reviewer, case_id: int, body: DecisionBody) -> dict[str, Any]:
    """Record the decision in one transaction: decision row, case status, audit row, new references
    (learning), notify job. The case row is locked first, so of two deciders the second sees the first's
    decision and gets 409. After the commit, notify is poked."""
    settings = services.settings
    with services.db.transaction() as conn:
        case = sql.case_row(conn, case_id, lock=True)
        if case is None:
            raise ReviewError(404, f"there is no case {case_id}")
        if case["status"] != CaseStatus.READY:
            earlier = sql.decision(conn, case_id)
            if earlier is not None:
                raise ReviewError(409, f"case {case_id} was already {earlier['decision']} by {earlier['reviewer']}")
            raise ReviewError(409, f"case {case_id} is {case['status']}; only ready cases can be decided")
        implant_id = body.implant_id
        if body.action == "approve" and body.rank is not None:
            chosen = sql.candidate_at_rank(conn, case_id, body.rank, body.image_id)
            if chosen is None:
                raise ReviewError(422, f"case {case_id} has no candidate of rank {body.rank}"
                                       + (f" for image {body.image_id}" if body.image_id else ""))
            implant_id = chosen["implant_id"]
        elif implant_id is not None and not sql.implant_exists(conn, implant_id):
            raise ReviewError(422, f"there is no implant {implant_id} in the catalog")
        outcome = CaseStatus.APPROVED if body.action == "approve" else CaseStatus.REJECTED
        row = sql.insert_decision(conn, case_id=case_id, decision=outcome, implant_id=implant_id,
                                  chosen_rank=body.rank, reviewer=reviewer.name, reason=body.reason,
                                  note=body.note)
        new_status = cases.set_case_status(conn, case_id, outcome).status
        learned = []
        if outcome == CaseStatus.APPROVED and settings.learn_from_approvals:
            for image in sql.embedded_images(conn, case_id):
                reference_id, created = catalog.add_reference_image(
                    conn, implant_id=implant_id, storage_key=image["storage_key"], sha256=image["sha256"],
                    model_id=image["model_id"], embedding=image["embedding"], source="approved_case",
                    source_case_id=case_id)
                if created:
                    learned.append(reference_id)
        job = jobs.enqueue(conn, JobKind.NOTIFY, case_id=case_id, payload={"decision_id": row["id"]},
                           max_attempts=services.settings.notify_max_attempts)
        cases.record_audit(conn, actor=reviewer.name, action=f"case.{outcome}", case_id=case_id, details={
            "implant_id": implant_id, "rank": body.rank, "override": body.action == "approve" and body.rank is None,
            "reason": body.reason, "note": body.note, "reference_images_added": learned, "notify_job_id": job.id,
        })
    log.info("case %d %s by %s (implant %s, %d new reference(s))", case_id, outcome, reviewer.name, implant_id,
             len(learned))
    poke_notify(settings, case_id)
    return {"case_id": case_id, "status": new_status, "decision_id": row["id"],
            "decided_at": _iso(row["decided_at"]), "implant_id": implant_id,
            "reference_images_added": len(learned), "notify_job_id": job.id}


def redeliver(services: Services, reviewer: Reviewer, case_id: int) -> dict[str, Any]:
    """Queue a new notify job for a decided case whose last delivery failed for good; then poke notify."""
    with services.db.transaction() as conn:
        case = sql.case_row(conn, case_id, lock=True)
        if case is None:
            raise ReviewError(404, f"there is no case {case_id}")
        state = delivery_state(case["status"], sql.latest_notify_jobs(conn, [case_id]).get(case_id))
        if state is None:
            raise ReviewError(409, f"case {case_id} is {case['status']}: nothing is delivered before a decision")
        if state["state"] != "failed":
            raise ReviewError(409, f"the delivery of case {case_id} is {state['state']}; only a failed one is retried")
        job = jobs.enqueue(conn, JobKind.NOTIFY, case_id=case_id, payload={"redelivery": True},
                           max_attempts=services.settings.notify_max_attempts)
        cases.record_audit(conn, actor=reviewer.name, action="case.redeliver", case_id=case_id,
                           details={"notify_job_id": job.id})
    log.info("case %d: delivery queued again by %s (job %d)", case_id, reviewer.name, job.id)
    poke_notify(services.settings, case_id)
    return {"case_id": case_id, "notify_job_id": job.id, "delivery": "queued"}


def poke_notify(settings: Settings, case_id: int) -> threading.Thread | None:
    """Ask notify to deliver now, in the background; if this fails the job still waits in the table."""
    return poke(settings.notify_url, settings.notify_token, {"case_id": case_id},
                what=f"notify poke for case {case_id}")
