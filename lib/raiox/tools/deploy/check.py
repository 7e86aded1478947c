"""`raiox deploy check`: everything about a .env that would make a deployment fail or leak, found beforehand."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

import psycopg
import requests
from psycopg.rows import dict_row
from pydantic import SecretStr, ValidationError

from raiox.repository import migrations
from raiox.settings import Settings, redact_url
from raiox.tools.deploy.envfile import Resolved, breaks_yaml
from raiox.tools.deploy.manifest import function_settings, manifest_functions, optional_names, placeholders

# Values .env.example ships with, or that only a template would hold: CHANGE-ME…, <functions host>, and the
# example domains of RFC 2606.
_TEMPLATE_VALUE = re.compile(r"change-?me|<[^<>]*>|(^|[/.@])example\.(org|com|net)\b", re.I)
SECRET_NAMES = frozenset(name.upper() for name, field in Settings.model_fields.items()
                         if SecretStr in getattr(field.annotation, "__args__", (field.annotation,)))
_PUBLIC_GRANTEES = ("http://acs.amazonaws.com/groups/global/AllUsers",
                    "http://acs.amazonaws.com/groups/global/AuthenticatedUsers")
NETWORK_TIMEOUT_SECONDS = 8.0


class Verdict(Enum):
    OK = "ok"
    WARNING = "warning"
    PROBLEM = "PROBLEM"


@dataclass(frozen=True)
class Finding:
    verdict: Verdict
    subject: str
    message: str

    def line(self) -> str:
        return f"{self.verdict.value:<8} {self.subject}: {self.message}"


def _problem(subject: str, message: str) -> Finding:
    return Finding(Verdict.PROBLEM, subject, message)


def _ok(subject: str, message: str) -> Finding:
    return Finding(Verdict.OK, subject, message)


def looks_like_template(value: str) -> bool:
    return bool(_TEMPLATE_VALUE.search(value))


def check_values(manifest: dict[str, Any], manifest_text: str, resolved: Resolved) -> list[Finding]:
    """Every placeholder: required ones set, none left as in .env.example, none that would break the manifest's
    YAML; each function's settings valid together; shell variables that override the env file."""
    findings: list[Finding] = []
    optional = optional_names(manifest_text)
    for name in sorted(placeholders(manifest)):
        value = resolved.get(name)
        if not value:
            if name not in optional:
                findings.append(_problem(name, "empty or missing; the deployer stops on it"))
            continue
        if looks_like_template(value):
            findings.append(_problem(name, "still an example value (CHANGE-ME…, <…> or an example.org host, as "
                                           "in .env.example)"))
        elif breaks_yaml(value):
            findings.append(_problem(name, "holds a double quote or a backslash, which breaks the deployed "
                                           "manifest: choose another value"))
        if name in resolved.overridden:
            findings.append(Finding(Verdict.WARNING, name, "set in your shell to another value than the env file's; "
                                                           "the deployer uses the shell's"))
    for function in manifest_functions(manifest):
        findings.extend(_check_function_settings(function.name, function_settings(manifest, function), resolved))
    return findings


def _check_function_settings(function: str, environment: dict[str, str], resolved: Resolved) -> list[Finding]:
    values = {}
    for name, template in environment.items():
        value = re.sub(r"\$\{([A-Z0-9_]+)\}", lambda m: resolved.get(m.group(1)), str(template))
        if value:
            values[name.lower()] = value
    try:
        settings = Settings.given(**values)
    except ValidationError as exc:  # each wrong field by name; pydantic's own text would quote the value
        return [_problem(f"{function} settings", f"{'.'.join(map(str, error['loc'])).upper()}: "
                                                 f"{error['msg'].removeprefix('Value error, ')}")
                for error in exc.errors(include_input=False)]
    findings = []
    if "raiox_storage" in values and not settings.storage_url.startswith("s3://"):
        findings.append(_problem(f"{function} settings", "RAIOX_STORAGE must be s3://<bucket> for a function"))
    if settings.notify_webhook_url and settings.notify_webhook_secret is None and function == "notify":
        findings.append(_problem(f"{function} settings", "NOTIFY_WEBHOOK_URL needs NOTIFY_WEBHOOK_SECRET"))
    return findings


def check_database(database_url: str) -> list[Finding]:
    try:
        with psycopg.connect(database_url, connect_timeout=int(NETWORK_TIMEOUT_SECONDS),
                             row_factory=dict_row) as connection:
            pgvector = migrations.server_info(connection).pgvector
    except psycopg.Error as exc:
        return [_problem("database", f"cannot connect to {redact_url(database_url)} "
                                     f"({type(exc).__name__}: {_first_line(exc)})")]
    if pgvector is None:
        return [_problem("database", "reachable, but pgvector is not installed: run `raiox db migrate` with "
                                     "this DATABASE_URL")]
    return [_ok("database", f"reachable, pgvector {pgvector}")]


