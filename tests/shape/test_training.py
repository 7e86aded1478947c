"""Training the shape encoder: a cache rendered once and resumed, augmentation from a seed, a checkpoint that
resumes and loads, and fine-tuning on a lab's films that keeps the batch statistics and reports held-out films
before and after."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from raiox.shape import network
from raiox.shape.attributes import TARGET_SIZE
from raiox.shape.canonical import CROP_HEIGHT, CROP_WIDTH
from raiox.shape.identifier import ShapeIdentifier, ShapeModel
from raiox.tools.implant_designs import random_systems
from raiox.tools.render import render
from raiox.tools.shape_data import build_cache, load_cache
from raiox.tools.shape_train import (
    FineTuneReport,
    ShapeTraining,
    _tone_curve,
    _vary_look,
    augment,
    average_checkpoints,
    fine_tune_on_films,
    renderer_balance,
    train_shape,
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cache")
    build_cache(folder, random_systems(4, seed=77), films_per_system=3, renderer="flat", seed=1, workers=1,
                progress=False)
    return folder


def test_the_cache_holds_crops_both_ways_up_and_resumes(cache: Path) -> None:
    data = load_cache(cache)
    assert data["crops"].shape == (12, CROP_HEIGHT, CROP_WIDTH) and data["upside_down"].shape == data["crops"].shape
    assert np.bincount(data["systems"]).tolist() == [3, 3, 3, 3] and data["attributes"].shape == (12, TARGET_SIZE)
    assert data["located"].mean() > 0.5  # the canonicaliser found most implants itself
    stamp = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.npz")}
    build_cache(cache, random_systems(4, seed=77), films_per_system=3, renderer="flat", seed=1, workers=1,
                progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in cache.glob("*.npz")} == stamp  # nothing rendered twice


def test_more_films_of_the_same_systems_add_up_in_one_cache(tmp_path: Path) -> None:
    build_cache(tmp_path, random_systems(3, seed=77), films_per_system=2, renderer="flat", seed=1, workers=1,
                progress=False)
    build_cache(tmp_path, random_systems(2, seed=77), films_per_system=2, renderer="flat", seed=2, workers=1,
                progress=False)
    assert np.bincount(load_cache(tmp_path)["systems"]).tolist() == [4, 4, 2]
    assert len(json.loads((tmp_path / "systems.json").read_text())) == 3  # the longer list is kept


def test_each_generator_is_drawn_as_often_however_many_films_it_rendered_of_a_system() -> None:
    chances = renderer_balance(np.asarray([0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1], np.int8))
    assert chances[:4].sum() == pytest.approx(0.5) and chances[4:].sum() == pytest.approx(0.5)
    assert renderer_balance(np.asarray([1, 1, 1], np.int8)) == pytest.approx([1 / 3] * 3)


def test_augmentation_is_reproducible_from_its_seed_and_varies_between_seeds() -> None:
    import torch

    crops = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (4, CROP_HEIGHT, CROP_WIDTH), dtype=np.uint8))
    first = augment(crops, torch.Generator().manual_seed(1))
    assert first.shape == crops.shape and 0 <= float(first.min()) and float(first.max()) <= 255
    assert torch.equal(first, augment(crops, torch.Generator().manual_seed(1)))
    assert not torch.allclose(first, augment(crops, torch.Generator().manual_seed(2)))


def test_another_look_saturates_the_metal_on_some_crops_but_never_the_bone_around_it() -> None:
    import torch

    crop = torch.full((CROP_HEIGHT, CROP_WIDTH), 0.4)
    crop[20:120, 16:48] = 0.72  # a grey implant, as the flat generator draws one, its threads a little brighter
    crop[20:120:8, 16:48] = 0.8
    batch = crop.expand(64, 1, CROP_HEIGHT, CROP_WIDTH).clone()
    generator = torch.Generator().manual_seed(3)

    def rand(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(64, generator=generator)

    looks = _vary_look(batch, rand, generator)[:, 0]
    metal, bone = looks[:, 30:110, 20:44], looks[:, 150:, :]
    saturated = (metal > 0.97).float().mean(dim=(1, 2)) > 0.9
    assert 10 <= int(saturated.sum()) <= 50  # a part of the batch, not all of it
    assert float(bone.median(dim=1).values.median(dim=1).values.max()) < 0.8


def test_a_tone_curve_keeps_black_white_and_the_order_of_grey_levels_and_differs_per_crop() -> None:
    import torch

    ramp = torch.linspace(0, 1, 101).expand(16, 1, 1, 101).clone()
    curves = _tone_curve(ramp, torch.Generator().manual_seed(0))[:, 0, 0]
    assert torch.allclose(curves[:, 0], torch.zeros(16)) and torch.allclose(curves[:, -1], torch.ones(16))
    assert bool((curves.diff(dim=1) >= 0).all())  # a brighter dose never turns darker
    middles = curves[:, 50]
    assert float(middles.max() - middles.min()) > 0.1  # each crop its own curve
    assert bool((curves - ramp[:, 0, 0]).abs().amax(dim=1).gt(0.02).all())  # none left as it was


def test_training_checkpoints_resumes_and_writes_a_loadable_encoder(cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "shape.pt"
    run = ShapeTraining(cache=cache, out=out, steps=2, systems_per_batch=3, films_per_system=2, val_systems=1)
    assert train_shape(run, progress=False)["step"] == 2
    sidecar = json.loads(out.with_name("shape.pt.json").read_text())
    assert sidecar["kind"] == "raiox-shape" and sidecar["steps"] == 2 and sidecar["name"] == "raiox-shape-s"
    assert out.stat().st_size < 10 * 2**20  # small weights
    run.steps = 3
    assert train_shape(run, progress=False)["step"] == 3  # resumed from shape.pt.ckpt, one more step
    identifier = ShapeIdentifier.load("", str(out), device="cpu")
    assert identifier.encode_one(render(random_systems(1, seed=5)[0], 1)).shape == (512,)


def test_averaging_checkpoints_writes_the_mean_of_their_weights(tmp_path: Path) -> None:
    import torch

    config = network.ShapeNetConfig.named("raiox-shape-s")
    paths = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        paths.append(tmp_path / f"run{seed}.pt")
        network.save(network.build(config), config, paths[-1], meta={"name": "raiox-shape-s", "steps": seed})
    meta = average_checkpoints(paths, tmp_path / "mean.pt")
    assert [entry["path"] for entry in meta["averaged"]] == ["run1.pt", "run2.pt"]
    assert [entry["steps"] for entry in meta["averaged"]] == [1, 2]
    first, second = (network.load(path)[0].state_dict() for path in paths)
    mean, _, sidecar = network.load(tmp_path / "mean.pt")
    assert sidecar["averaged"] == meta["averaged"] and sidecar["name"] == "raiox-shape-s"
    weight = next(key for key, value in first.items() if value.is_floating_point() and value.numel() > 100)
    expected = (first[weight] + second[weight]) / 2
    assert not torch.allclose(first[weight], expected, atol=1e-3)
    assert torch.allclose(mean.state_dict()[weight], expected, atol=2e-3)  # stored in half precision
    small = network.ShapeNetConfig((8, 16, 32, 64), 64)
    network.save(network.build(small), small, tmp_path / "small.pt", meta={"name": "small"})
    with pytest.raises(ValueError, match="different architectures"):
        average_checkpoints([paths[0], tmp_path / "small.pt"], tmp_path / "bad.pt")


def test_fine_tuning_on_a_labs_films_reports_held_out_films_before_and_after(tmp_path: Path) -> None:
    import torch

    torch.manual_seed(0)
    config = network.ShapeNetConfig.named("raiox-shape-s")
    start = tmp_path / "start.pt"
    network.save(network.build(config), config, start, meta={"name": "raiox-shape-s"})
    films = [(system.system, render(system, seed)) for system in random_systems(3, seed=12) for seed in range(4)]
    report = fine_tune_on_films(films, tmp_path / "lab.pt", start=start, source="test", minutes=0.02,
                                held_out=0.25, mix=0.5, progress=False)
    assert report.systems == 3 and report.films == 9 and report.steps >= 1
    assert set(report.held_out) == {"before", "after"} and report.held_out["after"]["queries"] == 3
    assert network.is_shape_checkpoint(tmp_path / "lab.pt")
    assert json.loads((tmp_path / "lab.pt.json").read_text())["started_from"] == str(start)
    before, after = network.load(start)[0].state_dict(), network.load(tmp_path / "lab.pt")[0].state_dict()
    statistics = [name for name in before if name.endswith(("running_mean", "running_var"))]
    assert statistics and all(torch.equal(before[name], after[name]) for name in statistics)
    assert any(not torch.allclose(before[name], after[name]) for name in before if name.endswith("weight"))


def test_a_labs_film_trains_on_the_implant_its_systems_other_films_agree_with(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # As a catalog reference does (shape.identifier.reference_choices): each system's films are weighed
    # together, and a film trains on the implant the rule picks, not always on its first.
    import torch

    from raiox.shape import identifier as shape_identifier
    from raiox.tools.implant_designs import SceneOptions
    from raiox.tools.shape_train import _lab_crops

    weighed: list[int] = []

    def last_implant(films: list[np.ndarray], stored: tuple[np.ndarray, ...] = ()) -> list[int]:
        weighed.append(len(films))
        return [len(vectors) - 1 for vectors in films]

    monkeypatch.setattr(shape_identifier, "reference_implants", last_implant)
    torch.manual_seed(0)
    config = network.ShapeNetConfig.named("raiox-shape-s")
    model = ShapeIdentifier(ShapeModel(network.build(config), "raiox-shape-s"))
    films = [(system.system, render(system, seed, SceneOptions(neighbours=2, restoration="none")))
             for system in random_systems(2, seed=12) for seed in range(3)]
    prepared = _lab_crops(model, films, progress=False)
    assert weighed == [3, 3]
    last = [model.identify([data]).films[0].implants[-1].finding.crop for _, data in films]
    assert len(model.identify([films[0][1]]).films[0].implants) > 1  # a film where the first is not the last
    assert [np.array_equal(a, b) for a, b in zip(prepared.crops, last, strict=True)] == [True] * len(films)


def test_a_fine_tuning_report_is_harmed_when_held_out_films_match_worse() -> None:
    def report(top1: float, top3: float) -> FineTuneReport:
        return FineTuneReport(Path("lab.pt"), 9, 3, 1, 1.0, {"before": {"top1": 0.5, "top3": 0.8, "queries": 3},
                                                            "after": {"top1": top1, "top3": top3, "queries": 3}})

    assert report(0.4, 1.0).harmed and report(0.5, 0.7).harmed
    assert not report(0.5, 0.8).harmed and not report(0.6, 0.7).harmed
    assert not FineTuneReport(Path("lab.pt"), 9, 3, 1, 1.0).harmed  # nothing held out: nothing measured
