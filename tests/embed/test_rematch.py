"""Ranking waiting cases again: after the catalog grew (in place, from the stored vectors) and after an encoder
switch (through the embed step); decided cases keep their candidates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raiox.embed.rematch import rematch
from raiox.embed.worker import run_embed_jobs
from raiox.models import CaseStatus
from raiox.services import Services
from raiox.tools.catalog import ReferenceSystem, import_manifest, write_catalog
from support import CATALOG_SEEDS, case_state, make_xray, submit_case


def _import_catalog(services: Services, folder: Path) -> None:
    catalog = [ReferenceSystem("Maker", f"S{seed}", [make_xray(seed)]) for seed in CATALOG_SEEDS]
    import_manifest(services, write_catalog(folder, catalog), progress=False)


def test_cases_embedded_before_the_catalog_get_candidates_once_it_is_imported(
        services: Services, tmp_path: Path) -> None:
    waiting = submit_case(services, "early-1", [make_xray(11), make_xray(13)])
    decided = submit_case(services, "early-2", [make_xray(12)])
    run_embed_jobs(services)
    with services.db.transaction() as conn:
        conn.execute("UPDATE cases SET status = 'rejected' WHERE id = %s", (decided,))
    assert case_state(services, waiting)["results"] == []

    _import_catalog(services, tmp_path / "refs")
    report = rematch(services, actor="test", case_ids=[waiting, decided, 999])

    assert report.ranked == [waiting] and report.reembedding == []
    assert report.not_waiting == {decided: "rejected", 999: "no such case"}
    state = case_state(services, waiting)
    best = {row.position: row.system for row in state["results"] if row.rank == 1}
    assert best == {0: "S11", 1: "S13"} and len(state["results"]) == 6
    assert state["case"].status == CaseStatus.READY and state["audit"] == ["embedded", "rematched"]
    assert case_state(services, decided)["results"] == []  # a decision's candidates stay as they were
    assert rematch(services, actor="test").ranked == [waiting]  # every waiting case when none is named


def test_cases_another_encoder_embedded_go_back_to_the_embed_step(catalogued: Services) -> None:
    case_id = submit_case(catalogued, "old-model", [make_xray(14)])
    run_embed_jobs(catalogued)
    with catalogued.db.transaction() as conn:  # as if embedded before the configured encoder was switched
        conn.execute("UPDATE case_images SET model_id = 'an-older-encoder' WHERE case_id = %s", (case_id,))
        conn.execute("UPDATE image_findings SET model_id = 'an-older-encoder'")
        conn.execute("UPDATE match_results SET model_id = 'an-older-encoder'")

    report = rematch(catalogued, actor="test")

    assert report.reembedding == [case_id] and report.ranked == []
    assert case_state(catalogued, case_id)["case"].status == CaseStatus.EMBEDDING
    assert run_embed_jobs(catalogued).ready == 1
    state = case_state(catalogued, case_id)
    assert state["case"].status == CaseStatus.READY and state["audit"] == ["embedded", "reembedding", "embedded"]
    model_id = catalogued.encoder.model_id
    assert [row.system for row in state["results"] if row.rank == 1 and row.model_id == model_id] == ["S14"]


def test_catalog_import_and_case_rematch_say_what_they_ranked_again(
        services: Services, process_services: Any, tiny_checkpoint: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from raiox.tools.cli import main

    waiting = submit_case(services, "early", [make_xray(10)])
    run_embed_jobs(services)
    process_services({"RAIOX_CLIP_MODEL": "raiox-tiny-vit", "RAIOX_CLIP_PRETRAINED": str(tiny_checkpoint)})
    catalog = [ReferenceSystem("Maker", f"S{seed}", [make_xray(seed)]) for seed in CATALOG_SEEDS]
    manifest = write_catalog(tmp_path / "refs", catalog)
    runner = CliRunner()
    imported = runner.invoke(main, ["catalog", "import", str(manifest), "--quiet"], catch_exceptions=False)
    assert imported.exit_code == 0, imported.output
    assert "1 case(s) awaiting review ranked again against the catalog" in imported.output
    assert [row.system for row in case_state(services, waiting)["results"] if row.rank == 1] == ["S10"]
    again = runner.invoke(main, ["case", "rematch", str(waiting), "12345"], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert "case 12345 is not awaiting review (no such case)" in again.output
    assert "1 case(s) awaiting review ranked again" in again.output
