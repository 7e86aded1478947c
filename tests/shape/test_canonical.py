"""The canonicaliser: every implant found, straightened platform-up at one diameter; a fallback when none."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from PIL import Image
from scipy import ndimage

from raiox.adapters.imaging import load_radiograph
from raiox.shape.canonical import (
    CROP_DIAMETER,
    CROP_HEIGHT,
    CROP_WIDTH,
    PLATFORM_ROW,
    _distinct,
    _Frame,
    _Located,
    _opened,
    _sample,
    canonical_crop,
    find_implants,
)
from raiox.tools.implant_designs import SceneOptions, random_systems
from raiox.tools.render import render_film
from raiox.tools.render_drr import render_film as render_drr_film

PLAIN = SceneOptions(upper_jaw=False, restoration="none", neighbours=0, photographed=False, quarter_turns=0,
                     mirrored=False, bits=8, jpeg_quality=0)


def _located(finding, implant) -> tuple[bool, bool]:  # type: ignore[no-untyped-def]
    d = implant.diameter_px
    ends = (implant.platform_xy, implant.apex_xy)
    near = any(math.dist(finding.platform_xy, a) < 0.7 * d and math.dist(finding.apex_xy, b) < 0.7 * d
               for a, b in (ends, ends[::-1]))  # where it lies, whichever end it took for the platform
    right_way = math.dist(finding.platform_xy, implant.platform_xy) < math.dist(finding.platform_xy, implant.apex_xy)
    return near, right_way


class _Bar(NamedTuple):
    """A bright vertical bar on a synthetic film: threads as teeth `depth` deep every `pitch` rows on both sides,
    from row `threads_from` on."""

    x: int
    top: int
    bottom: int
    half_width: float = 30
    depth: float = 5
    pitch: int = 16
    threads_from: int = 0
    grey: float = 0.9


def _synthetic_film(*bars: _Bar, width: int = 500) -> Image.Image:
    film = 0.3 + 0.04 * np.random.default_rng(5).standard_normal((500, width))  # bone-like noise
    rows, cols = np.arange(500)[:, None], np.arange(width)[None, :]
    for bar in bars:
        teeth = bar.depth * np.abs((rows - bar.top) % bar.pitch - bar.pitch / 2) / (bar.pitch / 2)
        teeth = np.where(rows >= bar.threads_from, teeth, 0)
        film[(rows >= bar.top) & (rows < bar.bottom) & (np.abs(cols - bar.x) <= bar.half_width - teeth)] = bar.grey
    return Image.fromarray((np.clip(film, 0, 1) * 255).astype(np.uint8))


def _centre(a) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    return (a.platform_xy[0] + a.apex_xy[0]) / 2, (a.platform_xy[1] + a.apex_xy[1]) / 2


def test_implants_are_found_straightened_and_platform_up_on_most_films() -> None:
    systems = random_systems(8, seed=21)
    located = oriented = sized = 0
    films = 0
    for n, system in enumerate(systems):
        for options in (PLAIN, SceneOptions(**{**PLAIN.__dict__, "upper_jaw": True}),
                        SceneOptions(**{**PLAIN.__dict__, "quarter_turns": 1, "restoration": "abutment"})):
            data, truth = render_film(system, 100 + n, options)
            finding = find_implants(load_radiograph(data))[0]
            near, right_way = _located(finding, truth.implants[0])
            located += near
            oriented += right_way
            # The edge level lies inside this generator's thread crests: about 0.85 of the outer diameter.
            sized += 0.75 <= finding.diameter_px / truth.implants[0].diameter_px <= 1.2
            films += 1
            assert finding.crop.shape == (CROP_HEIGHT, CROP_WIDTH) and finding.crop.dtype == np.uint8
    assert located >= 0.8 * films and oriented >= 0.85 * films and sized >= 0.8 * films


def test_two_implants_are_two_findings() -> None:
    data, truth = render_film(random_systems(1, seed=3)[0], 11, SceneOptions(**{**PLAIN.__dict__, "neighbours": 1}))
    findings = find_implants(load_radiograph(data))
    assert len(truth.implants) == 2 and sum(f.found for f in findings) >= 2
    for implant in truth.implants:  # each one a finding of its own, lying on it
        length = math.dist(implant.platform_xy, implant.apex_xy)
        assert any(math.dist(_centre(f), _centre(implant)) < 0.4 * length for f in findings)


def test_a_neighbour_scoring_far_below_the_first_implant_is_still_found() -> None:
    # Neighbours cut by the film's edge, under a crown or with an abutment score far below a whole implant;
    # keeping only findings within a third of the best lost the second implant on more than half of these films.
    both = films = 0
    for n, system in enumerate(random_systems(20, seed=31)):
        for restoration in ("none", "crown"):
            options = SceneOptions(**{**PLAIN.__dict__, "neighbours": 1, "restoration": restoration})
            data, truth = render_film(system, 200 + n, options)
            findings = find_implants(load_radiograph(data))
            both += all(any(math.dist(_centre(f), _centre(implant)) < 0.6 * math.dist(implant.platform_xy,
                                                                                     implant.apex_xy)
                            for f in findings) for implant in truth.implants)
            films += 1
    assert both >= 0.7 * films


def test_an_implant_between_dark_and_bright_surroundings_is_measured_at_its_own_diameter() -> None:
    # On the independently written generator an implant often has air or soft tissue on one side and bone on the
    # other; an edge level set between the two took the bone for metal and measured 10 of these 32 implants more
    # than a fifth too wide.
    sized = films = 0
    for n, system in enumerate(random_systems(16, seed=41)):
        for k in range(2):
            data, truth = render_drr_film(system, 300 + 10 * n + k, SceneOptions())
            implant = truth.implants[0]
            length = math.dist(implant.platform_xy, implant.apex_xy)
            on_it = [f for f in find_implants(load_radiograph(data))
                     if f.found and math.dist(_centre(f), _centre(implant)) < 0.35 * length]
            sized += bool(on_it) and abs(on_it[0].diameter_px / implant.diameter_px - 1) < 0.2
            films += 1
    assert sized >= 0.8 * films


def test_a_bright_highlight_inside_an_implant_neither_hides_it_nor_counts_as_one() -> None:
    # Only the highlight clears the highest metal threshold; the implant around it, at a lower one, was taken for
    # the highlight merged with bone and skipped, so the film's one finding was a sliver 9 pixels wide.
    findings = find_implants(_synthetic_film(_Bar(200, 130, 370, grey=0.75),
                                             _Bar(196, 180, 260, half_width=4, depth=0, grey=1.0), width=400))
    assert [f.found for f in findings] == [True]
    assert 48 <= findings[0].diameter_px <= 66 and 200 <= findings[0].length_px <= 280


def test_implants_whose_crowns_touch_are_found_apart_from_them() -> None:
    # Two implants under crowns as bright as themselves, the crowns touching: one component, too large to be an
    # implant and joined along no one axis, on which finder 4 found nothing. Looking at its pieces too (finder 5)
    # found 20 of the 60 implants finder 4 missed on 1,200 held-out drr films.
    implants = (_Bar(150, 110, 340), _Bar(300, 120, 340))
    crowns = (_Bar(150, 330, 480, half_width=45, depth=0), _Bar(300, 330, 480, half_width=45, depth=0))
    contact = _Bar(225, 400, 410, half_width=40, depth=0)
    findings = find_implants(_synthetic_film(*implants, *crowns, contact, width=450))
    for implant in implants:  # each one's apex where it is, the implant's own and not its crown's far end
        assert any(f.found and math.dist(f.apex_xy, (implant.x, implant.top)) < 15 for f in findings)


def test_a_threaded_post_far_narrower_than_the_implant_is_not_an_implant() -> None:
    # Implants on one film share its magnification and differ at most about twofold in width; a root-canal post
    # or a filling's edge can ripple like threads and score high, but a quarter of the implant's width it is none.
    findings = find_implants(_synthetic_film(_Bar(150, 130, 370), _Bar(380, 200, 300, half_width=7, depth=2, pitch=8)))
    assert len(findings) == 1 and abs(findings[0].platform_xy[0] - 150) < 10


def test_an_implant_threaded_only_near_its_apex_is_kept_beside_a_fully_threaded_one() -> None:
    # A long smooth neck (or fine threads that barely reach the outline) scored a hundredth of a fully threaded
    # neighbour, below the share a finding must reach to be kept.
    findings = find_implants(_synthetic_film(_Bar(150, 130, 370), _Bar(350, 140, 370, threads_from=347)))
    assert sorted(round(f.platform_xy[0], -1) for f in findings) == [150, 350]


def test_the_implant_in_the_middle_comes_first_and_one_the_edge_cuts_last() -> None:
    # A film is taken centred on the implant asked about; a longer neighbour scored higher and became the case's
    # first implant, whose candidates the reviewer sees first (the demo's short implant fell out of its top 3),
    # and a reference film's crop: on rendered films the first implant was the asked-for one on 4 films in 5.
    cut, central_and_short, long = _Bar(10, 100, 420), _Bar(250, 180, 300), _Bar(420, 60, 460)
    findings = find_implants(_synthetic_film(cut, central_and_short, long))
    assert [round(f.platform_xy[0], -1) for f in findings] == [250, 420, 20]
    assert findings[1].score > 1.5 * findings[0].score


def test_a_thin_short_finding_within_another_is_a_fragment_of_it_whatever_its_score() -> None:
    implant = _Located((200.0, 130.0), (200.0, 370.0), 58.0, score=0.5, margin=0.3)
    sliver = _Located((170.0, 140.0), (230.0, 140.0), 9.0, score=3.0, margin=0.3)  # a highlight read as threaded
    neighbour = _Located((320.0, 130.0), (320.0, 300.0), 20.0, score=1.0, margin=0.3)  # thin, but beside it
    assert _distinct([sliver, neighbour, implant]) == [neighbour, implant]


def test_a_film_without_metal_falls_back_to_the_whole_film() -> None:
    film = Image.fromarray((np.random.default_rng(0).random((200, 160)) * 120).astype(np.uint8)).convert("RGB")
    findings = find_implants(film)
    assert len(findings) == 1 and not findings[0].found
    assert findings[0].crop.shape == (CROP_HEIGHT, CROP_WIDTH)


def test_the_crop_puts_the_platform_at_its_row_and_the_diameter_at_its_width() -> None:
    data, truth = render_film(random_systems(1, seed=8)[0], 2, PLAIN)
    implant = truth.implants[0]
    crop = canonical_crop(load_radiograph(data), implant.platform_xy, implant.apex_xy, implant.diameter_px)
    metal = crop >= 0.5 * (int(crop.max()) + int(np.median(crop)))
    rows = np.flatnonzero(metal[:, CROP_WIDTH // 2 - 2:CROP_WIDTH // 2 + 3].any(axis=1))
    assert abs(rows[0] - PLATFORM_ROW) <= 3  # the implant starts at the platform row
    widest = max(np.ptp(np.flatnonzero(row)) + 1 for row in metal[PLATFORM_ROW:PLATFORM_ROW + 60] if row.any())
    assert 0.8 * CROP_DIAMETER <= widest <= 1.15 * CROP_DIAMETER


def test_the_fast_opening_is_scipys_binary_opening() -> None:
    rng = np.random.default_rng(4)
    for shape in [(1, 9), (2, 2), (3, 3), (5, 7), (64, 40)]:
        for density in (0.3, 0.6, 0.9):
            mask = rng.random(shape) < density
            assert np.array_equal(_opened(mask), ndimage.binary_opening(mask)), (shape, density)


def test_sampling_is_bilinear_interpolation_at_each_crop_pixels_film_position() -> None:
    rng = np.random.default_rng(5)
    grey = rng.random((300, 200)).astype(np.float32)
    for frame in (_Frame((90.0, 60.0), (120.0, 230.0), 20.0), _Frame((150.0, 250.0), (40.0, 90.0), 30.0)):
        crop = _sample(grey, frame, CROP_WIDTH, CROP_HEIGHT)
        points = [frame.film_point(u + 0.5, v + 0.5) for v in range(CROP_HEIGHT) for u in range(CROP_WIDTH)]
        xs, ys = np.array(points).T
        expected = ndimage.map_coordinates(grey, [ys, xs], order=1, mode="constant", cval=0.0)
        assert np.allclose(crop.ravel(), expected, atol=1e-5)
