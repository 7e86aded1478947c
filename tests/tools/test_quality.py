"""Quality tooling: rendered eval sets with unseen seeds, eval through both paths, training writes a
checkpoint the encoder loads (with how films were prepared), re-embedding the catalog under the new model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from raiox.adapters.encoder import Encoder, checkpoint_sidecar
from raiox.repository import catalog
from raiox.tools.catalog import reembed_catalog
from raiox.tools.quality import (
    EVAL_SEEDS,
    REFERENCE_SEEDS,
    TRAIN_SEEDS,
    catalog_by_name,
    evaluate,
    evaluate_folder,
    generated_catalog,
    rank_systems,
    render_training_set,
    train,
)
from raiox.tools.render import render


def test_seed_ranges_never_overlap() -> None:
    reference_seeds = range(0, 100 * 10_000)  # number * 100 + view, for catalogs of up to 10,000 systems
    assert max(REFERENCE_SEEDS) < 100
    assert reference_seeds.stop <= TRAIN_SEEDS.start and TRAIN_SEEDS.stop <= EVAL_SEEDS.start


def test_generated_catalog_has_distinct_fictional_systems() -> None:
    designs = generated_catalog(48)
    assert len({d.system for d in designs}) == 48 and all(d.manufacturer.startswith("Demo ") for d in designs)
    assert generated_catalog(48) == designs  # reproducible
    assert len(catalog_by_name("eval40")) == 40
    with pytest.raises(ValueError, match="eval<N>"):
        catalog_by_name("real")


def test_rank_systems_keeps_each_systems_best_reference() -> None:
    refs = np.eye(4, dtype=np.float32)
    ranked = rank_systems(np.array([0.9, 0.1, 0.8, 0.0], dtype=np.float32), refs, ["a", "b", "a", "c"])
    assert [label for label, _ in ranked] == ["a", "b", "c"]
    assert ranked[0][1] == pytest.approx(0.9)


def test_identical_films_score_perfectly_and_the_report_is_complete(tiny_encoder: Encoder) -> None:
    designs = generated_catalog(4)
    report = evaluate(tiny_encoder, designs, queries_per_system=2)
    assert report.model_id == tiny_encoder.model_id and report.systems == 4 and report.queries == 8
    assert 0 <= report.top1 <= report.top3 <= 1
    assert sum(sum(row.values()) for row in report.confusion.values()) == 8


def test_folder_eval_goes_through_the_database(catalogued, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from support import make_xray

    for seed in (11, 13):
        (tmp_path / "films" / f"S{seed}").mkdir(parents=True)
        (tmp_path / "films" / f"S{seed}" / "a.png").write_bytes(make_xray(seed))  # the reference itself
    report = evaluate_folder(catalogued, tmp_path / "films")
    assert (report.queries, report.top1, report.top3) == (2, 1.0, 1.0)


def test_training_set_is_balanced_prepared_and_augmented_differently_each_draw(tiny_encoder: Encoder) -> None:
    import torch

    from raiox.tools.quality import _augment

    pixels, labels = render_training_set(tiny_encoder, generated_catalog(3), 2, progress=False)
    size = tiny_encoder.image_size
    assert pixels.shape == (6, size, size) and pixels.dtype == np.uint8 and np.bincount(labels).tolist() == [2, 2, 2]
    assert pixels[0].std() > 10  # a film, not a blank
    grey = torch.from_numpy(pixels)
    first = _augment(grey, torch.Generator().manual_seed(1))
    assert first.shape == (6, size, size, 3) and 0 <= float(first.min()) and float(first.max()) <= 255
    assert torch.equal(first, _augment(grey, torch.Generator().manual_seed(1)))  # reproducible from the seed
    assert not torch.allclose(first, _augment(grey, torch.Generator().manual_seed(2)))
    assert not torch.allclose(first[..., 0], grey.float(), atol=5)


def test_training_writes_a_loadable_checkpoint_that_remembers_cropping(tmp_path: Path, catalogued) -> None:  # type: ignore[no-untyped-def]
    out = train("raiox-tiny-vit", generated_catalog(3), tmp_path / "model.pt", minutes=0.02,
                films_per_system=4, batch_size=8, crop=True, device="cpu", progress=False)
    sidecar = json.loads(checkpoint_sidecar(out).read_text())
    assert sidecar["crop_to_implant"] is True and sidecar["steps"] >= 1
    trained = Encoder.load("raiox-tiny-vit", str(out), device="cpu")  # crop=False asked, sidecar wins
    assert trained.crop and trained.model_id.endswith("+crop")
    assert trained.encode_one(render(generated_catalog(3)[0], seed=1)).shape == (512,)
    # Re-embedding: every stored reference gains a row under the new model id, once.
    catalogued._built["encoder"] = trained
    assert reembed_catalog(catalogued, progress=False) == 5
    assert reembed_catalog(catalogued, progress=False) == 0
    with catalogued.db.transaction() as conn:
        models = {row["model_id"] for row in catalog.catalog_summary(conn)}
    assert trained.model_id in models and len(models) == 2


def test_eval_command_reports_the_untrained_baseline_beside(tiny_checkpoint: Path, tmp_path: Path) -> None:
    env = {"RAIOX_HOME": str(tmp_path), "RAIOX_CLIP_MODEL": "raiox-tiny-vit",
           "RAIOX_CLIP_PRETRAINED": str(tiny_checkpoint), "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-m", "raiox.tools.cli", "eval", "--json", "--rendered", "eval3",
                          "--queries", "1"], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)["results"]
    assert [r["systems"] for r in results] == [3, 3]
    assert "random-" in results[1]["model_id"] and "random-" not in results[0]["model_id"]


def test_approvals_effect_adds_references_to_the_weakest_systems(tiny_encoder: Encoder) -> None:
    from raiox.tools.quality import APPROVAL_SEEDS, approvals_effect

    assert not set(APPROVAL_SEEDS) & set(EVAL_SEEDS) and not set(APPROVAL_SEEDS) & set(TRAIN_SEEDS)
    designs = generated_catalog(8)
    base = evaluate(tiny_encoder, designs, queries_per_system=2)
    per_system = {t: row.get(t, 0) / sum(row.values()) for t, row in base.confusion.items()}
    effect = approvals_effect(tiny_encoder, designs, base, approvals=2, queries_per_system=2)
    assert len(effect["systems"]) == 2 and all(per_system[s] <= min(
        per_system[o] for o in per_system if o not in effect["systems"]) for s in effect["systems"])
    assert set(effect) == {"systems", "approvals_per_system", "before", "after"}


# Training on a lab's own films ----------------------------------------------------------------------------


def _lab_folder(root: Path, systems: int = 3, films: int = 4) -> Path:
    from support import make_xray

    for system in range(systems):
        (root / f"System {system}").mkdir(parents=True)
        for film in range(films):  # each system's posts differ by seed; its films are noisy copies
            (root / f"System {system}" / f"{film}.png").write_bytes(make_xray(100 + system, size=(96, 120)))
    (root / "catalog.jsonl").write_text("")  # files beside the system folders are not films
    return root


def test_pool_mixtures_reproduce_the_attention_pool() -> None:
    """The head-only fine-tuning learns from what the pool mixes; that must give the pool's own output."""
    import torch

    from raiox.adapters.encoder import random_model
    from raiox.tools.quality import _trunk, pool_mixtures, pool_output

    visual = random_model("raiox-small-rn", seed=3).visual.eval()
    batch = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        expected = visual(batch)
        rebuilt = pool_output(visual.attnpool, pool_mixtures(visual.attnpool, _trunk(visual, batch)))
    assert torch.allclose(expected, rebuilt, rtol=1e-3, atol=1e-6) and expected.abs().max() > 0.01


