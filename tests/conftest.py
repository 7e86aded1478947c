"""Shared fixtures: one embedded PostgreSQL + pgvector and one moto S3 server (over HTTP) per test session."""

from __future__ import annotations

import itertools
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import boto3
import psycopg
import pytest
from botocore.config import Config

from raiox import migrations
from raiox.database import Database
from support import CATALOG_SEEDS, REPO, make_xray

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
    import pgserver

_database_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[pgserver.PostgresServer]:
    # Its own temp folder, not pytest's: pytest prunes old basetemp folders, even of a run still going.
    server = pgserver.get_server(Path(tempfile.mkdtemp(prefix="raiox-test-pg-")), cleanup_mode="delete")
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


# Embed fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of the tiny test architecture, random init with a fixed seed, written by the test run."""
    import open_clip
    import torch

    from raiox.adapters.encoder import _register_model_configs

    _register_model_configs()
    torch.manual_seed(1234)
    model = open_clip.create_model("raiox-tiny-vit")
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_encoder(tiny_checkpoint: Path):  # type: ignore[no-untyped-def]
    """The identifier with the tiny open_clip architecture embedding the crops (what RAIOX_CLIP_MODEL=raiox-tiny-vit
    and RAIOX_CLIP_PRETRAINED=<tiny checkpoint> load in a subprocess): fast, random weights, the open_clip path."""
    from raiox.shape.identifier import ShapeIdentifier

    return ShapeIdentifier.load("raiox-tiny-vit", str(tiny_checkpoint), device="cpu", batch_size=4)


@pytest.fixture
def services(db_url: str, tmp_path: Path, tiny_encoder):  # type: ignore[no-untyped-def]
    """Services on this test's own database and object folder, with the tiny encoder (dev mode)."""
    from raiox.services import Services
    from raiox.settings import Settings

    settings = Settings.given(database_url=db_url, raiox_home=tmp_path / "home", raiox_env="dev")
    with Services(settings, encoder=tiny_encoder) as built:
        yield built


@pytest.fixture
def catalogued(services, tmp_path: Path):  # type: ignore[no-untyped-def]
    """`services` with a catalog of five implants S10…S14, one reference each (make_xray(seed))."""
    from raiox.tools.catalog import ReferenceSystem, import_manifest, write_catalog

    catalog = [ReferenceSystem("Maker", f"S{seed}", [make_xray(seed)]) for seed in CATALOG_SEEDS]
    import_manifest(services, write_catalog(tmp_path / "refs", catalog), progress=False)
    return services


# Function entry points --------------------------------------------------------------------------


@pytest.fixture
def process_services(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """Configure the process-wide services (what the function entry files use) through the environment:
    this test's database and home plus `env`, with `unset` names (and RAIOX_STORAGE unless given) removed.
    Returns `configure(env, unset=()) -> Services`; everything is reset afterwards."""
    from raiox.services import get_services, reset_services

    def configure(env: dict[str, str], unset: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
        for name in ("RAIOX_STORAGE", *unset):
            monkeypatch.delenv(name, raising=False)
        for name, value in {"DATABASE_URL": db_url, "RAIOX_HOME": str(tmp_path / "home"), **env}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(tmp_path)
        reset_services()
        return get_services()

    yield configure
    reset_services()


@pytest.fixture
def serve_function(monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """Serve functions/<function>/<function>_http.py through functions-framework on a free loopback port."""
    import threading

    import functions_framework
    from werkzeug.serving import make_server

    servers = []

    def serve(function: str) -> str:
        # create_app writes these into os.environ; setting them first lets monkeypatch restore them.
        monkeypatch.setenv("FUNCTION_TARGET", function)
        monkeypatch.setenv("FUNCTION_SIGNATURE_TYPE", "http")
        app = functions_framework.create_app(
            target=function, source=str(REPO / "functions" / function / f"{function}_http.py"))
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield serve
    for server in servers:
        server.shutdown()


@pytest.fixture
def dev_server(db_url: str, tmp_path: Path, tiny_checkpoint: Path, tiny_encoder) -> Iterator:  # type: ignore[no-untyped-def]
    """`raiox dev` in a thread on a free port: this test's database, local objects, the tiny encoder.

    Yields (base_url, services), the dev server's services."""
    import threading

    from raiox.services import Services
    from raiox.settings import Settings
    from raiox.tools.devserver import start_dev_server
    from raiox.tools.local import free_port, one_port

    port = free_port()
    settings = one_port(Settings.given(database_url=db_url, raiox_home=tmp_path / "home",
                                       raiox_clip_model="raiox-tiny-vit",
                                       raiox_clip_pretrained=str(tiny_checkpoint)), "127.0.0.1", port)
    with Services(settings, encoder=tiny_encoder) as services:  # the weights it names, loaded once per session
        server = start_dev_server(services, "127.0.0.1", port)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        yield f"http://127.0.0.1:{port}", services
        server.shutdown()
        server.server_close()


@pytest.fixture
def tls_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """fakes.tls_file_server for one test: (server, the prod FetchPolicy that reaches it)."""
    from fakes import tls_file_server

    with tls_file_server(tmp_path, monkeypatch) as served:
        yield served
