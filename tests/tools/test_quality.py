"""Quality tooling: held-out systems and seeds apart from training, references and new films at other sizes,
eval overall and per slice through both paths, comparisons in one run, the train command's sources, rendered
films as a lab's folder."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from raiox.tools.implant_designs import SceneOptions, random_systems
from raiox.tools.quality import (
    APPROVAL_SEEDS,
    HELD_OUT_SEED,
    QUERY_SEEDS,
    REFERENCE_SEEDS,
    SLICES,
    TRAIN_SYSTEMS_SEED,
    database_films,
    evaluate,
    evaluate_folder,
    identifier_embedder,
    rank_systems,
    rendered_set,
    segmentation,
    split_sizes,
    suggest_margin,
    systems_by_name,
)


def test_held_out_systems_and_seeds_never_meet_training() -> None:
    assert HELD_OUT_SEED != TRAIN_SYSTEMS_SEED
    assert len({REFERENCE_SEEDS, QUERY_SEEDS, APPROVAL_SEEDS}) == 3
    held = systems_by_name("heldout30")
    assert len(held) == 30 and held == systems_by_name("heldout30")
    assert not {d.system for d in held} & {d.system for d in random_systems(200, seed=TRAIN_SYSTEMS_SEED)}
    assert len(systems_by_name("demo")) == 12
    with pytest.raises(ValueError, match="heldout<N>"):
        systems_by_name("real")


def test_new_films_show_other_sizes_than_the_references() -> None:
    for design in systems_by_name("heldout10"):
        references, queries = split_sizes(design, 4)
        at = lambda ds: {(d.length_mm, d.diameter_mm) for d in ds}
        lengths, diameters = design.sizes
        if len(lengths) * len(diameters) >= 2:
            assert not at(references) & at(queries)
        assert all(d.sizes == ((d.length_mm,), (d.diameter_mm,)) for d in references + queries)


def test_rank_systems_blends_each_systems_two_best_references_and_keeps_its_best_implant() -> None:
    refs = np.eye(5, dtype=np.float32)
    labels = ["a", "b", "a", "c", "a"]
    ranked = rank_systems(np.array([0.9, 0.1, 0.6, 0.0, 0.2], dtype=np.float32), refs, labels)
    assert [label for label, _ in ranked] == ["a", "b", "c"]
    assert ranked[0][1] == pytest.approx((0.9 + 0.5 * 0.6) / 1.5)  # its third reference plays no part
    assert ranked[1][1] == pytest.approx(0.1)  # one reference counts twice
    # One stray reference no longer wins against a system whose references agree.
    stray = rank_systems(np.array([0.7, 0.9, 0.7, 0.0, 0.0], dtype=np.float32), np.eye(5, dtype=np.float32),
                         ["a", "b", "a", "b", "b"])
    assert [label for label, _ in stray] == ["a", "b"]
    # The very same picture as a reference (a film sent again after its approval) decides alone.
    again = rank_systems(np.array([0.7, 1.0, 0.7, 0.0, 0.0], dtype=np.float32), np.eye(5, dtype=np.float32),
                         ["a", "b", "a", "b", "b"])
    assert again[0] == ("b", pytest.approx(1.0))
    two = np.array([[0.0, 0.2, 0.0, 0.1, 0.0], [0.0, 0.0, 0.0, 0.95, 0.0]], dtype=np.float32)  # two implants
    assert rank_systems(two, refs, labels)[0] == ("c", pytest.approx(0.95))


def test_eval_reports_overall_per_slice_and_is_complete(tiny_encoder: Any) -> None:
    designs = systems_by_name("heldout3")
    films = rendered_set(designs, "flat", references=2, queries=2, progress=False)
    assert len(films.references) == 6 and len(films.queries) == 6 and len(films.query_tags) == 6
    report = evaluate("identifier", tiny_encoder.model_id, films, *identifier_embedder(tiny_encoder))
    assert (report.systems, report.queries, report.renderer) == (3, 6, "flat")
    assert 0 <= report.top1 <= report.top3 <= 1
    assert sum(sum(row.values()) for row in report.confusion.values()) == 6
    tagged = {tag for tags in films.query_tags for tag in tags}
    assert set(report.slices) <= tagged and all(s["queries"] >= 1 for s in report.slices.values())


def test_segmentation_counts_the_asked_for_implant_found_and_its_platform_end() -> None:
    from types import SimpleNamespace

    films = rendered_set(systems_by_name("heldout2"), "flat", references=1, queries=3, progress=False)

    def film(platform: tuple[float, float], apex: tuple[float, float], found: bool = True) -> Any:
        finding = SimpleNamespace(platform_xy=platform, apex_xy=apex, found=found, score=1.0)
        return SimpleNamespace(implants=[SimpleNamespace(finding=finding)])

    truths = [t.implants[0] for t in films.query_truths]
    identified = {0: film(truths[0].platform_xy, truths[0].apex_xy),  # found, platform up
                  1: film(truths[1].apex_xy, truths[1].platform_xy),  # found upside down
                  2: film(truths[2].platform_xy, truths[2].apex_xy, found=False),  # the whole film: not found
                  3: film((0.0, 0.0), (1.0, 1.0))}  # something else on the film
    rates = segmentation(films, identified)  # film 4 and 5: no answer at all
    assert rates["all"] == {"films": 6, "found": round(2 / 6, 4), "platform_up": 0.5}
    for tag, rate in rates.items():
        assert tag == "all" or tag in SLICES and 1 <= rate["films"] <= 6


def test_folder_eval_goes_through_the_database(catalogued: Any, tmp_path: Path) -> None:
    from support import make_xray

    for seed in (11, 13):
        (tmp_path / "films" / f"S{seed}").mkdir(parents=True)
        (tmp_path / "films" / f"S{seed}" / "a.png").write_bytes(make_xray(seed))  # the reference itself
    report = evaluate_folder(catalogued, tmp_path / "films")
    assert (report.queries, report.top1, report.top3) == (2, 1.0, 1.0)


def test_database_films_are_the_references_and_approved_cases_films_each_once(catalogued: Any) -> None:
    from raiox.repository import decisions
    from support import make_xray, submit_case

    approved = submit_case(catalogued, "approved", [make_xray(10), make_xray(99)])  # one film is S10's reference
    submit_case(catalogued, "undecided", [make_xray(98)])
    with catalogued.db.transaction() as conn:
        s10 = conn.execute("SELECT id FROM implants WHERE system = 'S10'").fetchone()["id"]
        decisions.insert_decision(conn, case_id=approved, decision="approved", implant_id=s10, chosen_rank=1,
                                  reviewer="brenda", reason=None, note=None)
        gone = conn.execute("SELECT storage_key FROM reference_images JOIN implants ON implants.id = implant_id "
                            "WHERE system = 'S14'").fetchone()["storage_key"]
    catalogued.store.delete(gone)  # unreadable: one film less, not a failed run
    films = database_films(catalogued)
    assert sorted(label for label, _ in films) == ["Maker S10", "Maker S10", "Maker S11", "Maker S12", "Maker S13"]
    assert ("Maker S10", make_xray(99)) in films  # the approved case's own film, under its decided system


def test_eval_command_compares_a_previous_whole_film_encoder_in_the_same_run(tiny_checkpoint: Path,
                                                                            tmp_path: Path) -> None:
    previous = tmp_path / "previous.pt"
    shutil.copy(tiny_checkpoint, previous)
    previous.with_name("previous.pt.json").write_text(json.dumps({"model": "raiox-tiny-vit"}))
    env = {"RAIOX_HOME": str(tmp_path), "RAIOX_CLIP_MODEL": "raiox-tiny-vit",
           "RAIOX_CLIP_PRETRAINED": str(tiny_checkpoint), "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-m", "raiox.tools.cli", "eval", "--json", "--rendered", "heldout3",
                          "--renderer", "flat", "--references", "1", "--queries", "1", "--previous", str(previous)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)["results"]
    assert [r["name"] for r in results] == ["identifier", "previous (whole film)"]
    assert all(r["systems"] == 3 and r["queries"] == 3 for r in results)
    assert results[0]["model_id"].endswith("-crop") and "+find" not in results[1]["model_id"]


def test_eval_command_compares_a_previous_shape_encoder_on_the_same_films(tmp_path: Path) -> None:
    from raiox.shape.identifier import SHIPPED_SHAPE_ENCODER

    previous = tmp_path / "run.pt"
    shutil.copy(SHIPPED_SHAPE_ENCODER, previous)
    shutil.copy(SHIPPED_SHAPE_ENCODER.with_name(SHIPPED_SHAPE_ENCODER.name + ".json"), tmp_path / "run.pt.json")
    run = subprocess.run([sys.executable, "-m", "raiox.tools.cli", "eval", "--json", "--rendered", "heldout3",
                          "--renderer", "flat", "--references", "1", "--queries", "2", "--no-descriptor",
                          "--previous", str(previous)],
                         env={"RAIOX_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr
    shipped, again = json.loads(run.stdout)["results"]
    assert (shipped["name"], again["name"]) == ("identifier", "previous (shape encoder)")
    assert again["model_id"] == shipped["model_id"] and "+find" in again["model_id"]  # the same weights, the same id
    assert (again["top1"], again["top3"], again["queries"]) == (shipped["top1"], shipped["top3"], 6)


def test_approvals_effect_adds_references_to_the_weakest_systems(tiny_encoder: Any) -> None:
    from raiox.tools.quality import approvals_effect

    designs = systems_by_name("heldout8")
    films = rendered_set(designs, "flat", references=1, queries=2, progress=False)
    embedders = identifier_embedder(tiny_encoder)
    base = evaluate("identifier", tiny_encoder.model_id, films, *embedders)
    per_system = {t: row.get(t, 0) / sum(row.values()) for t, row in base.confusion.items()}
    effect = approvals_effect("identifier", tiny_encoder.model_id, films, designs, base, *embedders, approvals=2)
    assert len(effect["systems"]) == 2 and all(per_system[s] <= min(
        per_system[o] for o in per_system if o not in effect["systems"]) for s in effect["systems"])
    assert set(effect) == {"systems", "approvals_per_system", "before", "after"}


def test_train_command_takes_one_source(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from raiox.tools.cli import main

    result = CliRunner().invoke(main, ["train", "--folder", str(tmp_path), "--from-database", "--out", "x.pt"])
    assert result.exit_code != 0 and "choose one of --cache, --folder, --from-database or --average" in result.output


def test_train_will_not_reembed_after_fine_tuning_that_harmed_its_held_out_films(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from raiox.tools import catalog, shape_train
    from raiox.tools.cli import main
    from raiox.tools.render import render

    for system in random_systems(2, seed=5):
        (tmp_path / "films" / system.system).mkdir(parents=True)
        for seed in range(2):
            (tmp_path / "films" / system.system / f"{seed}.png").write_bytes(render(system, seed))
    asked: list[dict[str, Any]] = []

    def harmful(films: list[tuple[str, bytes]], out: Path, **options: Any) -> shape_train.FineTuneReport:
        asked.append(options)
        return shape_train.FineTuneReport(out, 2, 2, 5, 1.0, {"before": {"top1": 0.5, "top3": 1.0, "queries": 2},
                                                              "after": {"top1": 0.0, "top3": 1.0, "queries": 2}})

    reembedded: list[Any] = []
    monkeypatch.setattr(shape_train, "fine_tune_on_films", harmful)
    monkeypatch.setattr(catalog, "reembed_catalog", reembedded.append)
    monkeypatch.setenv("RAIOX_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(main, ["train", "--folder", str(tmp_path / "films"), "--out", str(tmp_path / "lab.pt"),
                                       "--reembed"])
    assert result.exit_code == 1 and "match worse" in result.output and "not re-embedded" in result.output
    assert not reembedded
    assert (asked[0]["lr"], asked[0]["mix"]) == (shape_train.FINE_TUNING_LR, shape_train.FINE_TUNING_MIX)


def test_render_films_writes_a_labelled_folder_and_its_catalog(tmp_path: Path) -> None:
    from raiox.tools.quality import folder_films, write_film_folder
    from raiox.tools.render import render_film

    designs = systems_by_name("heldout4")
    assert write_film_folder(tmp_path / "refs", designs, films_per_system=2, seeds="reference", skip=2,
                             manifest=True) == 4
    films = folder_films(tmp_path / "refs")
    assert sorted({label for label, _ in films}) == sorted([designs[2].system, designs[3].system])
    first = next((tmp_path / "refs" / designs[2].system).glob("0.*")).read_bytes()
    at_reference, _ = split_sizes(designs[2], 4)
    assert first == render_film(at_reference[0], REFERENCE_SEEDS + 2 * 100, SceneOptions())[0]  # as eval's
    lines = [json.loads(line) for line in (tmp_path / "refs" / "catalog.jsonl").read_text().splitlines()]
    assert len(lines[0]["images"]) == 2 and lines[0]["diameter_min_mm"] == min(designs[2].sizes[1])
    write_film_folder(tmp_path / "new", designs, films_per_system=2, seeds="eval", skip=2)
    assert not {data for _, data in folder_films(tmp_path / "new")} & {data for _, data in films}


def test_the_suggested_margin_flags_four_fifths_of_the_wrong_answers() -> None:
    wrong = [0.01, 0.02, 0.03, 0.04, 0.05]
    margin, flagged = suggest_margin(wrong + [0.2] * 15, wrong)
    assert 0.04 < margin < 0.05 and sum(m < margin for m in wrong) == 4  # percentile 80, interpolated
    assert flagged == 4 / 20
    assert suggest_margin([0.3, 0.4], []) == (0.0, 0.0)