def test_folder_and_held_out_split(tmp_path: Path, tiny_encoder: Encoder) -> None:
    from raiox.tools.quality import folder_films, prepare_films, split_held_out

    films = folder_films(_lab_folder(tmp_path / "lab"))
    assert len(films) == 12 and {label for label, _ in films} == {"System 0", "System 1", "System 2"}
    prepared = prepare_films(tiny_encoder, [*films, ("System 2", b"not a film")], progress=False)
    assert prepared.pixels.shape[0] == 12 and prepared.names == ["System 0", "System 1", "System 2"]
    trained_on, held = split_held_out(prepared, 0.25)
    assert held is not None and np.bincount(held.labels).tolist() == [1, 1, 1]
    assert np.bincount(trained_on.labels).tolist() == [3, 3, 3]
    assert split_held_out(prepared, 0.0) == (prepared, None)
    lonely = prepared.subset(np.array([0, 4, 8]))  # one film per system: never held out
    assert split_held_out(lonely, 0.5)[1] is None


@pytest.mark.parametrize(("model", "tune"), [("raiox-small-rn", "head"), ("raiox-tiny-vit", "all")])
def test_training_on_a_folder_writes_a_checkpoint_that_loads_from_its_path_alone(tmp_path: Path, model: str,
                                                                               tune: str) -> None:
    from raiox.adapters.encoder import random_checkpoint
    from raiox.settings import Settings
    from raiox.tools.quality import folder_films, train_on_films

    start = random_checkpoint(model, tmp_path / "start.pt")  # no sidecar: the architecture is named
    report = train_on_films(folder_films(_lab_folder(tmp_path / "lab")), tmp_path / "lab.pt", model_name=model,
                            pretrained=str(start), source="lab", minutes=0.01, held_out=0.25, batch_size=8,
                            tune=tune, device="cpu", progress=False)
    assert (report.films, report.systems, report.tuned) == (9, 3, tune) and report.steps >= 1
    assert set(report.held_out) == {"before", "after"} and report.held_out["after"]["queries"] == 3
    sidecar = json.loads(checkpoint_sidecar(report.out).read_text())
    assert sidecar["model"] == model and sidecar["tuned"] == tune and sidecar["systems"] == [
        "System 0", "System 1", "System 2"]
    loaded = Encoder.from_settings(Settings.given(raiox_clip_pretrained=str(report.out), raiox_device="cpu"))
    assert loaded.model_name == model
    started = Encoder.load(model, str(start), device="cpu")
    assert loaded.model_id != started.model_id  # the weights changed


