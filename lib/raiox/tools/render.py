"""Synthetic periapical radiographs of parametric implant systems: demo catalogs and labelled test films.

An implant is a solid of revolution (body, taper, threads, collar, apex, connection); a film is its
projected thickness (metal saturates) over bone-like texture and neighbouring roots, seen at a random
rotation, vertical angulation (foreshortening), scale and offset, with exposure, blur and noise. The systems
here are fictional; rendered films are not real films.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from raiox.tools.implant_designs import ImplantDesign, demo_catalog

__all__ = ["ImplantDesign", "View", "demo_catalog", "film_bytes", "render", "render_film"]

PX_PER_MM = 12.0  # drawing resolution before the view is applied


@dataclass(frozen=True)
class View:
    rotation_deg: float = 0.0
    angulation_deg: float = 0.0  # vertical angulation: foreshortens the implant's length by cos()
    scale: float = 1.0
    offset: tuple[float, float] = (0.0, 0.0)  # fraction of the film
    exposure: float = 1.0
    noise: float = 0.03
    blur: float = 0.8

    @classmethod
    def random(cls, rng: np.random.Generator, max_angulation: float = 20.0) -> View:
        return cls(
            rotation_deg=float(rng.uniform(-15, 15)),
            angulation_deg=float(rng.uniform(-max_angulation, max_angulation)),
            scale=float(rng.uniform(0.8, 1.15)),
            offset=(float(rng.uniform(-0.12, 0.12)), float(rng.uniform(-0.08, 0.08))),
            exposure=float(rng.uniform(0.75, 1.25)),
            noise=float(rng.uniform(0.01, 0.05)),
            blur=float(rng.uniform(0.3, 1.4)),
        )


def _profile(phase: np.ndarray, shape: str) -> np.ndarray:
    """Thread height (0…1) along one pitch."""
    if shape == "square":
        return (phase < 0.5).astype(float)
    if shape == "buttress":
        return np.clip(1.0 - phase * 1.6, 0.0, 1.0)
    return 1.0 - np.abs(2.0 * phase - 1.0)  # v


def implant_thickness(design: ImplantDesign) -> np.ndarray:
    """Projected metal thickness (mm) of the implant, upright, platform at the top."""
    length_px = int(design.length_mm * PX_PER_MM)
    radius_mm = design.diameter_mm / 2
    width_px = int((radius_mm + design.thread_depth_mm) * 2 * PX_PER_MM) + 8
    y_mm = np.arange(length_px)[:, None] / PX_PER_MM
    x_mm = (np.arange(width_px)[None, :] - width_px / 2) / PX_PER_MM
    along = y_mm / design.length_mm
    core = radius_mm - design.thread_depth_mm
    core = core * (1 - design.taper * np.clip((along - 0.3) / 0.7, 0, 1))
    threaded = y_mm > design.collar_mm
    pitch = design.thread_pitch_mm
    phase = (y_mm % pitch) / pitch
    thread = design.thread_depth_mm * _profile(phase, design.thread_profile)
    if design.microthreads:
        micro = (y_mm <= design.collar_mm) & (y_mm > 0.2)
        thread = np.where(micro, 0.12 * _profile((y_mm % 0.25) / 0.25, "v"), thread)
        threaded = threaded | micro
    radius = np.where(threaded, core + thread, radius_mm - 0.05)
    apex_zone = along > 0.9
    if design.apex == "round":
        radius = np.where(apex_zone, radius * np.sqrt(np.clip(1 - ((along - 0.9) / 0.1) ** 2, 0, 1)), radius)
    elif design.apex == "pointed":
        radius = np.where(apex_zone, radius * np.clip((1 - along) / 0.1, 0, 1), radius)
    thickness = 2 * np.sqrt(np.clip(radius**2 - x_mm**2, 0, None))
    inner = radius_mm * 0.45
    depth = {"internal-hex": 0.35, "conical": 0.45, "external-hex": 0.0}[design.connection]
    if depth:
        hollow_r = inner * (1 - (y_mm / (design.length_mm * depth)) * (0.5 if design.connection == "conical" else 0))
        hollow = (y_mm < design.length_mm * depth) * 2 * np.sqrt(np.clip(hollow_r**2 - x_mm**2, 0, None))
        thickness = thickness - hollow
    if design.apex_vent:
        vent = (np.abs(y_mm - design.length_mm * 0.85) < 0.4) & (np.abs(x_mm) < radius_mm * 0.35)
        thickness = np.where(vent, thickness * 0.25, thickness)
    if design.connection == "external-hex":
        hex_px = int(0.8 * PX_PER_MM)
        cap = np.zeros((hex_px, width_px))
        cap[:, np.abs(x_mm[0]) < radius_mm * 0.7] = 2 * radius_mm * 0.7
        thickness = np.vstack([cap, thickness])
    return thickness


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-like blur: three box passes per axis by cumulative sums (PIL blurs no float images).
    Three boxes of odd width w (centred) have variance (w² - 1) / 4, so w ≈ sqrt(4σ² + 1)."""
    width = 2 * round((math.sqrt(4 * sigma**2 + 1) - 1) / 2) + 1
    for axis in (0, 1):
        size = image.shape[axis]
        pad = [(0, 0), (0, 0)]
        pad[axis] = (width // 2 + 1, width - width // 2 - 1)
        for _ in range(3):
            summed = np.cumsum(np.pad(image, pad, mode="edge"), axis=axis)
            image = (np.take(summed, range(width, width + size), axis=axis)
                     - np.take(summed, range(size), axis=axis)) / width
    return image


def _bone(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    width, height = size
    coarse = Image.fromarray((rng.random((height // 16 + 1, width // 16 + 1)) * 255).astype(np.uint8))
    fine = Image.fromarray((rng.random((height // 3 + 1, width // 3 + 1)) * 255).astype(np.uint8))
    low = np.asarray(coarse.resize(size, Image.Resampling.BICUBIC), dtype=float) / 255
    trabecular = np.asarray(fine.resize(size, Image.Resampling.BICUBIC), dtype=float) / 255
    film = 0.25 + 0.2 * low + 0.08 * trabecular
    for side in (-1, 1):  # neighbouring roots, brighter than bone
        centre = width / 2 + side * width * rng.uniform(0.32, 0.42)
        xs = np.arange(width)[None, :]
        ys = np.arange(height)[:, None] / height
        root_width = width * rng.uniform(0.08, 0.12) * (1.1 - 0.6 * ys)
        film += 0.18 * np.clip(1 - ((xs - centre) / root_width) ** 2, 0, 1) * (ys < rng.uniform(0.75, 0.95))
    return film


def render_film(design: ImplantDesign, view: View, rng: np.random.Generator,
                size: tuple[int, int] = (320, 400)) -> np.ndarray:
    """One film as floats in 0…1 (height, width)."""
    thickness = implant_thickness(design)
    implant = Image.fromarray(np.clip(thickness / (design.diameter_mm * 0.9), 0, 1).astype(np.float32), mode="F")
    height_px = max(8, int(implant.height * math.cos(math.radians(view.angulation_deg))))
    implant = implant.resize((implant.width, height_px), Image.Resampling.BILINEAR)
    film_scale = size[1] * 0.55 / (design.length_mm * PX_PER_MM) * view.scale * (design.length_mm / 11.0) ** 0.5
    implant = implant.resize((max(4, int(implant.width * film_scale)), max(4, int(implant.height * film_scale))),
                             Image.Resampling.BILINEAR)
    implant = implant.rotate(view.rotation_deg, resample=Image.Resampling.BILINEAR, expand=True)
    layer = Image.new("F", size, 0.0)
    left = int(size[0] / 2 - implant.width / 2 + view.offset[0] * size[0])
    top = int(size[1] * 0.18 + view.offset[1] * size[1])
    layer.paste(implant, (left, top))
    metal = np.asarray(layer, dtype=float)
    film = _bone(rng, size) * (1 - metal) + 0.97 * metal  # metal is near-opaque: it replaces the bone
    film = 1 - np.exp(-view.exposure * 2.2 * film)  # detector response
    film = film / (1 - math.exp(-view.exposure * 2.2))
    film = _blur(film, view.blur) + rng.normal(0, view.noise, size=(size[1], size[0]))
    return np.clip(film, 0, 1)


def film_bytes(film: np.ndarray, *, bits: Literal[8, 16] = 8, fmt: str = "PNG") -> bytes:
    """Encode a film: 8-bit greyscale PNG/JPEG, or 16-bit greyscale PNG (12-bit sensor range)."""
    out = io.BytesIO()
    if bits == 16:
        Image.fromarray((film * 4095).astype(np.uint16)).save(out, format="PNG")
    else:
        Image.fromarray((film * 255).astype(np.uint8), mode="L").save(out, format=fmt)
    return out.getvalue()


def render(design: ImplantDesign, seed: int, *, bits: Literal[8, 16] = 8, fmt: str = "PNG",
           max_angulation: float = 20.0) -> bytes:
    """A random view of `design`, reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    return film_bytes(render_film(design, View.random(rng, max_angulation), rng), bits=bits, fmt=fmt)
