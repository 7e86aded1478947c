"""The third film generator (raiox.tools.render_silhouette), validation only: deterministic films whose truths lie
on the implant through every storage transform, outlines that follow the system, tags the eval slices by, found by
the canonicaliser, and kept out of training."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from raiox.adapters.imaging import load_radiograph
from raiox.shape.canonical import find_implants
from raiox.tools.implant_designs import FilmTruth, ImplantDesign, SceneOptions, demo_catalog, random_systems
from raiox.tools.quality import REFERENCE_SEEDS, split_sizes
from raiox.tools.render_silhouette import render_film

CATALOG = demo_catalog()
PLAIN = SceneOptions(upper_jaw=False, restoration="none", neighbours=0, photographed=False, quarter_turns=0,
                     mirrored=False, bits=8, jpeg_quality=0)


def _options(**changes: object) -> SceneOptions:
    return SceneOptions(**{**PLAIN.__dict__, **changes})


def _grey(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    pixels = np.asarray(image, dtype=np.float64)
    if pixels.ndim == 3:
        pixels = pixels.mean(axis=2)
    return pixels / (4095 if image.mode.startswith("I") else 255)


def _at(pixels: np.ndarray, x: float, y: float) -> float:
    return float(pixels[min(max(int(y), 0), pixels.shape[0] - 1), min(max(int(x), 0), pixels.shape[1] - 1)])


def _axis_profile(pixels: np.ndarray, truth: FilmTruth, samples: int = 40) -> np.ndarray:
    """The film along the first implant's axis, from 10 % to 90 % of the way from platform to apex."""
    (px, py), (ax, ay) = truth.implants[0].platform_xy, truth.implants[0].apex_xy
    return np.array([_at(pixels, px + f * (ax - px), py + f * (ay - py)) for f in np.linspace(0.1, 0.9, samples)])


def _metal_width(pixels: np.ndarray, truth: FilmTruth) -> float:
    """How wide the bright metal is across the axis where the body is widest, below the collar (pixels), at half
    way from the film's median to the axis' brightness."""
    implant = truth.implants[0]
    (px, py), (ax, ay) = implant.platform_xy, implant.apex_xy
    length = math.dist((px, py), (ax, ay))
    nx, ny = -(ay - py) / length, (ax - px) / length
    widths = []
    for f in (0.2, 0.25, 0.3):
        cx, cy = px + f * (ax - px), py + f * (ay - py)
        steps = np.arange(-implant.diameter_px, implant.diameter_px, 0.5)
        across = np.array([_at(pixels, cx + s * nx, cy + s * ny) for s in steps])
        level = (_at(pixels, cx, cy) + float(np.median(pixels))) / 2
        widths.append(0.5 * float((across > level).sum()))
    return max(widths)


def test_a_seed_gives_the_same_film_and_another_seed_another() -> None:
    first = render_film(CATALOG[0], 11)
    assert render_film(CATALOG[0], 11) == first
    other = render_film(CATALOG[0], 12)
    assert other[0] != first[0]


@pytest.mark.parametrize("number", [0, 3, 6, 9])
def test_the_truth_lies_on_the_implant_and_its_diameter_is_the_metal_width(number: int) -> None:
    data, truth = render_film(CATALOG[number], 40 + number, PLAIN)
    pixels = _grey(data)
    assert 400 <= min(pixels.shape) and max(pixels.shape) <= 1200
    assert 0.02 <= truth.pixel_spacing_mm <= 0.08
    implant = truth.implants[0]
    assert math.dist(implant.platform_xy, implant.apex_xy) * truth.pixel_spacing_mm == pytest.approx(
        implant.design.length_mm, rel=0.25)
    assert implant.diameter_px * truth.pixel_spacing_mm == pytest.approx(implant.design.diameter_mm)
    along = _axis_profile(pixels, truth)
    assert (along > np.percentile(pixels, 85)).mean() > 0.9  # metal from platform to apex (a vent may be dark)
    beside = _axis_profile(pixels, FilmTruth(
        (type(implant)((implant.platform_xy[0] + 3 * implant.diameter_px, implant.platform_xy[1]),
                       (implant.apex_xy[0] + 3 * implant.diameter_px, implant.apex_xy[1]), 1.0, implant.design),),
        1.0, frozenset()))
    assert np.median(beside) < np.median(along) - 0.15  # and not beside it
    assert _metal_width(pixels, truth) == pytest.approx(implant.diameter_px, rel=0.2)


def test_an_upper_jaw_film_shows_the_platform_below_the_apex() -> None:
    for number in (1, 4):
        _, lower = render_film(CATALOG[number], 7, PLAIN)
        _, upper = render_film(CATALOG[number], 7, _options(upper_jaw=True))
        assert lower.implants[0].platform_xy[1] < lower.implants[0].apex_xy[1]
        assert upper.implants[0].platform_xy[1] > upper.implants[0].apex_xy[1]
        assert "upper-jaw" in upper.tags and "upper-jaw" not in lower.tags


def test_quarter_turns_and_mirroring_keep_the_truths_on_the_implant() -> None:
    design = CATALOG[2]
    base_data, base = render_film(design, 5, PLAIN)
    base_profile = _axis_profile(_grey(base_data), base)
    for turns in range(4):
        for mirrored in (False, True):
            data, truth = render_film(design, 5, _options(quarter_turns=turns, mirrored=mirrored))
            pixels = _grey(data)
            assert pixels.shape == (_grey(base_data).shape[::-1] if turns % 2 else _grey(base_data).shape)
            assert np.abs(_axis_profile(pixels, truth) - base_profile).mean() < 0.03  # the same pixels, moved
            assert ("rotated-180" in truth.tags) == (turns == 2) and ("mirrored" in truth.tags) == mirrored
            assert truth.implants[0].diameter_px == pytest.approx(base.implants[0].diameter_px)


