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


def make_xray(seed: int, size: tuple[int, int] = (160, 200), fmt: str = "PNG", mode: str = "L") -> bytes:
    """A small synthetic radiograph: noisy dark film with a bright threaded post placed by `seed`."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    width, height = size
    film = rng.normal(60, 12, size=(height, width))
    left = int(rng.integers(width // 6, width // 2))
    post_width = int(rng.integers(width // 8, width // 4))
    top, bottom = int(height * 0.2), int(height * rng.uniform(0.6, 0.9))
    film[top:bottom, left:left + post_width] = 230
    pitch = int(rng.integers(4, 12))
    for y in range(top, bottom, pitch):
        film[y:y + pitch // 2, left - 3:left + post_width + 3] = 200
    pixels = np.clip(film, 0, 255)
    if mode == "I;16":
        image = Image.fromarray((pixels * 64).astype(np.uint16))
    else:
        image = Image.fromarray(pixels.astype(np.uint8), mode="L").convert(mode)
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


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
    from raiox.adapters.encoder import Encoder

    return Encoder.load("raiox-tiny-vit", str(tiny_checkpoint), device="cpu", batch_size=4)


@pytest.fixture
def services(db_url: str, tmp_path: Path, tiny_encoder):  # type: ignore[no-untyped-def]
    """Services on this test's own database and object folder, with the tiny encoder (dev mode)."""
    from raiox.services import Services
    from raiox.settings import Settings

    settings = Settings(database_url=db_url, raiox_home=tmp_path / "home", raiox_env="dev",
                        _env_file=None)
    built = Services(settings, encoder=tiny_encoder)
    yield built
    built.close()


CATALOG_SEEDS = [10, 11, 12, 13, 14]


@pytest.fixture
def catalogued(services, tmp_path: Path):  # type: ignore[no-untyped-def]
    """`services` with a catalog of five implants S10…S14, one reference each (make_xray(seed))."""
    import json

    from raiox.tools.catalog_import import import_manifest

    folder = tmp_path / "refs"
    folder.mkdir()
    rows = []
    for seed in CATALOG_SEEDS:
        (folder / f"{seed}.png").write_bytes(make_xray(seed))
        rows.append({"manufacturer": "Maker", "system": f"S{seed}", "images": [f"refs/{seed}.png"]})
    manifest = tmp_path / "catalog.jsonl"
    manifest.write_text("\n".join(json.dumps(row) for row in rows))
    import_manifest(services, manifest, progress=False)
    return services


def submit_case(services, submission_id: str, images: list[bytes]) -> int:  # type: ignore[no-untyped-def]
    """What intake leaves behind: stored X-rays, the case, its images and an embed job."""
    from raiox.models import JobKind
    from raiox.repository import cases, jobs

    stored = [services.store.put(data, namespace="xrays", extension=".png") for data in images]
    with services.db.transaction() as conn:
        case, _ = cases.create_case(conn, submission_id=submission_id)
        for position, obj in enumerate(stored):
            cases.add_case_image(conn, case_id=case.id, position=position, storage_key=obj.key,
                                 sha256=obj.sha256, size_bytes=obj.size, content_type=obj.content_type)
        jobs.enqueue(conn, JobKind.EMBED, case_id=case.id, max_attempts=services.settings.embed_max_attempts)
    return case.id


def case_state(services, case_id: int) -> dict:  # type: ignore[no-untyped-def]
    from raiox.repository import cases

    with services.db.transaction() as conn:
        case = cases.get_case(conn, case_id)
        results = cases.match_results_of_case(conn, case_id)
        job = conn.execute("SELECT * FROM jobs WHERE case_id = %s AND kind = 'embed' ORDER BY id DESC LIMIT 1",
                           (case_id,)).fetchone()
        images = conn.execute("SELECT status, error FROM case_images WHERE case_id = %s ORDER BY position",
                              (case_id,)).fetchall()
        audit = [r["action"] for r in conn.execute("SELECT action FROM audit_log WHERE case_id = %s ORDER BY id",
                                                   (case_id,))]
    return {"case": case, "results": results, "job": job, "images": images, "audit": audit}


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


REPO = Path(__file__).resolve().parents[1]
_module_numbers = itertools.count(1)


def load_function_main(function: str):  # type: ignore[no-untyped-def]
    """functions/<function>/__main__.py loaded under a unique module name; returns its `main`."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{function}_do_main_{next(_module_numbers)}",
                                                  REPO / "functions" / function / "__main__.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


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
def dev_server(db_url: str, tmp_path: Path, tiny_checkpoint: Path, tiny_encoder,  # type: ignore[no-untyped-def]
               monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """`raiox dev` in a thread on a free port: this test's database, local objects, the tiny encoder.

    Yields (base_url, services); the process-wide services are the dev server's."""
    import threading

    from raiox.services import get_services, reset_services
    from raiox.tools.commands.local import configure_local, free_port
    from raiox.tools.devserver import start_dev_server

    port = free_port()
    for name, value in {"DATABASE_URL": db_url, "RAIOX_HOME": str(tmp_path / "home"),
                        "RAIOX_CLIP_MODEL": "raiox-tiny-vit", "RAIOX_CLIP_PRETRAINED": str(tiny_checkpoint)}.items():
        monkeypatch.setenv(name, value)
    for name in ("RAIOX_ENV", "RAIOX_PUBLIC_URL", "EMBED_URL", "EMBED_TOKEN", "WEBHOOK_TOKEN", "RAIOX_STORAGE"):
        monkeypatch.setenv(name, "")  # records the original, so what configure_local sets is undone too
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    configure_local("127.0.0.1", port)
    services = get_services()
    services._built["encoder"] = tiny_encoder  # same weights the environment names, loaded once per session
    server = start_dev_server(services, "127.0.0.1", port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}", services
    server.shutdown()
    server.server_close()
    reset_services()
