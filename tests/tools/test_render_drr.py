"""The second film generator (raiox.tools.render_drr): files, ground truth, storage transforms and thread geometry."""

from __future__ import annotations

import io
import math
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from raiox.tools.implant_designs import FilmTruth, ImplantDesign, SceneOptions, demo_catalog
from raiox.tools.render_drr import implant_path_mm, render, render_film

CATALOG = demo_catalog()
SMALL = (360, 440)
PLAIN = SceneOptions(restoration="none", neighbours=0, photographed=False, quarter_turns=0, mirrored=False, bits=8,
                     jpeg_quality=0)


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def _along(truth: FilmTruth, fraction: float, sideways: float = 0.0) -> tuple[float, float]:
    """A point on the first implant's axis `fraction` of the way from platform to apex, moved `sideways` of its
    outer radius off the axis."""
    implant = truth.implants[0]
    (px, py), (ax, ay) = implant.platform_xy, implant.apex_xy
    length = math.dist((px, py), (ax, ay))
    nx, ny = -(ay - py) / length, (ax - px) / length
    offset = sideways * implant.diameter_px / 2
    return px + fraction * (ax - px) + offset * nx, py + fraction * (ay - py) + offset * ny


def test_a_seed_gives_the_same_film_and_another_seed_another() -> None:
    first = render_film(CATALOG[0], 11, film_px=SMALL)
    again = render_film(CATALOG[0], 11, film_px=SMALL)
    other = render_film(CATALOG[0], 12, film_px=SMALL)
    assert first[0] == again[0] and first[1] == again[1]
    assert first[0] != other[0]
    assert render(CATALOG[0], 11) == render_film(CATALOG[0], 11)[0]


@pytest.mark.parametrize("seed", [3, 5])
def test_truth_lies_on_metal_and_spans_the_implant_length(seed: int) -> None:
    design = CATALOG[seed]
    data, truth = render_film(design, seed, PLAIN)
    pixels = _pixels(data).astype(float)
    implant = truth.implants[0]
    assert implant.design.system == design.system
    assert implant.design.length_mm in design.sizes[0] and implant.design.diameter_mm in design.sizes[1]
    bright = np.quantile(pixels, 0.9)
    for fraction in (0.1, 0.3, 0.5, 0.7):
        x, y = _along(truth, fraction, sideways=0.45)
        assert pixels[int(y), int(x)] >= bright, (fraction, pixels[int(y), int(x)], bright)
    x, y = _along(truth, 1 - 0.4 / implant.design.length_mm)  # the apex is narrow: 0.4 mm inside its tip
    assert pixels[int(y), int(x)] >= np.quantile(pixels, 0.75)
    # Beyond the apex and well beside the implant there is no metal.
    x, y = _along(truth, 1.15)
    assert pixels[int(y), int(x)] < 250
    x, y = _along(truth, 0.5, sideways=2.2)
    assert pixels[int(y), int(x)] < 250
    # Platform to apex is the length, foreshortened by at most the largest vertical angulation (25 degrees).
    span_mm = math.dist(implant.platform_xy, implant.apex_xy) * truth.pixel_spacing_mm
    assert implant.design.length_mm * math.cos(math.radians(25.5)) <= span_mm <= implant.design.length_mm * 1.001
    assert implant.diameter_px * truth.pixel_spacing_mm == pytest.approx(implant.design.diameter_mm)
    assert 150 <= math.dist(implant.platform_xy, implant.apex_xy) <= 700


def test_upper_jaw_films_show_the_platform_below_the_apex() -> None:
    for seed in (21, 22):
        _, lower = render_film(CATALOG[1], seed, replace(PLAIN, upper_jaw=False), film_px=SMALL)
        _, upper = render_film(CATALOG[1], seed, replace(PLAIN, upper_jaw=True), film_px=SMALL)
        assert lower.implants[0].platform_xy[1] < lower.implants[0].apex_xy[1]
        assert upper.implants[0].platform_xy[1] > upper.implants[0].apex_xy[1]
        assert "upper-jaw" in upper.tags and "upper-jaw" not in lower.tags


def test_a_neighbour_is_a_second_truth_of_another_system_on_the_film() -> None:
    _, alone = render_film(CATALOG[2], 31, replace(PLAIN, neighbours=0), film_px=(480, 360))
    data, pair = render_film(CATALOG[2], 31, replace(PLAIN, neighbours=1), film_px=(480, 360))
    assert len(alone.implants) == 1 and "two-implants" not in alone.tags
    assert len(pair.implants) == 2 and "two-implants" in pair.tags
    first, second = pair.implants
    assert first.design.system == CATALOG[2].system and second.design.system != first.design.system
    height, width = _pixels(data).shape[:2]
    for point in (second.platform_xy, second.apex_xy):
        assert 0 <= point[0] < width and 0 <= point[1] < height
    assert math.dist(first.platform_xy, second.platform_xy) > (first.diameter_px + second.diameter_px) / 2
    _, three = render_film(CATALOG[2], 31, replace(PLAIN, neighbours=2), film_px=(480, 360))
    assert len(three.implants) == 3


