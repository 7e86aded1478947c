"""The synthetic radiograph renderer: reproducible, decodable in both bit depths, shapes that differ."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from raiox.adapters.imaging import crop_to_implant, inspect_image, load_radiograph
from raiox.tools.render import (
    ImplantDesign,
    View,
    demo_catalog,
    film_bytes,
    implant_thickness,
    render,
    render_film,
)


def test_same_seed_same_film_other_seed_other_view() -> None:
    design = demo_catalog()[0]
    assert render(design, 7) == render(design, 7)
    assert render(design, 7) != render(design, 8)


def test_films_decode_in_8_and_16_bits() -> None:
    design = demo_catalog()[3]
    eight = inspect_image(render(design, 1))
    sixteen = render(design, 1, bits=16)
    assert eight.mode == "L" and Image.open(io.BytesIO(sixteen)).mode.startswith("I")
    assert np.asarray(load_radiograph(sixteen).convert("L")).std() > 20  # windowed, not black


def test_metal_is_the_brightest_thing_on_the_film() -> None:
    design = ImplantDesign("Test", "Probe", length_mm=10, diameter_mm=4)
    film = render_film(design, View(noise=0.0), np.random.default_rng(0))
    column = film[:, film.shape[1] // 2]
    implant_rows = column > 0.9
    assert implant_rows.sum() > film.shape[0] * 0.3  # the implant spans a good part of the film's height
    assert film[:, :20].mean() < 0.75  # bone at the edge stays darker than metal


def test_designs_differ_in_silhouette() -> None:
    tapered, parallel = demo_catalog()[0], demo_catalog()[1]
    a, b = implant_thickness(tapered), implant_thickness(parallel)
    apex_width = lambda t: (t[int(t.shape[0] * 0.85)] > 0).sum()  # noqa: E731
    platform_width = lambda t: (t[int(t.shape[0] * 0.1)] > 0).sum()  # noqa: E731
    assert apex_width(a) / platform_width(a) < apex_width(b) / platform_width(b)
    assert len({d.system for d in demo_catalog()}) == len(demo_catalog()) == 12
    assert all(d.manufacturer.startswith("Demo ") for d in demo_catalog())  # clearly fictional


def _tilt(image: Image.Image) -> float:
    """Degrees between the metal's long axis and the vertical (the film's own measure, not crop's)."""
    grey = np.asarray(image.convert("L"), dtype=float)
    rows, cols = np.nonzero(grey >= np.percentile(grey, 99.5) * 0.9)
    (var_y, cov), (_, var_x) = np.cov(np.stack([rows, cols]))
    return float(np.degrees(0.5 * np.arctan2(2 * cov, var_y - var_x)))


def test_crop_finds_the_implant_and_keeps_its_tilt() -> None:
    design = demo_catalog()[2]
    for rotation in (-15.0, 12.0):
        film = load_radiograph(film_bytes(render_film(design, View(rotation_deg=rotation, noise=0.0),
                                                      np.random.default_rng(3))))
        assert abs(_tilt(film) - rotation) < 3
        cropped = crop_to_implant(film)
        assert cropped.width == cropped.height < film.height  # a square around the implant, not the film
        assert abs(_tilt(cropped) - rotation) < 3


def test_crop_leaves_a_film_without_metal_whole() -> None:
    film = Image.fromarray((np.random.default_rng(0).random((200, 160)) * 120).astype(np.uint8)).convert("RGB")
    assert crop_to_implant(film).size == film.size
