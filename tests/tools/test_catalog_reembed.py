"""`raiox catalog reembed`: a model change that resumes where it stopped, leaves the old model answering,
picks up references that arrive meanwhile, skips what cannot be read, and ends with the new model's index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from raiox.adapters.encoder import random_checkpoint
from raiox.adapters.storage import StorageError
from raiox.embed.matching import match_image
from raiox.repository import catalog
from raiox.services import Services
from raiox.shape.identifier import ShapeIdentifier
from raiox.tools import catalog as catalog_tools
from raiox.tools.catalog import reembed_references
from support import CATALOG_SEEDS, make_xray


@pytest.fixture(scope="module")
def retrained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Other weights of the tiny architecture: another model id, as after a retrain."""
    return random_checkpoint("raiox-tiny-vit", tmp_path_factory.mktemp("retrained") / "retrained.pt", seed=99)


@pytest.fixture
def retrained(catalogued: Services, retrained_checkpoint: Path) -> Services:
    """The catalogued database and objects, with the retrained encoder (two images per batch)."""
    encoder = ShapeIdentifier.load("raiox-tiny-vit", str(retrained_checkpoint), device="cpu", batch_size=2)
    return Services(catalogued.settings, encoder=encoder)


def _count(services: Services, model_id: str) -> int:
    with services.db.transaction() as conn:
        row = conn.execute("SELECT count(*) AS n FROM reference_images WHERE model_id = %s", (model_id,)).fetchone()
    return int(row["n"])


def test_cli_reembeds_once_builds_the_index_and_old_model_keeps_answering(
    catalogued: Services, process_services: Any, tiny_checkpoint: Path, retrained_checkpoint: Path
) -> None:
    from raiox.tools.cli import main

    process_services({"RAIOX_CLIP_MODEL": "raiox-tiny-vit", "RAIOX_CLIP_PRETRAINED": str(tiny_checkpoint)})
    old_model = catalogued.encoder.model_id
    before = match_image(catalogued, make_xray(12))
    runner = CliRunner()
    args = ["catalog", "reembed", "--model", "raiox-tiny-vit", "--pretrained", str(retrained_checkpoint), "--quiet"]
    first = runner.invoke(main, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "5 reference images embedded as raiox-tiny-vit@" in first.output and "index is ready" in first.output
    assert f"RAIOX_CLIP_PRETRAINED={retrained_checkpoint}" in first.output  # the switch, spelled out
    again = json.loads(runner.invoke(main, [*args, "--json"], catch_exceptions=False).output.strip())
    assert again["added"] == 0 and again["index"] == "ready" and again["model_id"] != old_model
    assert _count(catalogued, old_model) == 5 and _count(catalogued, again["model_id"]) == 5
    with catalogued.db.transaction() as conn:
        assert catalog.model_index_state(conn, again["model_id"]) == "ready"
    assert match_image(catalogued, make_xray(12)) == before  # the configured model answers as before
    refused = runner.invoke(main, ["catalog", "reembed", "--model", "ViT-B-16"])
    assert refused.exit_code != 0 and "--model needs --pretrained" in refused.output


def test_an_interrupted_run_continues_where_it_stopped(retrained: Services,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    model_id = retrained.encoder.model_id
    store, reads = retrained.store, []

    def flaky_get(key: str) -> bytes:
        reads.append(key)
        if len(reads) == 3:  # the first read of the second batch
            raise StorageError("object storage unreachable")
        return type(store).get(store, key)

    monkeypatch.setattr(store, "get", flaky_get)
    with pytest.raises(StorageError):
        reembed_references(retrained, progress=False)
    assert _count(retrained, model_id) == 2  # the first batch was committed
    with retrained.db.transaction() as conn:
        assert catalog.model_index_state(conn, model_id) == "missing"  # only once it is complete
    report = reembed_references(retrained, progress=False)
    assert report.added == 3 and report.failed == {} and report.index == "ready"
    assert _count(retrained, model_id) == 5


def test_references_arriving_during_the_run_are_embedded_too(retrained: Services, catalogued: Services,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A reference learned from an approval while the run goes on (under the configured model)."""
    embed_page = catalog_tools._embed_page
    arrived: list[str] = []

    def page_then_an_approval(services: Services, *args: Any) -> None:
        embed_page(services, *args)
        if not arrived:
            data = make_xray(77)
            stored = catalogued.store.put(data, namespace="references", extension=".png")
            with catalogued.db.transaction() as conn:
                implant_id = conn.execute("SELECT min(id) AS id FROM implants").fetchone()["id"]
                catalog.add_reference_image(conn, implant_id=implant_id, storage_key=stored.key,
                                            sha256=stored.sha256, model_id=catalogued.encoder.model_id,
                                            embedding=catalogued.encoder.encode_one(data), source="approved_case")
            arrived.append(stored.key)

    monkeypatch.setattr(catalog_tools, "_embed_page", page_then_an_approval)
    report = reembed_references(retrained, progress=False)
    assert arrived and report.added == 6
    with retrained.db.transaction() as conn:
        assert catalog.references_missing_model(conn, retrained.encoder.model_id) == []


def test_unreadable_references_are_skipped_and_named(retrained: Services, catalogued: Services) -> None:
    gone = "references/aa/" + "a" * 64 + ".png"
    broken = catalogued.store.put(b"\xff\xd8\xff broken", namespace="references", extension=".jpg").key
    with catalogued.db.transaction() as conn:
        implant_id = conn.execute("SELECT min(id) AS id FROM implants").fetchone()["id"]
        for sha, key in (("a" * 64, gone), ("b" * 64, broken)):
            catalog.add_reference_image(conn, implant_id=implant_id, storage_key=key, sha256=sha,
                                        model_id=catalogued.encoder.model_id,
                                        embedding=catalogued.encoder.encode_one(make_xray(CATALOG_SEEDS[0])))
    report = reembed_references(retrained, progress=False)
    assert report.added == 5 and report.index == "ready"
    assert set(report.failed) == {gone, broken}
    assert "not in object storage" in report.failed[gone] and "cannot decode" in report.failed[broken]
