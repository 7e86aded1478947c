"""Synthetic periapical radiographs of parametric implant systems, drawn flat (the project's first generator).

An implant is a profile of revolution (core, taper, threads offset by half a lead between its two sides,
collar or micro-threads, apex, vent and flutes, connection) whose projected thickness is drawn at 16 px/mm;
what sits on it (cover screw, healing cap, abutment, crown of one of four materials) is stacked on the
platform. A film is that column, foreshortened by the vertical angulation, tilted, placed over bone with a
crest line, neighbouring teeth (sometimes with an amalgam filling) and neighbouring implants, then exposed,
blurred and noised, and stored as a clinic would: upper-jaw films upside down, some rotated by quarter
turns or mirrored, 8- or 16-bit PNG or JPEG, some photographed off a screen. The systems are fictional and
rendered films are not real films. `raiox.tools.render_drr` is the second, independently written generator.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from PIL import Image

from raiox.tools.implant_designs import (
    ANY_SCENE,
    RESTORATIONS,
    FilmTruth,
    ImplantDesign,
    ImplantTruth,
    SceneOptions,
    demo_catalog,
    random_system,
)

__all__ = ["ImplantDesign", "SceneOptions", "demo_catalog", "implant_thickness", "render", "render_film"]

_T = TypeVar("_T")
PX_PER_MM = 16.0  # drawing resolution before the film's own scale is applied


def _profile(phase: np.ndarray, shape: str) -> np.ndarray:
    """Thread height (0…1) along one pitch, the crest at phase 0."""
    if shape == "square":
        return (phase < 0.45).astype(float)
    if shape == "buttress":  # flat (load-bearing) face towards the platform
        return np.clip(1.0 - phase * 1.6, 0.0, 1.0)
    if shape == "reverse-buttress":
        return np.clip(1.0 - (1.0 - phase) * 1.6, 0.0, 1.0)
    return 1.0 - np.abs(2.0 * phase - 1.0)  # v


def _side_radius(design: ImplantDesign, y_mm: np.ndarray, shift_mm: float) -> np.ndarray:
    """The outline's radius (mm) at depth y_mm below the platform on one side of the implant; the two sides'
    crests are half a lead apart, as a projected helix shows them."""
    length = design.length_mm
    radius_mm = design.diameter_mm / 2
    along = y_mm / length
    start = min(design.taper_start, 0.95)
    core = (radius_mm - design.thread_depth_mm) * (1 - design.taper * np.clip((along - start) / (1 - start), 0, 1))
    pitch = design.thread_pitch_mm
    phase = ((y_mm + shift_mm) % pitch) / pitch
    thread = design.thread_depth_mm * _profile(phase, design.thread_profile)
    threaded = y_mm > design.collar_mm
    if design.microthreads:
        micro_pitch = design.microthread_pitch_mm
        micro = (y_mm <= design.collar_mm) & (y_mm > 0.15)
        thread = np.where(micro, 0.1 * _profile(((y_mm + shift_mm) % micro_pitch) / micro_pitch, "v"), thread)
        threaded = threaded | micro
    neck = radius_mm - 0.05 + design.collar_flare
    radius = np.where(threaded, core + thread, np.where(y_mm <= design.collar_mm, neck, core + thread))
    if design.microthreads:
        radius = np.where(y_mm <= design.collar_mm, np.maximum(radius, neck - 0.1), radius)
    apex_zone = along > 0.9
    if design.apex == "round":
        radius = np.where(apex_zone, radius * np.sqrt(np.clip(1 - ((along - 0.9) / 0.1) ** 2, 0, 1)), radius)
    elif design.apex == "pointed":
        radius = np.where(apex_zone, radius * np.clip((1 - along) / 0.1, 0, 1), radius)
    else:
        radius = np.where(along > 0.97, radius * 0.92, radius)
    if design.apex_grooves:  # flutes cut the threads away on the apical third
        radius = np.where((along > 0.66) & (along < 0.93), np.minimum(radius, core + 0.3 * design.thread_depth_mm),
                          radius)
    return np.maximum(radius, 0.0)


def implant_thickness(design: ImplantDesign, px_per_mm: float = PX_PER_MM) -> tuple[np.ndarray, int]:
    """Projected metal thickness (mm) of the implant, upright, platform at the top, and the row of the
    platform (an external hex's boss stands above it)."""
    length_px = int(design.length_mm * px_per_mm)
    radius_mm = design.diameter_mm / 2
    half = int((radius_mm + max(design.collar_flare, 0) + 0.1) * px_per_mm) + 3
    y_mm = (np.arange(length_px)[:, None] + 0.5) / px_per_mm
    x_mm = (np.arange(-half, half)[None, :] + 0.5) / px_per_mm
    lead = design.thread_pitch_mm * design.thread_leads
    left, right = _side_radius(design, y_mm, 0.0), _side_radius(design, y_mm, lead / 2)
    # An outline radius per side: the chord through the solid at x, from the side it is nearer to.
    radius = np.where(x_mm < 0, left, right)
    thickness = 2 * np.sqrt(np.clip(radius**2 - x_mm**2, 0, None))
    if design.connection != "external-hex":
        depth_mm = {"internal-hex": 0.3, "tri-channel": 0.28, "conical": 0.4}[design.connection] * design.length_mm
        inner = radius_mm * (0.5 if design.connection == "conical" else 0.45)
        taper = np.clip(y_mm / depth_mm, 0, 1)
        if design.connection == "conical":
            hollow_r = inner * (1 - 0.55 * taper)
        else:  # a hex or tri-lobe, then the narrower screw thread below it
            hollow_r = np.where(taper < 0.35, inner, inner * 0.6)
        hollow = (y_mm < depth_mm) * 2 * np.sqrt(np.clip(hollow_r**2 - x_mm**2, 0, None))
        thickness = np.maximum(thickness - hollow, 0)
    if design.apex_vent:
        vent = (np.abs(y_mm - design.length_mm * 0.84) < 0.35) & (np.abs(x_mm) < radius_mm * 0.9)
        thickness = np.where(vent, thickness * 0.35, thickness)
    platform_row = 0
    if design.connection == "external-hex":
        hex_px = int(0.7 * px_per_mm)
        cap = np.zeros((hex_px, thickness.shape[1]))
        cap[:, np.abs(x_mm[0]) < radius_mm * 0.68] = 2 * radius_mm * 0.6
        thickness = np.vstack([cap, thickness])
        platform_row = hex_px
    return thickness, platform_row


def _restoration(kind: str, design: ImplantDesign, rng: np.random.Generator, width_px: int) -> np.ndarray:
    """Radiopacity (0…1) of what sits on the platform, bottom row touching it, `width_px` wide (centred)."""
    if kind == "none":
        return np.zeros((0, width_px))
    d = design.diameter_mm
    x_mm = (np.arange(width_px)[None, :] - width_px / 2 + 0.5) / PX_PER_MM

    def column(height_mm: float, bottom_r: float, top_r: float, opacity: float) -> np.ndarray:
        rows = max(1, int(height_mm * PX_PER_MM))
        frac = np.linspace(1, 0, rows)[:, None]  # 1 at the top row, 0 at the bottom
        r = bottom_r + (top_r - bottom_r) * frac
        return opacity * np.clip(2 * np.sqrt(np.clip(r**2 - x_mm**2, 0, None)) / (d * 0.8), 0, 1)

    if kind == "cover-screw":
        return column(rng.uniform(0.3, 0.7), d * 0.48, d * 0.42, 0.95)
    if kind == "healing-cap":
        r = d / 2 * rng.uniform(0.85, 1.3)
        return column(rng.uniform(2.5, 5.5), r, r * rng.uniform(0.85, 1.05), 0.95)
    base_r = d / 2 * rng.uniform(0.62, 1.0)  # below ~0.95: platform switching
    abutment = column(rng.uniform(4.0, 7.0), base_r, base_r * rng.uniform(0.55, 0.8), 0.95)
    channel = np.abs(x_mm) < d * 0.12  # the screw's channel reads darker
    abutment = np.where(channel & (np.arange(len(abutment))[:, None] < len(abutment) * 0.8), abutment * 0.75, abutment)
    if kind == "abutment":
        return abutment
    crown_h = rng.uniform(6.0, 8.5)
    crown_w = rng.uniform(7.0, 10.5) / 2
    rows = int(crown_h * PX_PER_MM)
    frac = (np.arange(rows)[:, None] + 0.5) / rows  # 0 at the crown's top (occlusal), 1 at its cervical end
    half_width = crown_w * np.where(frac < 0.75, 1.0 - 0.08 * (frac / 0.75) ** 2,
                                    0.92 - 0.55 * np.clip((frac - 0.75) / 0.25, 0, 1) ** 1.5)
    bulge = np.clip(1 - (x_mm / np.maximum(half_width, 1e-3)) ** 2, 0, 1) ** 0.5
    cusps = 1 - 0.25 * np.exp(-((frac - 0.03) / 0.06) ** 2) * (0.5 + 0.5 * np.cos(x_mm * math.pi / (crown_w * 0.5)))
    material = rng.choice(["metal-ceramic", "zirconia", "lithium-disilicate", "composite"], p=[0.35, 0.3, 0.25, 0.1])
    opacity = {"metal-ceramic": 0.75, "zirconia": 0.85, "lithium-disilicate": 0.45, "composite": 0.25}[material]
    crown = opacity * bulge * cusps
    if material == "metal-ceramic":  # the metal coping inside shows as a brighter cap over the abutment
        coping = np.clip(1 - (x_mm / np.maximum(half_width * 0.7, 1e-3)) ** 2, 0, 1) ** 0.5 * (frac > 0.2)
        crown = np.maximum(crown, 0.97 * coping)
    overlap = min(len(abutment), int(rows * 0.45))  # the crown sits over the abutment's upper part
    stacked = np.zeros((rows + len(abutment) - overlap, width_px))
    stacked[len(stacked) - len(abutment):] = abutment
    stacked[:rows] = np.maximum(stacked[:rows], crown)
    return stacked


def _box_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-like blur: three box passes per axis by cumulative sums (PIL blurs no float images).
    Three boxes of odd width w (centred) have variance (w² - 1) / 4, so w ≈ sqrt(4σ² + 1)."""
    width = 2 * round((math.sqrt(4 * sigma**2 + 1) - 1) / 2) + 1
    if width <= 1:
        return image
    for axis in (0, 1):
        size = image.shape[axis]
        pad = [(0, 0), (0, 0)]
        pad[axis] = (width // 2 + 1, width - width // 2 - 1)
        for _ in range(3):
            summed = np.cumsum(np.pad(image, pad, mode="edge"), axis=axis)
            image = (np.take(summed, range(width, width + size), axis=axis)
                     - np.take(summed, range(size), axis=axis)) / width
    return image


def _noise_field(rng: np.random.Generator, size: tuple[int, int], cell: float) -> np.ndarray:
    """Smooth random values (0…1) over `size` (width, height) with features about `cell` pixels across."""
    width, height = size
    coarse = Image.fromarray((rng.random((int(height / cell) + 2, int(width / cell) + 2)) * 255).astype(np.uint8))
    return np.asarray(coarse.resize(size, Image.Resampling.BICUBIC), dtype=np.float32) / 255


def _bone(rng: np.random.Generator, size: tuple[int, int], crest_y: float, mm: float) -> np.ndarray:
    """Attenuation of the scene without metal: bone below the crest line, soft tissue above, trabecular texture,
    neighbouring teeth (roots into the bone, crowns above it), sometimes an amalgam filling (`mm` px per mm)."""
    width, height = size
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    crest = crest_y + (_noise_field(rng, (width, 1), 6 * mm)[0] - 0.5) * 2.0 * mm
    in_bone = 1 / (1 + np.exp(-(ys - crest) / (0.4 * mm)))
    trabecular = _noise_field(rng, size, rng.uniform(0.4, 0.9) * mm)
    density = 0.05 + in_bone * (0.14 + 0.12 * _noise_field(rng, size, 5 * mm) + 0.1 * trabecular)
    for side in (-1, 1):
        if rng.random() < 0.15:
            continue  # a missing neighbour
        centre = width / 2 + side * rng.uniform(7.5, 10.0) * mm
        root_w = rng.uniform(2.5, 3.5) * mm * np.clip(1.0 - (ys - crest_y) / (14 * mm), 0.25, 1.0)
        root = np.clip(1 - ((xs - centre) / root_w) ** 2, 0, 1) * (ys > crest_y - 1.5 * mm) * (
            ys < crest_y + rng.uniform(11, 16) * mm)
        canal = np.clip(1 - ((xs - centre) / (0.35 * mm)) ** 2, 0, 1) * (ys > crest_y + mm)
        crown_w, crown_h = rng.uniform(3.5, 5.0) * mm, rng.uniform(6, 8.5) * mm
        depth = np.clip((crest_y - 0.5 * mm - ys) / crown_h, 0, 1)  # 0 at the neck, 1 at the occlusal edge
        bulge = crown_w * np.where(depth > 0, 0.7 + 0.3 * np.sin(np.pi * np.clip(depth * 0.9, 0, 1)), 0)
        crown = np.clip(1 - ((xs - centre) / np.maximum(bulge, 1e-3)) ** 2, 0, 1) ** 0.6 * (depth > 0) * (depth < 1)
        density = density + 0.12 * root - 0.05 * canal + 0.38 * crown
        if rng.random() < 0.25:  # an amalgam filling: as bright as metal, but no implant
            fy, fx = crest_y - rng.uniform(4, 7) * mm, centre + rng.uniform(-1.5, 1.5) * mm
            blob = ((xs - fx) / (rng.uniform(1.2, 2.5) * mm)) ** 2 + ((ys - fy) / (rng.uniform(0.8, 1.5) * mm)) ** 2
            density = np.maximum(density, 0.97 * (blob < 1))
    return density.astype(np.float32)


@dataclass(frozen=True)
class _Placed:
    sprite: np.ndarray  # radiopacity 0…1, (rows, cols), upright
    platform: tuple[float, float]  # (x, y) in the sprite
    apex: tuple[float, float]
    diameter_px: float


def _implant_column(design: ImplantDesign, restoration: str, rng: np.random.Generator) -> _Placed:
    thickness, platform_row = implant_thickness(design)
    metal = np.clip(thickness / (design.diameter_mm * 0.85), 0, 1) * 0.98
    on_top = _restoration(restoration, design, rng, max(metal.shape[1], int(11 * PX_PER_MM)) // 2 * 2)
    if len(on_top):  # trimmed to the columns it covers, symmetrically
        used = np.flatnonzero(on_top.max(axis=0) > 0)
        margin = min(used[0], on_top.shape[1] - 1 - used[-1]) if len(used) else 0
        on_top = on_top[:, margin:on_top.shape[1] - margin]
        if on_top.shape[1] < metal.shape[1]:
            pad = (metal.shape[1] - on_top.shape[1]) // 2
            on_top = np.pad(on_top, ((0, 0), (pad, metal.shape[1] - on_top.shape[1] - pad)))
    width = max(metal.shape[1], on_top.shape[1] if len(on_top) else 0)
    if len(on_top):  # the crown is wider than the implant: widen both to one column
        pad = (width - metal.shape[1]) // 2
        metal = np.pad(metal, ((0, 0), (pad, width - metal.shape[1] - pad)))
        top_rows = max(0, len(on_top) - platform_row)
        column = np.zeros((top_rows + len(metal), width))
        column[top_rows:] = metal
        column[top_rows + platform_row - len(on_top):top_rows + platform_row] = np.maximum(
            column[top_rows + platform_row - len(on_top):top_rows + platform_row], on_top)
        platform_row += top_rows
        metal = column
    centre_x = metal.shape[1] / 2
    apex_row = platform_row + design.length_mm * PX_PER_MM
    return _Placed(metal, (centre_x, float(platform_row)), (centre_x, float(apex_row)), design.diameter_mm * PX_PER_MM)


def _transform_point(point: tuple[float, float], *, sprite: tuple[int, int], scale: tuple[float, float],
                     angle_deg: float, rotated: tuple[int, int], left: float, top: float) -> tuple[float, float]:
    """A sprite point through the film's foreshortening (scale), rotation (PIL, counter-clockwise, expanded)
    and placement."""
    x, y = point[0] * scale[0], point[1] * scale[1]
    w, h = sprite[1] * scale[0], sprite[0] * scale[1]
    cx, cy = w / 2, h / 2
    a = math.radians(angle_deg)
    dx, dy = x - cx, y - cy
    rx, ry = dx * math.cos(a) + dy * math.sin(a), -dx * math.sin(a) + dy * math.cos(a)
    return left + rotated[0] / 2 + rx, top + rotated[1] / 2 + ry


def _place(layer: np.ndarray, placed: _Placed, *, film_scale: float, angulation_deg: float, tilt_deg: float,
           platform_at: tuple[float, float]) -> tuple[tuple[float, float], tuple[float, float], float] | None:
    """Draw an implant column on `layer` (max) with its platform at `platform_at`; its platform, apex and
    diameter on the film, or None when it fell outside."""
    sprite = Image.fromarray(placed.sprite.astype(np.float32), mode="F")
    scale = (film_scale, film_scale * math.cos(math.radians(angulation_deg)))
    size = (max(2, round(sprite.width * scale[0])), max(2, round(sprite.height * scale[1])))
    sprite = sprite.resize(size, Image.Resampling.BILINEAR)
    scale = (size[0] / placed.sprite.shape[1], size[1] / placed.sprite.shape[0])
    rotated = sprite.rotate(tilt_deg, resample=Image.Resampling.BILINEAR, expand=True)
    where = dict(sprite=placed.sprite.shape, scale=scale, angle_deg=tilt_deg, rotated=rotated.size)
    px, py = _transform_point(placed.platform, left=0, top=0, **where)  # type: ignore[arg-type]
    left, top = platform_at[0] - px, platform_at[1] - py
    platform = _transform_point(placed.platform, left=left, top=top, **where)  # type: ignore[arg-type]
    apex = _transform_point(placed.apex, left=left, top=top, **where)  # type: ignore[arg-type]
    pixels = np.asarray(rotated, dtype=np.float32)
    h, w = layer.shape
    x0, y0 = int(round(left)), int(round(top))
    sx0, sy0 = max(0, -x0), max(0, -y0)
    x1, y1 = min(w, x0 + pixels.shape[1]), min(h, y0 + pixels.shape[0])
    if x1 <= max(0, x0) or y1 <= max(0, y0):
        return None
    region = layer[max(0, y0):y1, max(0, x0):x1]
    np.maximum(region, pixels[sy0:sy0 + region.shape[0], sx0:sx0 + region.shape[1]], out=region)
    return platform, apex, placed.diameter_px * scale[0]


def _photograph(film: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The film shown on a screen and photographed: perspective, moiré, a glare gradient and a colour cast.
    Returns RGB floats and the 3×3 homography taking film points to photo points."""
    h, w = film.shape
    out_w, out_h = int(w * rng.uniform(1.0, 1.25)), int(h * rng.uniform(1.0, 1.25))
    margin = 0.08
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=float)
    target = np.array([[out_w * margin, out_h * margin], [out_w * (1 - margin), out_h * margin],
                       [out_w * (1 - margin), out_h * (1 - margin)], [out_w * margin, out_h * (1 - margin)]])
    target += rng.uniform(-0.06, 0.06, size=(4, 2)) * np.array([out_w, out_h])
    homography = _homography(corners, target)
    inverse = np.linalg.inv(homography)
    coeffs = (inverse / inverse[2, 2]).flatten()[:8]
    screen = Image.fromarray((film * 255).astype(np.uint8), mode="L")
    photo = np.asarray(screen.transform((out_w, out_h), Image.Transform.PERSPECTIVE, tuple(coeffs),
                                        Image.Resampling.BILINEAR, fillcolor=20), dtype=np.float32) / 255
    ys, xs = np.mgrid[0:out_h, 0:out_w].astype(np.float32)
    period, angle = rng.uniform(3, 7), rng.uniform(0, math.pi)
    moire = 0.04 * np.sin(2 * math.pi * (xs * math.cos(angle) + ys * math.sin(angle)) / period)
    gx, gy = rng.uniform(0, out_w), rng.uniform(0, out_h)
    glare = 0.25 * np.exp(-((xs - gx) ** 2 + (ys - gy) ** 2) / (2 * (0.35 * max(out_w, out_h)) ** 2))
    grey = np.clip(photo * rng.uniform(0.75, 1.0) + moire + glare + 0.05, 0, 1)
    cast = rng.uniform(0.85, 1.1, size=3)
    return np.clip(grey[..., None] * cast[None, None, :], 0, 1), homography