@pytest.mark.parametrize(("turns", "mirrored"), [(1, False), (2, False), (3, True), (0, True)])
def test_stored_turns_and_mirroring_move_the_truth_with_the_file(turns: int, mirrored: bool) -> None:
    base_data, base = render_film(CATALOG[4], 41, PLAIN, film_px=SMALL)
    data, moved = render_film(CATALOG[4], 41, replace(PLAIN, quarter_turns=turns, mirrored=mirrored),
                              film_px=SMALL if turns % 2 == 0 else SMALL[::-1])
    expected = np.rot90(_pixels(base_data), turns)
    if mirrored:
        expected = expected[:, ::-1]
    assert np.array_equal(_pixels(data), expected)
    height, width = _pixels(base_data).shape

    def move(point: tuple[float, float]) -> tuple[float, float]:
        x, y = point
        w, h = width, height
        for _ in range(turns):
            x, y, w, h = y, w - x, h, w
        return (w - x, y) if mirrored else (x, y)

    for before, after in zip(base.implants, moved.implants, strict=True):
        assert after.platform_xy == pytest.approx(move(before.platform_xy))
        assert after.apex_xy == pytest.approx(move(before.apex_xy))
    assert ("rotated-180" in moved.tags) == (turns == 2)
    assert ("mirrored" in moved.tags) == mirrored


def test_the_file_formats_follow_the_options() -> None:
    png8, truth8 = render_film(CATALOG[5], 51, replace(PLAIN, bits=8), film_px=SMALL)
    png16, truth16 = render_film(CATALOG[5], 51, replace(PLAIN, bits=16), film_px=SMALL)
    jpeg, truth_jpeg = render_film(CATALOG[5], 51, replace(PLAIN, jpeg_quality=80), film_px=SMALL)
    photo, truth_photo = render_film(CATALOG[5], 51, replace(PLAIN, photographed=True, jpeg_quality=None),
                                     film_px=SMALL)
    assert png8[:8] == b"\x89PNG\r\n\x1a\n" and Image.open(io.BytesIO(png8)).mode == "L"
    sixteen = Image.open(io.BytesIO(png16))
    assert png16[:8] == b"\x89PNG\r\n\x1a\n" and sixteen.mode.startswith("I")
    values = np.asarray(sixteen)
    assert values.max() > 255 and values.max() <= 4095  # the 12-bit sensor range in a 16-bit file
    assert "16-bit" in truth16.tags and "16-bit" not in truth8.tags
    assert jpeg[:2] == b"\xff\xd8" and Image.open(io.BytesIO(jpeg)).mode == "L" and "jpeg" in truth_jpeg.tags
    shot = Image.open(io.BytesIO(photo))
    assert photo[:2] == b"\xff\xd8" and shot.mode == "RGB" and shot.size == SMALL
    assert {"photographed", "jpeg"} <= truth_photo.tags
    # The photo's truth is mapped through its perspective: still on the implant's metal.
    pixels = np.asarray(shot.convert("L")).astype(float)
    x, y = _along(truth_photo, 0.5, sideways=0.4)
    assert pixels[int(y), int(x)] >= np.quantile(pixels, 0.85)
    with pytest.raises(ValueError, match="16-bit"):
        render_film(CATALOG[5], 51, SceneOptions(bits=16, jpeg_quality=80))


def test_restoration_is_tagged_and_the_file_size_is_asked_for() -> None:
    data, truth = render_film(CATALOG[6], 61, replace(PLAIN, restoration="crown"), film_px=(400, 300))
    assert Image.open(io.BytesIO(data)).size == (400, 300)
    assert "restoration:crown" in truth.tags


def _dominant_period(profile: np.ndarray) -> float:
    """The period (samples) of the strongest oscillation, refined by parabolic interpolation of the spectrum."""
    values = (profile - profile.mean()) * np.hanning(profile.size)
    padded = np.abs(np.fft.rfft(values, n=16 * profile.size))
    padded[:16 * 3] = 0  # ignore the slow trend
    peak = int(np.argmax(padded))
    a, b, c = padded[peak - 1:peak + 2]
    peak_f = peak + 0.5 * (a - c) / (a - 2 * b + c)
    return 16 * profile.size / peak_f


@pytest.mark.parametrize(("pitch", "leads", "profile", "angulation"), [
    (0.6, 1, "v", 0.0), (1.2, 1, "reverse-buttress", 0.0), (0.8, 2, "square", 0.0), (1.0, 1, "buttress", 20.0)])
def test_threads_repeat_along_the_axis_at_the_pitch(pitch: float, leads: int, profile: str, angulation: float) -> None:
    design = ImplantDesign("Test", "Threads", length_mm=10.0, diameter_mm=4.5, taper=0.0, thread_pitch_mm=pitch,
                           thread_depth_mm=0.4, thread_profile=profile, thread_leads=leads,  # type: ignore[arg-type]
                           collar_mm=0.5, apex="flat")
    pixel = 0.025
    path, platform, apex = implant_path_mm(design, pixel, angulation_deg=angulation, axial_turn_deg=30.0)
    assert apex[1] - platform[1] == pytest.approx(design.length_mm * math.cos(math.radians(angulation)) / pixel)
    # Just inside the crests on the left silhouette, over the threaded middle of the body.
    column = int(platform[0] - 0.5 - (design.diameter_mm / 2 - 0.15) / pixel)
    rows = slice(int(platform[1] + 1.5 / pixel), int(platform[1] + 8.0 / pixel))
    period_mm = _dominant_period(path[rows, column]) * pixel
    assert period_mm == pytest.approx(pitch * math.cos(math.radians(angulation)), rel=0.04)
    # Threads stand out: the silhouette column alternates between metal and none.
    assert path[rows, column].max() - path[rows, column].min() > 0.3
