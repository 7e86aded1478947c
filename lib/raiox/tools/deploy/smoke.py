"""`raiox deploy smoke`: after `doctl serverless deploy`, ask what was deployed whether it answers: each function's and
embed's /health, then signed calls that change nothing (the webhook's and embed's deep health, which reach the
database and object storage with the deployed settings and tokens), and one unsigned deep health that must be
refused. No value of a secret is ever printed."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests

from raiox.tools.deploy.check import Finding, Verdict

FUNCTIONS = ("webhook", "approve", "notify")


@dataclass(frozen=True)
class Probe:
    subject: str
    method: str
    url: str
    expect: int
    headers: Mapping[str, str]
    params: Mapping[str, str]
    healthy: Callable[[Any], bool] = lambda body: True


def probes(functions_url: str, values: Mapping[str, str]) -> list[Probe]:
    """functions_url: the web address of the package, `https://<host>/api/v1/web/<namespace>/raiox`."""
    base = functions_url.rstrip("/")
    embed = (values.get("EMBED_URL") or "").rstrip("/")
    every_part_ok: Callable[[Any], bool] = lambda body: (
        isinstance(body, dict) and body.get("status") == "ok" and all(
            value == "ok" for key, value in body.items() if key != "status"))
    found = [Probe(f"{name} /health", "GET", f"{base}/{name}/health", 200, {}, {}) for name in FUNCTIONS]
    found += [
        Probe("webhook deep health (signed: database and object storage)", "GET", f"{base}/webhook/health", 200, {},
              {"deep": "1", "token": values.get("WEBHOOK_TOKEN", "")}, every_part_ok),
        Probe("webhook deep health without the token is refused", "GET", f"{base}/webhook/health", 401, {},
              {"deep": "1"}),
    ]
    if embed:
        found += [
            Probe("embed /health", "GET", f"{embed}/health", 200, {}, {}),
            Probe("embed deep health (signed)", "GET", f"{embed}/health", 200,
                  {"Authorization": f"Bearer {values.get('EMBED_TOKEN', '')}"}, {"deep": "1"}, every_part_ok),
        ]
    return found


def run(probe: Probe, session: requests.Session, *, attempts: int, pause: float, timeout: float) -> Finding:
    """One probe, tried up to `attempts` times (a function just deployed, a pod just started, may answer late)."""
    problem = ""
    for attempt in range(attempts):
        if attempt:
            time.sleep(pause)
        try:
            answer = session.request(probe.method, probe.url, headers=dict(probe.headers), params=dict(probe.params),
                                     timeout=timeout, allow_redirects=False)
        except requests.RequestException as exc:
            problem = f"no answer ({type(exc).__name__})"
            continue
        try:
            body = answer.json()
        except ValueError:
            body = None
        if answer.status_code == probe.expect and (probe.expect != 200 or probe.healthy(body)):
            return Finding(Verdict.OK, probe.subject, f"{answer.status_code}")
        problem = f"answered {answer.status_code}, expected {probe.expect}" + (
            f": {body}" if isinstance(body, dict) else "")
    return Finding(Verdict.PROBLEM, probe.subject, problem)


def smoke(functions_url: str, values: Mapping[str, str], *, attempts: int = 5, pause: float = 6.0,
          timeout: float = 30.0, require_https: bool = True) -> list[Finding]:
    if require_https and not functions_url.startswith("https://"):
        return [Finding(Verdict.PROBLEM, "functions URL", "must be https://<host>/api/v1/web/<namespace>/raiox")]
    findings = []
    with requests.Session() as session:
        for probe in probes(functions_url, values):
            findings.append(run(probe, session, attempts=attempts, pause=pause, timeout=timeout))
    if not values.get("EMBED_URL"):
        findings.append(Finding(Verdict.PROBLEM, "embed", "EMBED_URL is not set: nothing would embed the X-rays"))
    return findings