def _homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    rows = []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y, -u])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y, -v])
    _, _, vt = np.linalg.svd(np.asarray(rows))
    return vt[-1].reshape(3, 3) / vt[-1, -1]


def _pick(value: _T | None, draw: Callable[[], _T]) -> _T:
    """The scene option asked for, else a random draw."""
    return draw() if value is None else value


def render_film(design: ImplantDesign, seed: int, options: SceneOptions = ANY_SCENE) -> tuple[bytes, FilmTruth]:
    """One film of `design` (at one of its sizes) as the file a clinic would send, and what it shows."""
    rng = np.random.default_rng(seed)
    design = design.random_size(rng)
    upper_jaw = _pick(options.upper_jaw, lambda: bool(rng.random() < 0.35))
    restoration = _pick(options.restoration, lambda: str(rng.choice(RESTORATIONS, p=[0.3, 0.1, 0.15, 0.15, 0.3])))
    neighbours = _pick(options.neighbours, lambda: int(rng.choice([0, 1, 2], p=[0.7, 0.22, 0.08])))
    photographed = _pick(options.photographed, lambda: bool(rng.random() < 0.08))
    quarter_turns = _pick(options.quarter_turns, lambda: int(rng.choice([0, 1, 2, 3], p=[0.86, 0.05, 0.04, 0.05])))
    mirrored = _pick(options.mirrored, lambda: bool(rng.random() < 0.1))
    bits = _pick(options.bits, lambda: 16 if rng.random() < 0.2 else 8)
    jpeg_quality = _pick(options.jpeg_quality, lambda: int(rng.uniform(60, 95)) if rng.random() < 0.3 else 0)

    # The sensor: its active area and pixel pitch fix the film's size and the implant's size on it.
    sensor_mm = [(20.0, 30.0), (24.0, 32.0), (26.0, 36.0)][int(rng.integers(0, 3))]
    mm_per_px = float(rng.uniform(0.04, 0.09))
    px = 1 / mm_per_px
    width, height = int(sensor_mm[0] * px), int(sensor_mm[1] * px)
    film_scale = px / PX_PER_MM
    crest_y = height * rng.uniform(0.3, 0.45)
    angulation = float(rng.uniform(-25, 25))
    tilt = float(rng.uniform(-20, 20))

    layer = np.zeros((height, width), dtype=np.float32)
    main = _implant_column(design, restoration, rng)
    platform_at = (width / 2 + rng.uniform(-0.12, 0.12) * width, crest_y + rng.uniform(-0.5, 1.5) * px)
    truth = _place(layer, main, film_scale=film_scale, angulation_deg=angulation, tilt_deg=tilt,
                   platform_at=platform_at)
    assert truth is not None
    truths = [ImplantTruth(*truth, design)]
    for side in rng.permutation([-1, 1])[:neighbours]:
        other = random_system(rng, manufacturer="Neighbour", system="Neighbour").random_size(rng)
        placed = _implant_column(other, str(rng.choice(RESTORATIONS)), rng)
        at = (platform_at[0] + side * rng.uniform(7.5, 10.5) * px, crest_y + rng.uniform(-0.5, 1.5) * px)
        near = _place(layer, placed, film_scale=film_scale, angulation_deg=angulation + rng.uniform(-5, 5),
                      tilt_deg=tilt + rng.uniform(-12, 12), platform_at=at)
        if near is not None:
            truths.append(ImplantTruth(*near, other))

    scene = _bone(rng, (width, height), crest_y, px)
    density = np.maximum(scene, layer)
    exposure = rng.uniform(0.75, 1.3)
    film = (1 - np.exp(-exposure * 2.4 * density)) / (1 - math.exp(-exposure * 2.4))
    film = _box_blur(film, rng.uniform(0.3, 1.3) * px / 15)
    film = film + rng.normal(0, rng.uniform(0.008, 0.04), size=film.shape)
    film = np.clip(film, 0, 1) ** rng.uniform(0.8, 1.25)

    points = [np.array([t.platform_xy, t.apex_xy]) for t in truths]
    tags = {f"restoration:{restoration}"}
    if len(truths) > 1:
        tags.add("two-implants")
    if upper_jaw:
        film = film[::-1]
        points = [np.column_stack([p[:, 0], height - p[:, 1]]) for p in points]
        tags.add("upper-jaw")
    if mirrored:
        film = film[:, ::-1]
        points = [np.column_stack([film.shape[1] - p[:, 0], p[:, 1]]) for p in points]
        tags.add("mirrored")
    for _ in range(quarter_turns):  # np.rot90: counter-clockwise, (x, y) → (y, W - x)
        w = film.shape[1]
        film = np.rot90(film)
        points = [np.column_stack([p[:, 1], w - p[:, 0]]) for p in points]
    if quarter_turns == 2:
        tags.add("rotated-180")
    film = np.ascontiguousarray(film)
    scales = [1.0] * len(points)
    if photographed:
        rgb, homography = _photograph(film, rng)
        moved = [_apply_homography(homography, p) for p in points]
        scales = [float(np.linalg.norm(m[1] - m[0]) / max(1e-6, float(np.linalg.norm(p[1] - p[0]))))
                  for m, p in zip(moved, points, strict=True)]
        points = moved
        tags.add("photographed")
        image = Image.fromarray((rgb * 255).astype(np.uint8), mode="RGB")
        jpeg_quality = jpeg_quality or int(rng.uniform(70, 92))
    elif bits == 16 and not jpeg_quality:
        image = Image.fromarray((film * 4095).astype(np.uint16))
        tags.add("16-bit")
    else:
        image = Image.fromarray((film * 255).astype(np.uint8), mode="L")
    out = io.BytesIO()
    if jpeg_quality:
        image.save(out, format="JPEG", quality=jpeg_quality)
        tags.add("jpeg")
    else:
        image.save(out, format="PNG")
    implants = tuple(ImplantTruth((float(p[0, 0]), float(p[0, 1])), (float(p[1, 0]), float(p[1, 1])),
                                  t.diameter_px * s, t.design) for p, t, s in zip(points, truths, scales, strict=True))
    return out.getvalue(), FilmTruth(implants, mm_per_px, frozenset(tags))


def _apply_homography(homography: np.ndarray, points: np.ndarray) -> np.ndarray:
    moved = np.column_stack([points, np.ones(len(points))]) @ homography.T
    return moved[:, :2] / moved[:, 2:3]


def render(design: ImplantDesign, seed: int, options: SceneOptions = ANY_SCENE) -> bytes:
    """A random film of `design`, reproducible from `seed`."""
    return render_film(design, seed, options)[0]
