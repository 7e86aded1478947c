"""Shared fixtures: one embedded PostgreSQL + pgvector and one moto S3 server (over HTTP) per test session."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator
from pathlib import Path

import boto3
import psycopg
import pytest
from botocore.config import Config

from raiox import migrations
from raiox.database import Database

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
    import pgserver

_database_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pgserver.PostgresServer]:
    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="delete")
    yield server
    server.cleanup()


def _admin_execute(server: pgserver.PostgresServer, statement: str) -> None:
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute(statement)


@pytest.fixture(scope="session")
def migrated_template(pg_server: pgserver.PostgresServer) -> str:
    """A database migrated once per session; each test gets a fresh copy of it."""
    _admin_execute(pg_server, "CREATE DATABASE raiox_template")
    migrations.migrate(pg_server.get_uri("raiox_template"))
    return "raiox_template"


@pytest.fixture
def empty_db_url(pg_server: pgserver.PostgresServer) -> Iterator[str]:
    """A new database with nothing in it (not even pgvector)."""
    name = f"raiox_empty_{next(_database_numbers)}"
    _admin_execute(pg_server, f"CREATE DATABASE {name}")
    yield pg_server.get_uri(name)
    _admin_execute(pg_server, f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def db_url(pg_server: pgserver.PostgresServer, migrated_template: str) -> Iterator[str]:
    """A freshly migrated database of this test's own."""
    name = f"raiox_test_{next(_database_numbers)}"
    _admin_execute(pg_server, f"CREATE DATABASE {name} TEMPLATE {migrated_template}")
    yield pg_server.get_uri(name)
    _admin_execute(pg_server, f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    with Database(db_url, max_size=8) as database:
        yield database


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server speaking real HTTP on a free loopback port."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


_bucket_numbers = itertools.count(1)


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new private bucket; the SPACES_* environment points at the moto server."""
    bucket = f"raiox-test-{next(_bucket_numbers)}"
    monkeypatch.setenv("SPACES_ENDPOINT", s3_endpoint)
    monkeypatch.setenv("SPACES_REGION", "us-east-1")
    monkeypatch.setenv("SPACES_KEY", "test-key")
    monkeypatch.setenv("SPACES_SECRET", "test-secret")
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test-key",
        aws_secret_access_key="test-secret",
        config=Config(s3={"addressing_style": "path"}),
    )
    client.create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture
def raiox_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated RAIOX_HOME with no inherited Raiox settings."""
    home = tmp_path / "home"
    for name in ("DATABASE_URL", "RAIOX_STORAGE", "RAIOX_SIGNING_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RAIOX_HOME", str(home))
    monkeypatch.chdir(tmp_path)  # no stray .env from the working tree
    return home
