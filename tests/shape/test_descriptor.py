"""The shape descriptor: thread pitch per diameter as drawn, millimetres with a pixel spacing, free of size."""

from __future__ import annotations

import numpy as np
import pytest

from raiox.adapters.imaging import load_radiograph
from raiox.shape.canonical import canonical_crop
from raiox.shape.descriptor import DESCRIPTOR_SIZE, describe, descriptor_distance
from raiox.tools.implant_designs import ImplantDesign, SceneOptions, random_systems
from raiox.tools.render import render_film

PLAIN = SceneOptions(upper_jaw=False, restoration="none", neighbours=0, photographed=False, quarter_turns=0,
                     mirrored=False, bits=8, jpeg_quality=0)


def _measured(design: ImplantDesign, seed: int):  # type: ignore[no-untyped-def]
    data, truth = render_film(design, seed, PLAIN)
    implant = truth.implants[0]
    crop = canonical_crop(load_radiograph(data), implant.platform_xy, implant.apex_xy, implant.diameter_px)
    return describe(crop, diameter_px=implant.diameter_px, mm_per_px=truth.pixel_spacing_mm), implant.design


@pytest.mark.parametrize("pitch", [0.6, 0.9, 1.2])
def test_thread_pitch_is_measured_per_diameter_and_in_mm(pitch: float) -> None:
    design = ImplantDesign("Test", "Probe", length_mm=12, diameter_mm=4.5, thread_pitch_mm=pitch,
                           thread_depth_mm=0.45, collar_mm=0.8, taper=0.0)
    descriptor, drawn = _measured(design, 1)
    assert descriptor.pitch == pytest.approx(pitch / drawn.diameter_mm, rel=0.2)
    mm = descriptor.in_mm()
    assert mm is not None and mm["pitch_mm"] == pytest.approx(pitch, rel=0.2)
    assert mm["diameter_mm"] == pytest.approx(4.5, rel=0.15)
    assert descriptor.vector().shape == (DESCRIPTOR_SIZE,)


def test_a_system_at_other_sizes_looks_closer_than_another_system() -> None:
    systems = random_systems(10, seed=31, min_distance=3.0)
    same, other = [], []
    for n, system in enumerate(systems):
        lengths, diameters = system.sizes
        a, _ = _measured(system.at_size(lengths[0], diameters[0]), 10 + n)
        b, _ = _measured(system.at_size(lengths[-1], diameters[-1]), 20 + n)
        c, _ = _measured(systems[(n + 1) % len(systems)], 30 + n)
        same.append(descriptor_distance(a, b))
        other.append(descriptor_distance(a, c))
    assert np.median(same) < 0.5 * np.median(other)  # a few films measure badly (a wrong crop); most agree