def test_head_training_leaves_the_trunk_and_attention_as_they_were(tmp_path: Path) -> None:
    import torch

    from raiox.adapters.encoder import random_checkpoint
    from raiox.tools.quality import folder_films, train_on_films

    start = random_checkpoint("raiox-small-rn", tmp_path / "start.pt")
    report = train_on_films(folder_films(_lab_folder(tmp_path / "lab", systems=2)), tmp_path / "lab.pt",
                            model_name="raiox-small-rn", pretrained=str(start), source="lab", minutes=0.01,
                            held_out=0, batch_size=8, tune="head", device="cpu", progress=False)
    before, after = torch.load(start), torch.load(report.out)
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and changed <= {"visual.attnpool.v_proj.weight", "visual.attnpool.v_proj.bias",
                                   "visual.attnpool.c_proj.weight", "visual.attnpool.c_proj.bias"}


def test_train_command_from_the_database_starts_from_the_shipped_encoder_and_reembeds(
        catalogued, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`raiox train --from-database` learns the catalog's references (5 systems, one film each: none can be held
    out), starting from the shipped encoder since nothing else is configured, and `--reembed` embeds the
    references under the new model, which its path alone names."""
    from click.testing import CliRunner

    from raiox.adapters.encoder import SHIPPED_ENCODER
    from raiox.tools.cli import main
    from raiox.tools.commands.common import Invocation
    from raiox.tools.quality import database_films

    assert catalogued.settings.raiox_clip_pretrained == "shipped" and not catalogued.settings.raiox_clip_model
    films = database_films(catalogued)
    assert sorted(label for label, _ in films) == [f"Maker S{seed}" for seed in range(10, 15)]
    invocation = Invocation()
    invocation.__dict__["services"] = catalogued
    out = tmp_path / "db.pt"
    result = CliRunner().invoke(main, ["train", "--from-database", "--minutes", "0.01", "--out", str(out),
                                       "--reembed"], obj=invocation)
    assert result.exit_code == 0, result.output
    assert "trained (every weight) on 5 films of 5 systems" in result.output and "held-out" not in result.output
    assert f"RAIOX_CLIP_PRETRAINED={out}" in result.output and "re-embedded 5 reference images" in result.output
    sidecar = json.loads(checkpoint_sidecar(out).read_text())
    assert sidecar["model"] == "raiox-small-rn" and sidecar["started_from"] == str(SHIPPED_ENCODER)
    assert sidecar["source"] == "database"


def test_train_command_refuses_both_sources(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from raiox.tools.cli import main

    result = CliRunner().invoke(main, ["train", "--folder", str(tmp_path), "--from-database", "--out", "x.pt"])
    assert result.exit_code == 2 and "choose --folder or --from-database" in result.output


def test_render_films_writes_a_labelled_folder_and_its_catalog(tmp_path: Path) -> None:
    from raiox.tools.quality import folder_films, write_film_folder

    designs = generated_catalog(4)
    assert write_film_folder(tmp_path / "refs", designs, films_per_system=2, seeds="reference", skip=2,
                             manifest=True) == 4
    films = folder_films(tmp_path / "refs")
    assert sorted({label for label, _ in films}) == sorted([designs[2].system, designs[3].system])
    first = (tmp_path / "refs" / designs[2].system / "0.png").read_bytes()
    assert first == render(designs[2], seed=2 * 100)  # as eval's references of that system
    lines = [json.loads(line) for line in (tmp_path / "refs" / "catalog.jsonl").read_text().splitlines()]
    assert [line["images"] for line in lines][0] == [f"{designs[2].system}/0.png", f"{designs[2].system}/1.png"]
    write_film_folder(tmp_path / "new", designs, films_per_system=2, seeds="eval", skip=2)
    assert not {data for _, data in folder_films(tmp_path / "new")} & {data for _, data in films}


def test_head_tuning_needs_an_attention_pool(tmp_path: Path, tiny_checkpoint: Path) -> None:
    from raiox.tools.quality import folder_films, train_on_films

    films = folder_films(_lab_folder(tmp_path / "lab", systems=2, films=1))
    with pytest.raises(ValueError, match="no attention pool"):
        train_on_films(films, tmp_path / "x.pt", model_name="raiox-tiny-vit", pretrained=str(tiny_checkpoint),
                       source="lab", tune="head", device="cpu", progress=False)
    with pytest.raises(ValueError, match="at least 2 systems"):
        train_on_films(films[:1], tmp_path / "x.pt", model_name="raiox-tiny-vit", pretrained=str(tiny_checkpoint),
                       source="lab", device="cpu", progress=False)
    assert not (tmp_path / "x.pt").exists()


def test_the_suggested_margin_flags_four_fifths_of_the_wrong_answers() -> None:
    from raiox.tools.quality import suggest_margin

    wrong = [0.01, 0.02, 0.03, 0.04, 0.05]
    margin, flagged = suggest_margin(wrong + [0.2] * 15, wrong)
    assert 0.04 < margin < 0.05 and sum(m < margin for m in wrong) == 4  # percentile 80, interpolated
    assert flagged == 4 / 20
    assert suggest_margin([0.3, 0.4], []) == (0.0, 0.0)
