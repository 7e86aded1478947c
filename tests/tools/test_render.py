"""The flat film generator: reproducible, every slice on demand, ground truth that points at the implant."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from raiox.adapters.imaging import inspect_image, load_radiograph
from raiox.tools.implant_designs import (
    ImplantDesign,
    SceneOptions,
    demo_catalog,
    design_distance,
    random_system,
    random_systems,
)
from raiox.tools.render import implant_thickness, render, render_film

PLAIN = SceneOptions(upper_jaw=False, restoration="none", neighbours=0, photographed=False, quarter_turns=0,
                     mirrored=False, bits=8, jpeg_quality=0)


def test_same_seed_same_film_other_seed_other_film() -> None:
    design = demo_catalog()[0]
    assert render(design, 7) == render(design, 7)
    assert render(design, 7) != render(design, 8)


def test_films_decode_in_each_format() -> None:
    design = demo_catalog()[3]
    assert inspect_image(render(design, 1, PLAIN)).mode == "L"
    sixteen = render(design, 1, SceneOptions(**{**PLAIN.__dict__, "bits": 16}))
    assert Image.open(io.BytesIO(sixteen)).mode.startswith("I")
    assert np.asarray(load_radiograph(sixteen).convert("L")).std() > 20  # windowed, not black
    assert render(design, 1, SceneOptions(**{**PLAIN.__dict__, "jpeg_quality": 80})).startswith(b"\xff\xd8")
    photo = Image.open(io.BytesIO(render(design, 1, SceneOptions(**{**PLAIN.__dict__, "photographed": True}))))
    assert photo.mode == "RGB" and photo.format == "JPEG"


def _brightness_along(film: np.ndarray, start: tuple[float, float], end: tuple[float, float]) -> float:
    points = [(start[0] + (end[0] - start[0]) * t, start[1] + (end[1] - start[1]) * t)
              for t in np.linspace(0.1, 0.9, 9)]
    return float(np.mean([film[int(y), int(x)] for x, y in points]))


@pytest.mark.parametrize("options", [PLAIN, SceneOptions(upper_jaw=True, quarter_turns=1, mirrored=True, neighbours=0,
                                                         photographed=False, restoration="crown")])
def test_truth_lies_on_the_metal_wherever_the_film_turns(options: SceneOptions) -> None:
    design = demo_catalog()[0]
    data, truth = render_film(design, 3, options)
    film = np.asarray(load_radiograph(data).convert("L"), dtype=float)
    implant = truth.implants[0]
    assert _brightness_along(film, implant.platform_xy, implant.apex_xy) > np.percentile(film, 90)
    length_px = design.length_mm / truth.pixel_spacing_mm
    assert 0.85 * length_px <= math.dist(implant.platform_xy, implant.apex_xy) <= 1.01 * length_px  # angulation
    assert implant.diameter_px == pytest.approx(design.diameter_mm / truth.pixel_spacing_mm, rel=0.05)


def test_upper_jaw_films_show_the_platform_below_the_apex() -> None:
    options = SceneOptions(**{**PLAIN.__dict__, "upper_jaw": True})
    _, truth = render_film(demo_catalog()[1], 5, options)
    assert truth.implants[0].platform_xy[1] > truth.implants[0].apex_xy[1] and "upper-jaw" in truth.tags
    _, lower = render_film(demo_catalog()[1], 5, PLAIN)
    assert lower.implants[0].platform_xy[1] < lower.implants[0].apex_xy[1]


def test_neighbours_and_restorations_are_on_the_film_and_in_the_tags() -> None:
    _, truth = render_film(demo_catalog()[2], 9, SceneOptions(**{**PLAIN.__dict__, "neighbours": 1,
                                                                 "restoration": "abutment"}))
    assert len(truth.implants) == 2 and {"two-implants", "restoration:abutment"} <= truth.tags


def test_a_system_is_drawn_at_any_of_its_sizes() -> None:
    system = random_system(np.random.default_rng(4), manufacturer="M", system="S")
    sizes = {(t.implants[0].design.length_mm, t.implants[0].design.diameter_mm)
             for t in (render_film(system, seed, PLAIN)[1] for seed in range(12))}
    assert len(sizes) > 1
    lengths, diameters = system.sizes
    assert all(length in lengths and diameter in diameters for length, diameter in sizes)


def test_designs_differ_in_silhouette() -> None:
    tapered, parallel = demo_catalog()[0], demo_catalog()[1]
    (a, _), (b, _) = implant_thickness(tapered), implant_thickness(parallel)
    apex_width = lambda t: (t[int(t.shape[0] * 0.85)] > 0).sum()
    platform_width = lambda t: (t[int(t.shape[0] * 0.1)] > 0).sum()
    assert apex_width(a) / platform_width(a) < apex_width(b) / platform_width(b)
    assert len({d.system for d in demo_catalog()}) == 12 and all(d.manufacturer.startswith("Demo ")
                                                                 for d in demo_catalog())


def test_random_systems_are_reproducible_and_held_apart() -> None:
    systems = random_systems(30, seed=5, min_distance=2.0)
    assert systems == random_systems(30, seed=5, min_distance=2.0)
    assert min(design_distance(a, b) for i, a in enumerate(systems) for b in systems[i + 1:]) >= 2.0
    assert not {s.system for s in systems} & {s.system for s in random_systems(30, seed=6)}  # names carry the seed
    assert design_distance(systems[0], systems[0].at_size(16.0, 6.0)) == 0  # size is not a difference
    assert isinstance(systems[0], ImplantDesign)
