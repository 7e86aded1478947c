"""`raiox deploy smoke` against a stand-in for a deployed namespace and embed: the URLs it asks, the tokens it signs
with, what it calls a problem (a part down, a token not enforced, a function missing), and no secret in its output."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner

from raiox.tools.cli import main
from raiox.tools.deploy.check import Verdict
from raiox.tools.deploy.manifest import REPO
from raiox.tools.deploy.smoke import smoke

WEBHOOK_TOKEN, EMBED_TOKEN = "webhook-token-0123456789", "embed-token-0123456789"


class Namespace:
    """/api/v1/web/fn-test/raiox/<function>/health and /embed/health, answering as the deployed handlers do."""

    def __init__(self) -> None:
        self.database = "ok"
        self.enforce_tokens = True
        self.missing: set[str] = set()
        self.seen: list[tuple[str, dict[str, list[str]], str]] = []
        namespace = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                namespace.seen.append((url.path, query, self.headers.get("Authorization", "")))
                parts = url.path.strip("/").split("/")
                name = "embed" if parts[0] == "embed" else parts[-2]
                status, body = 200, {"status": "ok"}
                if name in namespace.missing:
                    status, body = 404, {"error": "The requested resource does not exist."}
                elif query.get("deep") == ["1"]:
                    signed = (query.get("token") == [WEBHOOK_TOKEN] if name != "embed"
                              else self.headers.get("Authorization") == f"Bearer {EMBED_TOKEN}")
                    if not signed and namespace.enforce_tokens:
                        status, body = 401, {"error": "missing or wrong token"}
                    else:
                        healthy = namespace.database == "ok"
                        status = 200 if healthy else 503
                        body = {"status": "ok" if healthy else "degraded", "database": namespace.database,
                                "storage": "ok"}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_port}"


@pytest.fixture
def namespace() -> Iterator[Namespace]:
    served = Namespace()
    yield served
    served.server.shutdown()
    served.server.server_close()


def _values(namespace: Namespace) -> dict[str, str]:
    return {"WEBHOOK_TOKEN": WEBHOOK_TOKEN, "EMBED_TOKEN": EMBED_TOKEN, "EMBED_URL": f"{namespace.base}/embed"}


def _run(namespace: Namespace) -> dict[str, Verdict]:
    findings = smoke(f"{namespace.base}/api/v1/web/fn-test/raiox", _values(namespace), attempts=2, pause=0.01,
                     timeout=5, require_https=False)
    return {finding.subject: finding.verdict for finding in findings}


def test_a_healthy_deployment_passes_with_signed_calls(namespace: Namespace) -> None:
    verdicts = _run(namespace)
    assert set(verdicts.values()) == {Verdict.OK} and len(verdicts) == 7, verdicts
    paths = [path for path, _, _ in namespace.seen]
    assert {f"/api/v1/web/fn-test/raiox/{name}/health" for name in ("webhook", "approve", "notify")} <= set(paths)
    assert ("/embed/health", {"deep": ["1"]}, f"Bearer {EMBED_TOKEN}") in namespace.seen
    assert any(query.get("token") == [WEBHOOK_TOKEN] for _, query, _ in namespace.seen)


@pytest.mark.parametrize(("fault", "subject"), [
    ("database down", "webhook deep health (signed: database and object storage)"),
    ("token not enforced", "webhook deep health without the token is refused"),
    ("notify not deployed", "notify /health"),
])
def test_each_fault_is_a_problem(namespace: Namespace, fault: str, subject: str) -> None:
    if fault == "database down":
        namespace.database = "down"
    elif fault == "token not enforced":
        namespace.enforce_tokens = False
    else:
        namespace.missing.add("notify")
    verdicts = _run(namespace)
    assert verdicts[subject] is Verdict.PROBLEM, verdicts
    assert sum(v is Verdict.PROBLEM for v in verdicts.values()) >= 1


def test_the_command_refuses_plain_http_and_prints_no_secret(namespace: Namespace, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text((REPO / ".env.example").read_text().replace("EMBED_TOKEN=CHANGE-ME-long-random",
                                                                    f"EMBED_TOKEN={EMBED_TOKEN}"))
    monkeypatch.delenv("EMBED_TOKEN", raising=False)
    result = CliRunner().invoke(main, ["deploy", "smoke", "--env", str(env_file), "--attempts", "1",
                                       "--functions-url", f"{namespace.base}/api/v1/web/fn-test/raiox"])
    assert result.exit_code == 1 and "must be https://" in result.output, result.output
    assert EMBED_TOKEN not in result.output