def test_two_systems_give_different_outlines_on_the_same_scene() -> None:
    a, b = (system.only_at(10.0, 4.0) for system in (CATALOG[0], CATALOG[4]))
    film_a, truth_a = render_film(a, 3, PLAIN)
    film_b, truth_b = render_film(b, 3, PLAIN)
    assert truth_a.implants[0].platform_xy == truth_b.implants[0].platform_xy  # the same scene around them
    pixels_a, pixels_b = _grey(film_a), _grey(film_b)
    changed = np.abs(pixels_a - pixels_b) > 0.1
    assert changed.sum() > 0.05 * truth_a.implants[0].diameter_px * math.dist(truth_a.implants[0].platform_xy,
                                                                              truth_a.implants[0].apex_xy)
    ys, xs = np.nonzero(changed)  # and only where the implant is
    (px, py), (ax, ay) = truth_a.implants[0].platform_xy, truth_a.implants[0].apex_xy
    length = math.dist((px, py), (ax, ay))
    off_axis = np.abs((xs + 0.5 - px) * (ay - py) - (ys + 0.5 - py) * (ax - px)) / length
    assert np.percentile(off_axis, 99) < truth_a.implants[0].diameter_px


def test_scene_options_give_the_slices_the_eval_counts() -> None:
    design = CATALOG[5]
    _, truth = render_film(design, 9, _options(restoration="crown", neighbours=1))
    assert {"restoration:crown", "two-implants"} <= truth.tags and len(truth.implants) == 2
    assert truth.implants[1].design.system != design.system
    data, truth = render_film(design, 9, _options(bits=16))
    assert "16-bit" in truth.tags and Image.open(io.BytesIO(data)).mode.startswith("I;16")
    data, truth = render_film(design, 9, _options(jpeg_quality=80))
    assert "jpeg" in truth.tags and Image.open(io.BytesIO(data)).format == "JPEG"
    data, truth = render_film(design, 9, _options(photographed=True))
    pixels = _grey(data)
    assert "photographed" in truth.tags and Image.open(io.BytesIO(data)).mode == "RGB"
    assert np.median(_axis_profile(pixels, truth)) > np.percentile(pixels, 80)  # the truth followed the photo


def test_the_canonicaliser_finds_the_implant_asked_for_on_clean_films() -> None:
    from raiox.tools.shape_data import nearest_finding, platform_up

    found = up = 0
    for number, system in enumerate(random_systems(4, seed=31)):
        data, truth = render_film(system, 60 + number, PLAIN)
        finding = nearest_finding(find_implants(load_radiograph(data)), truth.implants[0])
        found += finding is not None
        up += finding is not None and platform_up(finding, truth.implants[0])
    assert found == 4 and up >= 3


def test_it_is_for_validation_only(tmp_path: Path) -> None:
    from raiox.tools.commands.quality import eval_command, render_cache_command
    from raiox.tools.quality import EVAL_RENDERERS, render_function, renderers_named
    from raiox.tools.render_silhouette import render_film as silhouette
    from raiox.tools.shape_data import RENDERERS, build_cache, load_cache

    assert render_function("silhouette") is silhouette and "silhouette" in EVAL_RENDERERS
    assert renderers_named("both") == ["flat", "drr"] and renderers_named("all") == ["flat", "drr", "silhouette"]
    assert renderers_named("silhouette") == ["silhouette"]
    choices = next(p for p in eval_command.params if p.name == "renderer").type.choices  # type: ignore[attr-defined]
    assert {"silhouette", "both", "all"} <= set(choices)
    assert "silhouette" not in RENDERERS
    with pytest.raises(ValueError, match="validation only"):
        build_cache(tmp_path, random_systems(1, seed=1), films_per_system=1, renderer="silhouette", seed=1, workers=1)
    with pytest.raises(ValueError, match="validation only"):
        load_cache(tmp_path, ["flat", "silhouette"])
    refused = CliRunner().invoke(render_cache_command, [str(tmp_path / "cache"), "--renderer", "silhouette"])
    assert refused.exit_code == 2 and not (tmp_path / "cache").exists()


def test_render_films_draws_a_labs_folder_with_it(tmp_path: Path) -> None:
    """Validation only means no training cache: a lab's folder of its films (to try eval --folder) is allowed."""
    from raiox.tools.commands.quality import render_films_command

    made = CliRunner().invoke(render_films_command, [str(tmp_path / "films"), "--rendered", "demo", "--renderer",
                                                      "silhouette", "--films-per-system", "1", "--skip", "11"])
    assert made.exit_code == 0, made.output
    films = sorted((tmp_path / "films").glob("*/*"))
    first_size = split_sizes(CATALOG[11], 4)[0][0]
    assert len(films) == 1
    assert films[0].read_bytes() == render_film(first_size, REFERENCE_SEEDS + 1100, SceneOptions())[0]


def test_a_design_field_changes_the_film() -> None:
    """Each shape attribute reaches the drawing: changing one (at the same size and seed) changes the film."""
    base = ImplantDesign("Demo", "Base", 10.0, 4.0, 0.1, 0.9, 0.35, "v", 1.0, False, "round")
    film = render_film(base, 2, PLAIN)[0]
    for change in ({"thread_profile": "reverse-buttress"}, {"microthreads": True}, {"apex": "pointed"},
                   {"apex_vent": True}, {"apex_grooves": True}, {"connection": "external-hex"}, {"thread_leads": 2},
                   {"collar_flare": 0.2}, {"taper": 0.4}):
        assert render_film(ImplantDesign(**{**base.__dict__, **change}), 2, PLAIN)[0] != film, change
