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