def check_bucket(storage_url: str, endpoint: str | None, region: str, key: str, secret: str) -> list[Finding]:
    """The bucket answers with these credentials, and neither its ACL nor its policy lets anyone read it."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    parts = urlsplit(storage_url)
    bucket = parts.netloc
    host = (urlsplit(endpoint).hostname or "") if endpoint else ""
    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name=region, aws_access_key_id=key, aws_secret_access_key=secret,
        config=Config(s3={"addressing_style": "virtual" if host.endswith("digitaloceanspaces.com") else "path"},
                      connect_timeout=NETWORK_TIMEOUT_SECONDS, read_timeout=NETWORK_TIMEOUT_SECONDS,
                      retries={"max_attempts": 1}))
    findings = []
    try:
        acl = client.get_bucket_acl(Bucket=bucket)
        public_grants = [grant["Permission"] for grant in acl.get("Grants", [])
                         if grant.get("Grantee", {}).get("URI") in _PUBLIC_GRANTEES]
        if public_grants:
            findings.append(_problem("bucket", f"{bucket} is public: its ACL grants {', '.join(public_grants)} to "
                                               "everyone; make it private (X-rays are medical data)"))
        try:
            policy = json.loads(client.get_bucket_policy(Bucket=bucket)["Policy"])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("NoSuchBucketPolicy", "NotImplemented"):
                raise
            policy = {}
        if _public_statements(policy):
            findings.append(_problem("bucket", f"{bucket} is public: its policy allows anyone to "
                                               f"{', '.join(_public_statements(policy))}; remove that statement"))
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        return [_problem("bucket", f"cannot read {bucket}'s ACL with SPACES_KEY/SPACES_SECRET ({code})")]
    except BotoCoreError as exc:
        return [_problem("bucket", f"cannot reach {endpoint or 'the S3 endpoint'} ({type(exc).__name__})")]
    return findings or [_ok("bucket", f"{bucket} answers and is private (no public ACL grant or policy)")]


def _public_statements(policy: dict[str, Any]) -> list[str]:
    statements = policy.get("Statement", [])
    actions: list[str] = []
    for statement in statements if isinstance(statements, list) else [statements]:
        principal = statement.get("Principal")
        everyone = principal == "*" or (isinstance(principal, dict) and "*" in _as_list(principal.get("AWS")))
        if statement.get("Effect") == "Allow" and everyone:
            actions.extend(_as_list(statement.get("Action")))
    return actions


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def check_embed(embed_url: str) -> list[Finding]:
    health = embed_url.rstrip("/") + "/health"
    where = urlsplit(health)._replace(query="", fragment="").geturl()
    try:
        answer = requests.get(health, timeout=NETWORK_TIMEOUT_SECONDS, allow_redirects=False)
    except requests.RequestException as exc:
        return [_problem("embed", f"{where} does not answer ({type(exc).__name__})")]
    if answer.status_code != 200:
        return [_problem("embed", f"{where} answered HTTP {answer.status_code}, not 200")]
    return [_ok("embed", f"{where} answers")]


def check_services(resolved: Resolved) -> list[Finding]:
    """The database, the bucket and the embed container, each when its settings are filled in."""
    usable = {name: value for name, value in resolved.values.items() if value and not looks_like_template(value)}
    findings: list[Finding] = []
    if "DATABASE_URL" in usable:
        findings += check_database(usable["DATABASE_URL"])
    if usable.get("RAIOX_STORAGE", "").startswith("s3://") and {"SPACES_KEY", "SPACES_SECRET"} <= set(usable):
        findings += check_bucket(usable["RAIOX_STORAGE"], usable.get("SPACES_ENDPOINT"),
                                 usable.get("SPACES_REGION") or "us-east-1", usable["SPACES_KEY"],
                                 usable["SPACES_SECRET"])
    if "EMBED_URL" in usable:
        findings += check_embed(usable["EMBED_URL"])
    return findings


def secrets_of(resolved: Resolved) -> list[str]:
    """Values never to print: every secret setting, and the password inside DATABASE_URL."""
    values = [resolved.get(name) for name in SECRET_NAMES]
    database_password = urlsplit(resolved.get("DATABASE_URL")).password if resolved.get("DATABASE_URL") else None
    return [value for value in [*values, database_password or ""] if len(value) >= 4 and not looks_like_template(value)]


def scrub(line: str, secrets: list[str]) -> str:
    """The line with any secret value replaced by ***, whatever a library put into an error message."""
    for secret in sorted(secrets, key=len, reverse=True):
        line = line.replace(secret, "***")
    return line


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0]
