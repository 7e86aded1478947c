"""`raiox deploy check`: template values, empty required settings, the database, a public bucket and embed's
/health are reported before anything is deployed, with a non-zero exit and never a secret in the output."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from click.testing import CliRunner, Result

from raiox.tools.cli import main
from raiox.tools.deploy.manifest import REPO, placeholders, read_manifest
from raiox.tools.local import free_port

SECRETS = {"SPACES_KEY": "test-key", "SPACES_SECRET": "test-secret", "WEBHOOK_TOKEN": "webhook-token-0123456789",
           "EMBED_TOKEN": "embed-token-0123456789", "REVIEW_TOKEN_SECRET": "review-secret-0123456789",
           "NOTIFY_TOKEN": "notify-token-0123456789"}


class _Embed(BaseHTTPRequestHandler):
    """embed's public face: /health answers 200, anything else 404."""

    def do_GET(self) -> None:  # http.server's name
        self.send_response(200 if self.path.endswith("/health") else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def embed_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Embed)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/api/v1/web/raiox/embed"
    server.shutdown()
    server.server_close()


def _s3(endpoint: str) -> object:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test-key",
                        aws_secret_access_key="test-secret", config=Config(s3={"addressing_style": "path"}))


@pytest.fixture
def complete_env(db_url: str, s3_bucket: str, s3_endpoint: str, embed_url: str, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> Path:
    """.env.example filled in the way a lab owner would, against the test's database, moto and an embed stand-in;
    none of its names in the shell (which would win)."""
    for name in placeholders(read_manifest()):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    values = {**SECRETS, "DATABASE_URL": db_url, "RAIOX_STORAGE": f"s3://{s3_bucket}", "SPACES_ENDPOINT": s3_endpoint,
              "SPACES_REGION": "us-east-1", "EMBED_URL": embed_url}
    lines = []
    for line in (REPO / ".env.example").read_text().splitlines():
        name = line.split("=", 1)[0]
        lines.append(f"{name}={values[name]}" if name in values and not line.startswith("#") else line)
    env_file = tmp_path / ".env"
    env_file.write_text("\n".join(lines) + "\n")
    return env_file


def _set(env_file: Path, **values: str) -> None:
    """The env file with these settings' lines replaced."""
    lines = [f"{line.split('=', 1)[0]}={values[line.split('=', 1)[0]]}" if line.split("=", 1)[0] in values else line
             for line in env_file.read_text().splitlines()]
    env_file.write_text("\n".join(lines) + "\n")


def _check(env_file: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["deploy", "check", "--env", str(env_file), *args])


def _assert_no_secret(output: str) -> None:
    for value in SECRETS.values():
        assert value not in output


def test_env_example_as_shipped_is_refused_naming_each_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in placeholders(read_manifest()):
        monkeypatch.delenv(name, raising=False)
    env_file = tmp_path / ".env"
    env_file.write_text((REPO / ".env.example").read_text())
    result = _check(env_file, "--offline")
    assert result.exit_code == 1, result.output
    flagged = {line.split()[1].rstrip(":") for line in result.output.splitlines() if line.startswith("PROBLEM")}
    assert flagged == {"DATABASE_URL", "SPACES_KEY", "SPACES_SECRET", "WEBHOOK_TOKEN", "EMBED_URL", "EMBED_TOKEN",
                       "REVIEW_TOKEN_SECRET", "NOTIFY_TOKEN"}
    assert "ADMIN_ORIGIN" not in result.output  # optional and empty: fine

    env_file.write_text(env_file.read_text().replace("REVIEW_TOKEN_SECRET=CHANGE-ME-long-random",
                                                     "REVIEW_TOKEN_SECRET="))
    result = _check(env_file, "--offline")
    assert "PROBLEM  REVIEW_TOKEN_SECRET: empty or missing" in result.output


def test_a_complete_env_passes(complete_env: Path) -> None:
    result = _check(complete_env)
    assert result.exit_code == 0, result.output
    assert "ok       database: reachable, pgvector" in result.output
    assert "is private" in result.output and "/health answers" in result.output
    _assert_no_secret(result.output)


def test_a_public_bucket_is_refused(complete_env: Path, s3_bucket: str, s3_endpoint: str) -> None:
    client = _s3(s3_endpoint)
    client.put_bucket_acl(Bucket=s3_bucket, ACL="public-read")
    result = _check(complete_env)
    assert result.exit_code == 1 and f"PROBLEM  bucket: {s3_bucket} is public: its ACL grants READ" in result.output

    client.put_bucket_acl(Bucket=s3_bucket, ACL="private")
    client.put_bucket_policy(Bucket=s3_bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{s3_bucket}/*"}]}))
    result = _check(complete_env)
    assert result.exit_code == 1 and "its policy allows anyone to s3:GetObject" in result.output
    _assert_no_secret(result.output)


def test_an_unreachable_database_and_a_silent_embed(complete_env: Path, empty_db_url: str) -> None:
    port = free_port()
    _set(complete_env, DATABASE_URL=f"postgresql://raiox:db-password-0123@127.0.0.1:{port}/raiox",
         EMBED_URL=f"http://127.0.0.1:{port}/")
    result = _check(complete_env)
    assert result.exit_code == 1
    assert "PROBLEM  database: cannot connect to postgresql://raiox:***@127.0.0.1" in result.output
    assert f"PROBLEM  embed: http://127.0.0.1:{port}/health does not answer" in result.output
    assert "db-password-0123" not in result.output
    _assert_no_secret(result.output)

    _set(complete_env, DATABASE_URL=empty_db_url)
    result = _check(complete_env)
    assert result.exit_code == 1 and "pgvector is not installed: run `raiox db migrate`" in result.output


def test_invalid_values_are_named_without_their_value(complete_env: Path) -> None:
    _set(complete_env, RAIOX_STORAGE="ftp://raiox-xrays", NOTIFY_WEBHOOK_URL="https://lab.example.net/hook")
    result = _check(complete_env, "--offline")
    assert result.exit_code == 1
    assert "PROBLEM  webhook settings: RAIOX_STORAGE: RAIOX_STORAGE must start with file:// or s3://" in result.output
    assert "PROBLEM  NOTIFY_WEBHOOK_URL: still an example value" in result.output
    assert "PROBLEM  notify settings: NOTIFY_WEBHOOK_URL needs NOTIFY_WEBHOOK_SECRET" in result.output
    assert "ftp://" not in result.output
