"""A third film generator, `silhouette`, for validation only (`raiox eval --renderer silhouette`).

Written apart from the two generators the shape encoder trains on (`raiox.tools.render`, `raiox.tools.render_drr`),
from the facts in shared/RADIOGRAPHS.md and the `ImplantDesign` fields alone, so that a number measured on its
films is a number on a look the encoder never saw. Nothing trains on it: `raiox.tools.shape_data.build_cache`
(`raiox render-cache`) refuses it.

What it models, and how:
- The implant is an outline in its own frame (u across, v along the axis from the platform, millimetres): the
  core radius down the axis (collar and its flare, taper from `taper_start`, a flat, round or pointed apex),
  thread teeth whose form follows `thread_profile`, micro-threads on the collar, an external hex boss, cutting
  flutes. The helix is closed-form: the surface point at azimuth psi carries the tooth at phase
  v / pitch - leads * psi / 2 pi, so the two sides are half a lead apart and crests cross the body slanted.
- The outline is rasterised as a polygon at 4x (PIL) and averaged down for the edges; inside it the brightness is
  the path through metal, the chords through the front and the back surface (each at its own radius), less the
  connection cavity (a darker hex, tri-channel or cone at the platform) and the vent. A vertical beam angle
  shortens the implant and pulls front and back crests apart, so thread detail goes first.
- The scene, in a jaw frame tilted up to about 25 degrees: soft tissue, bone below a wavy crest with saucer-shaped
  loss at implant necks, trabecular texture from band-passed noise at two scales, a cortical crest, neighbouring
  teeth (crown with enamel, one or two tapered roots with pulp, periodontal space and lamina dura, sometimes a
  filling or a root canal filling), the mandibular canal or the sinus floor, a bite block, what sits on the
  implant (cover screw, healing cap, abutment with its screw channel, crown of metal-ceramic, zirconia, lithium
  disilicate or composite) and 0-2 neighbouring implants of other random systems.
- The film: Beer-Lambert attenuation, uneven exposure, sensor blur, quantum noise, a window that saturates the
  metal, gamma, sometimes sharpening and cut sensor corners; upper-jaw films platform down; the file in quarter
  turns or mirrored; 8-bit or 16-bit (12-bit range) PNG, JPEG, or a phone photo of the film on a screen
  (perspective, glare, moire, colour cast).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw
from scipy import ndimage

from raiox.tools.implant_designs import (
    ANY_SCENE,
    RESTORATIONS,
    FilmTruth,
    ImplantDesign,
    ImplantTruth,
    SceneOptions,
    random_system,
)

Array = npt.NDArray[np.floating[Any]]
T = TypeVar("T")
SUPERSAMPLE = 4
# Linear attenuation per mm, chosen for the look of an exposed and windowed film rather than taken from tables.
MU_SOFT, MU_BONE, MU_DENTIN, MU_ENAMEL, MU_METAL = 0.016, 0.055, 0.085, 0.13, 0.55
CROWNS = {"metal-ceramic": 0.28, "zirconia": 1.0, "lithium-disilicate": 0.2, "composite": 0.09}
# Tooth forms over one pitch, from the root on the platform side to the next root: (phases, heights 0…1).
_FORMS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "v": ((0.0, 0.06, 0.46, 0.54, 0.94, 1.0), (0, 0, 1, 1, 0, 0)),
    "square": ((0.0, 0.16, 0.2, 0.66, 0.7, 1.0), (0, 0, 1, 1, 0, 0)),
    "buttress": ((0.0, 0.08, 0.62, 0.7, 0.74, 1.0), (0, 0, 1, 1, 0, 0)),  # gentle platform flank, flat apical face
    "reverse-buttress": ((0.0, 0.26, 0.3, 0.38, 0.92, 1.0), (0, 0, 1, 1, 0, 0)),
}


def _pick(value: T | None, draw: T) -> T:
    return draw if value is None else value


def _tooth(phase: Array, form: str, soften: float = 0.0) -> Array:
    xs, ys = _FORMS[form]
    height = np.interp(np.mod(phase, 1.0), xs, ys)
    if soften:
        mean = float(np.trapezoid(ys, xs))
        height = (1 - soften) * height + soften * mean
    return height


@dataclass(frozen=True)
class _Frame:
    """An object's own frame on the film: `origin` (film px) is v = 0, `axis` the unit vector towards +v;
    u runs along (axis_y, -axis_x); `pixel` mm per film pixel; v shortened by `stretch` (beam angle)."""

    origin: tuple[float, float]
    axis: tuple[float, float]
    pixel: float
    stretch: float = 1.0

    def to_film(self, u: Array, v: Array) -> tuple[Array, Array]:
        ax, ay = self.axis
        along, across = v * self.stretch / self.pixel, u / self.pixel
        return self.origin[0] + along * ax + across * ay, self.origin[1] + along * ay - across * ax

    def grid(self, box: tuple[int, int, int, int]) -> tuple[Array, Array]:
        x0, y0, x1, y1 = box
        dx = np.arange(x0, x1)[None, :] + 0.5 - self.origin[0]
        dy = np.arange(y0, y1)[:, None] + 0.5 - self.origin[1]
        ax, ay = self.axis
        return (dx * ay - dy * ax) * self.pixel, (dx * ax + dy * ay) * self.pixel / self.stretch


def _tip(frame: _Frame, v: float) -> tuple[float, float]:
    """The film point on the frame's axis at `v` mm."""
    x, y = frame.to_film(np.array([0.0]), np.array([v]))
    return float(x[0]), float(y[0])


def _outline(frame: _Frame, v: Array, left: Array, right: Array, shape: tuple[int, int]
             ) -> tuple[tuple[int, int, int, int], Array] | None:
    """The closed outline (film px) down the left side and back up the right, and its box on the film."""
    xs, ys = frame.to_film(np.concatenate([-left, right[::-1]]), np.concatenate([v, v[::-1]]))
    box = (max(0, int(xs.min()) - 2), max(0, int(ys.min()) - 2),
           min(shape[1], int(xs.max()) + 3), min(shape[0], int(ys.max()) + 3))
    if box[2] - box[0] < 2 or box[3] - box[1] < 2:
        return None
    return box, np.column_stack([xs, ys])


def _coverage(box: tuple[int, int, int, int], polygon: Array) -> Array:
    """How much of each pixel in `box` the polygon covers: drawn at SUPERSAMPLE x and averaged down."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    canvas = Image.new("L", (w * SUPERSAMPLE, h * SUPERSAMPLE), 0)
    points = (polygon - (x0, y0)) * SUPERSAMPLE
    ImageDraw.Draw(canvas).polygon([(float(x), float(y)) for x, y in points], fill=255)
    return np.asarray(canvas.reduce(SUPERSAMPLE), dtype=np.float64) / 255


def _chord(u: Array, radius: Array, power: float = 2.0) -> Array:
    """Path (mm) through a body of half-width `radius` at offset u, as deep as wide (power 2: a cylinder)."""
    inside = np.clip(1 - np.abs(u / np.maximum(radius, 1e-6)) ** power, 0, None)
    return 2 * radius * inside ** (1 / power)


def _add_solid(layer: Array, frame: _Frame, v: Array, radius: Array, weight: float, *, power: float = 2.0,
               depth: float = 1.0, ring: float = 0.0) -> tuple[tuple[int, int, int, int], Array] | None:
    """Add `weight` x the path through a solid of revolution (radius along v) to `layer`; with `ring` > 0, the
    coverage of a band that wide around its outline instead. Returns the box and what was added."""
    outer = radius + ring
    found = _outline(frame, v, outer, outer, layer.shape)
    if found is None:
        return None
    box, polygon = found
    cover = _coverage(box, polygon)
    if ring:
        inner = _outline(frame, v, radius, radius, layer.shape)
        if inner is not None:
            ib = inner[0]
            cover[ib[1] - box[1]:ib[3] - box[1], ib[0] - box[0]:ib[2] - box[0]] -= _coverage(*inner)
        added = np.clip(cover, 0, 1)
    else:
        u, vv = frame.grid(box)
        r = np.interp(vv, v, radius, left=0.0, right=0.0) + 0.5 * frame.pixel
        added = depth * _chord(u, r, power) * cover
    layer[box[1]:box[3], box[0]:box[2]] += weight * added
    return box, added


# ---------------------------------------------------------------------------------------------- the implant
@dataclass(frozen=True)
class _Body:
    """An implant's radius down its axis without teeth (`base`), and the depth of its macro- and micro-teeth."""

    design: ImplantDesign
    v: Array
    base: Array
    macro: Array
    micro: Array
    core: float  # core radius below the collar
    apex_start: float


def _body(d: ImplantDesign) -> _Body:
    length, radius = d.length_mm, d.diameter_mm / 2
    depth = min(d.thread_depth_mm, 0.45 * radius)
    core0 = radius - depth
    start = d.taper_start * length
    top = -0.7 if d.connection == "external-hex" else 0.0
    step = min(d.thread_pitch_mm, d.microthread_pitch_mm if d.microthreads else 1.0) / 24
    v = np.linspace(top, length, int((length - top) / step) + 2)
    core = np.where(v < start, core0, core0 * (1 - d.taper * (v - start) / max(length - start, 1e-6)))
    end_r = core0 * (1 - d.taper) if start < length else core0
    apex_h = min({"flat": 0.35, "round": 0.85 * end_r, "pointed": 1.8 * end_r}[d.apex], 0.3 * length)
    a0 = length - apex_h
    r_a = float(np.interp(a0, v, core))
    t = np.clip((v - a0) / apex_h, 0, 1)
    closing = {"flat": r_a * (1 - 0.28 * t ** 3), "round": r_a * np.sqrt(np.clip(1 - t ** 2, 0, 1)),
               "pointed": r_a * (1 - t) ** 0.85}[d.apex]
    core = np.where(v > a0, np.minimum(closing, core), core)
    collar = min(d.collar_mm, 0.45 * length)
    collar_r = max(radius + d.collar_flare, 0.9 * core0)
    blend = np.clip((v - collar) / 0.25, 0, 1)
    base = np.where(v < collar, collar_r, blend * core + (1 - blend) * np.minimum(collar_r, radius))
    base = np.where(v > collar + 0.25, core, base)
    base = base - 0.12 * np.clip(1 - v / 0.12, 0, 1) * (v >= 0)  # the bevel at the platform's edge
    rise = np.clip((v - collar) / (0.6 * d.thread_pitch_mm), 0, 1)
    runout = np.clip((a0 + 0.4 * apex_h - v) / max(d.thread_pitch_mm, 0.5 * apex_h), 0, 1)
    macro = depth * rise * runout * (core > 0.2)
    micro = np.zeros_like(v)
    if d.microthreads:
        md = min(0.12, 0.4 * d.microthread_pitch_mm)
        on = (v > 0.15) & (v < collar - 0.05)
        base = np.where(on, base - md, base)
        micro = np.where(on, md, 0.0)
    if d.connection == "external-hex":
        base = np.where(v < 0, 0.33 * d.diameter_mm, base)
    return _Body(d, v, base, macro, micro, core0, a0)


@dataclass(frozen=True)
class _Pose:
    """How this implant turns on the film: its phase about the axis, flute azimuth, beam angle, vent direction."""

    phase: float
    flute: float
    tan_beam: float
    vent: float


def _radius(body: _Body, pose: _Pose, v: Array, psi: Array) -> Array:
    """The surface radius at axial position v on the azimuth psi (0: towards the beam, +-pi/2: the outline)."""
    d = body.design
    r = np.interp(v, body.v, body.base, left=0.0, right=0.0)
    soften = min(0.7, abs(pose.tan_beam) * body.core / d.thread_pitch_mm)
    phase = v / d.thread_pitch_mm - d.thread_leads * psi / (2 * np.pi) + pose.phase
    r = r + np.interp(v, body.v, body.macro, left=0.0, right=0.0) * _tooth(phase, d.thread_profile, soften)
    if d.microthreads:
        micro_phase = v / d.microthread_pitch_mm - psi / (2 * np.pi) + pose.phase
        r = r + np.interp(v, body.v, body.micro, left=0.0, right=0.0) * _tooth(micro_phase, "v", soften)
    if d.apex_grooves:
        lo = d.length_mm * 0.68
        reach = np.clip((v - lo) / (d.length_mm - lo), 0, 1) * (v < d.length_mm)
        for centre in (pose.flute, pose.flute + np.pi):
            gap = np.abs(np.angle(np.exp(1j * (psi - centre))))
            r = r - 0.45 * body.core * reach * np.clip(1 - gap / 0.45, 0, 1)
    return np.clip(r, 0, None)


def _cavity(d: ImplantDesign, core: float) -> tuple[Array, Array, float]:
    """The connection as a radius profile below the platform (v, half-width, chord power)."""
    v = np.linspace(-0.8, min(4.5, 0.5 * d.length_mm), 120)
    bore = 0.3 * core * (1 + 0.08 * np.sin(v / 0.4 * 2 * np.pi))  # the abutment screw's threaded bore
    if d.connection == "internal-hex":
        r, power = np.where(v < 1.8, 0.58 * core, bore), 4.0
    elif d.connection == "tri-channel":
        r, power = np.where(v < 1.3, 0.6 * core, bore), 3.0
    elif d.connection == "conical":
        cone = 0.64 * core - (0.26 * core) * np.clip(v / 2.6, 0, 1)
        r, power = np.where(v < 2.6, cone, bore), 2.0
    else:  # external hex: only the screw hole through the boss
        r, power = bore, 2.0
    r = np.where(v < (-0.7 if d.connection == "external-hex" else 0.0), 0.0, r)
    return v, r, power


def _draw_implant(metal: Array, occupied: Array, frame: _Frame, body: _Body, pose: _Pose, filled: bool) -> None:
    d = body.design
    edge_v = body.v
    left = _radius(body, pose, edge_v, np.full_like(edge_v, -np.pi / 2))
    right = _radius(body, pose, edge_v, np.full_like(edge_v, np.pi / 2))
    found = _outline(frame, edge_v, left, right, metal.shape)
    if found is None:
        return
    box, polygon = found
    cover = _coverage(box, polygon)
    u, v = frame.grid(box)
    envelope = np.maximum(np.interp(v, body.v, body.base + body.macro + body.micro, left=0.0, right=0.0), 1e-3)
    psi = np.arcsin(np.clip(u / envelope, -1, 1))
    z = np.sqrt(np.clip(envelope ** 2 - u ** 2, 0, None))
    path = np.zeros_like(u)
    for azimuth, sign in ((psi, -1.0), (np.pi - psi, 1.0)):  # front then back surface
        r = _radius(body, pose, v + sign * z * pose.tan_beam, azimuth) + 0.5 * frame.pixel
        path += np.sqrt(np.clip(r ** 2 - u ** 2, 0, None))
    cv, cr, power = _cavity(d, body.core)
    path -= (0.35 if filled else 1.0) * _chord(u, np.interp(v, cv, cr, left=0.0, right=0.0), power)
    if d.apex_vent:
        rv = 0.11 * d.diameter_mm
        centre = max(body.apex_start - rv - 0.3, 0.6 * d.length_mm)
        half = rv + (body.core - rv) * abs(math.sin(pose.vent))
        inside = np.clip(1.5 - np.hypot(u / half, (v - centre) / rv) * 1.5, 0, 1) ** 0.5
        path *= 1 - (0.85 * abs(math.cos(pose.vent)) + 0.4 * abs(math.sin(pose.vent))) * inside
    path = np.clip(path, 0, None) * cover
    metal[box[1]:box[3], box[0]:box[2]] += MU_METAL * path
    occupied[box[1]:box[3], box[0]:box[2]] += path


def _profile(points: list[tuple[float, float]], count: int = 80) -> tuple[Array, Array]:
    vs, rs = zip(*points, strict=True)
    v = np.linspace(vs[0], vs[-1], count)
    return v, np.interp(v, vs, rs)


def _draw_restoration(metal: Array, frame: _Frame, d: ImplantDesign, kind: str, rng: np.random.Generator) -> None:
    """What sits on the platform, in the implant's frame (coronal is negative v)."""
    radius = d.diameter_mm / 2
    if kind == "cover-screw":
        h, top = rng.uniform(0.3, 0.7), radius * rng.uniform(0.8, 1.0)
        s = np.linspace(0, 1, 30)
        _add_solid(metal, frame, -h * s[::-1], top * np.sqrt(np.clip(1 - np.clip((s[::-1] - 0.4) / 0.6, 0, 1) ** 2,
                                                                     0.05, 1)), MU_METAL)
    elif kind == "healing-cap":
        h, wide = rng.uniform(2.5, 6.0), radius * rng.uniform(0.95, 1.35)
        _add_solid(metal, frame, *_profile([(-h, 0.6 * wide), (-h + 0.3, wide), (-0.55 * h, wide),
                                            (0.0, radius * rng.uniform(0.8, 1.0))]), MU_METAL)
        _add_solid(metal, frame, *_profile([(-h, 0.45), (-h + 1.0, 0.45)], 10), -MU_METAL, power=4)
    elif kind in ("abutment", "crown"):
        h = rng.uniform(5.0, 8.0) if kind == "abutment" else rng.uniform(4.0, 6.0)
        emerge, wide = rng.uniform(1.2, 2.8), radius * rng.uniform(0.95, 1.4)
        post = _profile([(-h, wide * rng.uniform(0.5, 0.75)), (-emerge, wide), (0.0, radius * rng.uniform(0.7, 0.95))])
        _add_solid(metal, frame, *post, MU_METAL, power=2.5)
        channel = rng.uniform(0.5, 0.7)
        _add_solid(metal, frame, *_profile([(-h, channel), (-rng.uniform(0.6, 1.6), channel)], 10), -0.8 * MU_METAL)
        if kind == "crown":
            material = str(rng.choice(list(CROWNS), p=[0.35, 0.3, 0.2, 0.15]))
            margin, tall, width = -rng.uniform(0.6, 1.8), rng.uniform(6.5, 9.0), rng.uniform(7.0, 11.0) / 2
            s = np.linspace(0, 1, 120)
            crown_v = margin - tall * s
            crown_r = wide + 0.2 + (width - wide) * np.sin(np.clip(s / 0.45, 0, 1) * np.pi / 2)
            crown_r *= np.sqrt(np.clip(1 - np.clip((s - 0.82) / 0.18, 0, 1) ** 2, 0.0, 1))
            crown_r *= 1 + 0.04 * np.sin(s * 9 + rng.uniform(0, 6))  # cusps and a bulging contour
            order = np.argsort(crown_v)
            cv, cr = crown_v[order], crown_r[order]
            bl = rng.uniform(0.8, 1.1)
            mu = CROWNS[material]
            _add_solid(metal, frame, cv, cr, mu, power=3, depth=bl)
            _add_solid(metal, frame, *post, -mu, power=2.5)  # the crown is hollow where the abutment is
            if material == "metal-ceramic":  # a thin metal coping under the porcelain
                _add_solid(metal, frame, cv, np.clip(cr - 0.8, 0, None), 2.5, power=3, depth=bl)
                _add_solid(metal, frame, cv, np.clip(cr - 1.2, 0, None), -2.5, power=3, depth=bl)


# ---------------------------------------------------------------------------------------------- the scene
def _upsample(field: Array, factor: int, shape: tuple[int, int]) -> Array:
    if factor > 1:
        field = np.asarray(Image.fromarray(field.astype(np.float32), mode="F").resize(
            (field.shape[1] * factor, field.shape[0] * factor), Image.Resampling.BILINEAR))
    return field[:shape[0], :shape[1]]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> Array:
    """Gaussian-filtered white noise (unit std) with features about `sigma` px, made at a lower resolution."""
    factor = max(1, int(sigma / 2))
    small = (shape[0] // factor + 2, shape[1] // factor + 2)
    field = ndimage.gaussian_filter(rng.standard_normal(small, dtype=np.float32), sigma / factor, mode="wrap",
                                    truncate=3.0)
    return _upsample((field - field.mean()) / (field.std() + 1e-9), factor, shape)


def _trabecular(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> Array:
    """A network of struts (1) around marrow spaces (0): the zero crossings of band-passed noise."""
    factor = max(1, int(cell / 2.5))
    small = (shape[0] // factor + 2, shape[1] // factor + 2)
    noise = rng.standard_normal(small, dtype=np.float32)
    band = ndimage.gaussian_filter(noise, cell / factor, mode="wrap", truncate=3.0)
    band -= 0.6 * ndimage.gaussian_filter(noise, 2.5 * cell / factor, mode="wrap", truncate=3.0)
    band /= band.std() + 1e-9
    return _upsample(np.clip(1 - np.abs(band) / 0.6, 0, 1) ** 1.5, factor, shape)


@dataclass(frozen=True)
class _Placed:
    body: _Body
    frame: _Frame
    restoration: str


def _tooth_at(layers: dict[str, Array], frame: _Frame, rng: np.random.Generator) -> None:
    """A natural tooth whose cemento-enamel junction is the frame origin: crown above, roots into the bone."""
    teeth, occupied, pdl, lamina, metal = (layers[k] for k in ("teeth", "occupied", "pdl", "lamina", "metal"))
    neck, crown_w, crown_h = rng.uniform(2.3, 3.4), rng.uniform(3.5, 5.2), rng.uniform(6.0, 8.5)
    s = np.linspace(0, 1, 60)
    cv = -crown_h * s[::-1]
    cr = (neck + (crown_w - neck) * np.sin(np.clip(s / 0.5, 0, 1) * np.pi / 2))[::-1]
    cr = cr * np.sqrt(np.clip(1 - np.clip((s[::-1] - 0.85) / 0.15, 0, 1) ** 2, 0.0, 1))
    depth = rng.uniform(1.0, 1.25)
    _add_solid(teeth, frame, cv, cr, MU_ENAMEL, power=2.5, depth=depth)
    _add_solid(teeth, frame, cv, np.clip(cr - 1.2, 0, None), MU_DENTIN - MU_ENAMEL, power=2.5, depth=depth)
    _add_solid(teeth, frame, *_profile([(-0.55 * crown_h, 0.0), (-0.45 * crown_h, 0.3 * neck), (0, 0.3 * neck)]),
               -MU_DENTIN, depth=depth)  # the pulp chamber
    if rng.random() < 0.2:  # an amalgam filling
        filling = _profile([(-crown_h + 0.2, rng.uniform(1, 2)), (-crown_h + rng.uniform(1.5, 3), 1.0)])
        _add_solid(metal, frame, *filling, rng.uniform(0.8, 1.6), power=3)
    root_len = rng.uniform(11.0, 16.0)
    two = rng.random() < 0.35
    canal_filled = rng.random() < 0.15
    for side in ((-1.0, 1.0) if two else (0.0,)):
        origin = frame.to_film(np.array([side * neck * 0.5]), np.array([0.0]))
        turn = math.radians(side * rng.uniform(2, 8))
        axis = (frame.axis[0] * math.cos(turn) - frame.axis[1] * math.sin(turn),
                frame.axis[0] * math.sin(turn) + frame.axis[1] * math.cos(turn))
        rf = _Frame((float(origin[0][0]), float(origin[1][0])), axis, frame.pixel)
        width = neck * (0.55 if two else 1.0)
        rv, rr = _profile([(0, width), (0.6 * root_len, 0.55 * width), (0.92 * root_len, 0.3 * width),
                           (root_len, 0.05)])
        _add_solid(pdl, rf, rv, rr, 1.0, ring=0.22)  # the periodontal space, then the lamina dura around it
        _add_solid(lamina, rf, rv, rr + 0.22, 1.0, ring=0.28)
        added = _add_solid(teeth, rf, rv, rr, MU_DENTIN, power=2.5, depth=depth)
        if added is not None:
            box, path = added
            occupied[box[1]:box[3], box[0]:box[2]] += path
        canal = _profile([(0, 0.22 * width), (root_len - 0.5, 0.08)])
        _add_solid(metal if canal_filled else teeth, rf, *canal, 0.7 if canal_filled else -MU_DENTIN, depth=depth)


def _scene_plan(rng: np.random.Generator, options: SceneOptions) -> dict[str, object]:
    return {
        "upper": _pick(options.upper_jaw, bool(rng.random() < 0.38)),
        "restoration": _pick(options.restoration, str(rng.choice(RESTORATIONS, p=[0.3, 0.1, 0.15, 0.15, 0.3]))),
        "neighbours": _pick(options.neighbours, int(rng.choice([0, 1, 2], p=[0.66, 0.25, 0.09]))),
        "photographed": _pick(options.photographed, bool(rng.random() < 0.08)),
        "quarter_turns": _pick(options.quarter_turns, int(rng.choice([0, 1, 2, 3], p=[0.85, 0.05, 0.05, 0.05]))),
        "mirrored": _pick(options.mirrored, bool(rng.random() < 0.1)),
        "bits": _pick(options.bits, 16 if rng.random() < 0.2 else 8),
        "jpeg_quality": _pick(options.jpeg_quality, int(rng.uniform(60, 95)) if rng.random() < 0.3 else 0),
    }


def _compose(design: ImplantDesign, rng: np.random.Generator, plan: dict[str, object]
             ) -> tuple[Array, list[tuple[ImplantTruth, float]], float]:
    """The film's attenuation (jaw frame, lower-jaw way up) and each implant's truth before storage."""
    sensor = [(20.0, 30.0), (24.0, 32.0), (26.0, 36.0)][int(rng.choice(3, p=[0.35, 0.3, 0.35]))]
    pixel = float(rng.triangular(0.028, 0.04, 0.05))
    pixel = min(max(pixel, sensor[1] / 1200), sensor[0] / 400)
    beam = math.radians(float(np.clip(rng.normal(0, 7), -20, 20)))
    stretch = math.cos(beam) * float(rng.uniform(0.96, 1.05))
    implant_mm = design.length_mm * stretch
    neighbours = int(plan["neighbours"])  # type: ignore[call-overload]
    landscape = implant_mm + 4 <= sensor[0] and (neighbours == 2 or rng.random() < 0.5)
    width_mm, height_mm = (sensor[1], sensor[0]) if landscape else sensor
    width, height = int(round(width_mm / pixel)), int(round(height_mm / pixel))
    jaw = math.radians(float(rng.normal(0, 6) if rng.random() < 0.7 else rng.uniform(-25, 25)))
    tilt = jaw + math.radians(float(rng.normal(0, 3)))
    axis = (math.sin(tilt), math.cos(tilt))
    # platform and apex inside the film, a margin left for what sits on top
    span_x, span_y = implant_mm * axis[0] / pixel, implant_mm * axis[1] / pixel
    margin = (design.diameter_mm / 2 + 1.2) / pixel
    x_lo, x_hi = margin - min(0, span_x), width - margin - max(0, span_x)
    y_lo, y_hi = 1.5 / pixel, height - 1.2 / pixel - span_y
    spread = (0.25, 0.75) if neighbours == 0 else (0.1, 0.9) if neighbours == 1 else (0.4, 0.6)
    px = x_lo + rng.uniform(*spread) * max(0.0, x_hi - x_lo) if x_hi > x_lo else width / 2 - span_x / 2
    py = y_lo + rng.uniform(0.2, 0.85) * max(0.0, y_hi - y_lo) if y_hi > y_lo else height / 2 - span_y / 2
    placed = [_Placed(_body(design), _Frame((px, py), axis, pixel, stretch), str(plan["restoration"]))]
    along = (math.cos(jaw), -math.sin(jaw))
    sides = [1.0, -1.0] if neighbours == 2 else [1.0 if px < width / 2 else -1.0] * neighbours
    for number, preferred in enumerate(sides):
        other = random_system(rng, manufacturer="Demo Neighbour", system=f"Neighbour {number}").random_size(rng)
        room = rng.uniform(2.5, 5.0)
        n_tilt = jaw + math.radians(float(rng.normal(0, 4)))
        n_axis = (math.sin(n_tilt), math.cos(n_tilt))
        shift = rng.uniform(-1.0, 1.0) / pixel
        n_stretch = stretch * float(rng.uniform(0.97, 1.03))
        kind = str(rng.choice(["none", "cover-screw", "healing-cap", "abutment", "crown"]))
        for attempt in range(8):  # the other side, closer, shorter, until it fits on the film
            side = preferred if attempt % 2 == 0 else -preferred
            if attempt >= 4:
                other = other.at_size(min(other.sizes[0]), other.diameter_mm)
            gap = (design.diameter_mm + other.diameter_mm) / 2 + room * (1 - 0.25 * (attempt // 2)) + 1.5
            origin = (px + side * gap / pixel * along[0] + shift * math.sin(jaw),
                      py + side * gap / pixel * along[1] + shift * math.cos(jaw))
            tip = _tip(_Frame(origin, n_axis, pixel, n_stretch), other.length_mm)
            edge = (other.diameter_mm / 2 + 0.6) / pixel
            rise = max(0.0, tip[1] - (height - edge))  # a longer neighbour sits higher
            origin, tip = (origin[0], origin[1] - rise), (tip[0], tip[1] - rise)
            inside = all(edge <= c <= limit - edge for c, limit in ((origin[0], width), (tip[0], width))) \
                and origin[1] >= 0.5 / pixel
            apart = all(math.dist(origin, it.frame.origin) * pixel > (it.body.design.diameter_mm + other.diameter_mm)
                        / 2 + 1.5 for it in placed)
            if inside and apart:
                placed.append(_Placed(_body(other), _Frame(origin, n_axis, pixel, n_stretch), kind))
                break

    shape = (height, width)
    layers = {k: np.zeros(shape, dtype=np.float32) for k in ("metal", "occupied", "teeth", "pdl", "lamina")}
    # the jaw frame: p along the arch, q into the bone (film px)
    cx, cy = width / 2, height / 2
    xs, ys = np.arange(width)[None, :] + 0.5 - cx, np.arange(height)[:, None] + 0.5 - cy
    p, q = xs * along[0] + ys * along[1], xs * math.sin(jaw) + ys * math.cos(jaw)
    p_mm, q_mm = (p * pixel).astype(np.float32), (q * pixel).astype(np.float32)

    def jaw_q(x: float, y: float) -> float:
        return ((x - cx) * math.sin(jaw) + (y - cy) * math.cos(jaw)) * pixel

    level0, wave, wave_at = jaw_q(px, py) + rng.uniform(-1.0, 0.6), rng.uniform(5, 9), rng.uniform(0, 6)
    saucers = [(((it.frame.origin[0] - cx) * along[0] + (it.frame.origin[1] - cy) * along[1]) * pixel,
                rng.uniform(0, 2.5) if rng.random() < 0.6 else 0.0, it.body.design.diameter_mm / 2 + 1.4)
               for it in placed]

    def crest_at(arch: Array) -> Array:  # the bone crest (q, mm) along the arch, with saucers at implant necks
        level = level0 + 0.4 * np.sin(arch / wave + wave_at)
        for centre, loss, reach in saucers:
            level = level + loss * np.clip(1 - np.abs(arch - centre) / reach, 0, None) ** 1.5
        return level

    arch = np.linspace(float(p_mm.min()) - 1, float(p_mm.max()) + 1, 2048)
    crest_mm = np.interp(p_mm, arch, crest_at(arch)).astype(np.float32)
    # teeth in the free slots along the arch
    spacing = rng.uniform(7.0, 9.5)
    taken = [centre for centre, _, _ in saucers]
    for slot in range(-4, 5):
        where = taken[0] + slot * spacing + rng.uniform(-0.8, 0.8)
        if slot == 0 or any(abs(where - t) < 0.65 * spacing for t in taken) or abs(where) > width_mm / 2 + 6:
            continue
        if rng.random() < 0.2:
            continue  # a missing tooth
        level = float(crest_at(np.array(where))) - 1.3
        t_tilt = jaw + math.radians(float(rng.normal(0, 5)))
        origin = (cx + (where * along[0] + level * math.sin(jaw)) / pixel,
                  cy + (where * along[1] + level * math.cos(jaw)) / pixel)
        _tooth_at(layers, _Frame(origin, (math.sin(t_tilt), math.cos(t_tilt)), pixel), rng)
    for item in placed:
        _draw_implant(layers["metal"], layers["occupied"], item.frame, item.body,
                      _Pose(rng.uniform(0, 1), rng.uniform(-np.pi, np.pi), math.tan(beam) * rng.uniform(0.9, 1.1),
                            rng.uniform(0, np.pi)), item.restoration != "none")
        _draw_restoration(layers["metal"], item.frame, item.body.design, item.restoration, rng)

    # bone: texture at two scales over a slowly varying density, a cortical crest, the canal or the sinus
    below = q_mm - crest_mm
    in_bone = np.clip(below / 0.25 + 0.5, 0, 1)
    fine = _trabecular(rng, shape, rng.uniform(0.3, 0.55) / pixel)
    coarse = _trabecular(rng, shape, rng.uniform(0.9, 1.5) / pixel)
    density = 0.6 + 0.12 * _smooth_noise(rng, shape, 4.0 / pixel) + 0.35 * (0.6 * fine + 0.4 * coarse)
    density = density + 0.06 * _smooth_noise(rng, shape, 0.12 / pixel)
    density = density + rng.uniform(0.4, 0.9) * np.exp(-np.clip(below, 0, None) / rng.uniform(0.4, 0.9))
    deepest = max(jaw_q(*_tip(it.frame, it.body.design.length_mm)) for it in placed)
    if plan["upper"] and rng.random() < 0.6:  # the sinus floor beyond the apices
        floor = deepest + rng.uniform(-0.5, 3.0) + 1.2 * np.sin(p_mm / rng.uniform(6, 12) + rng.uniform(0, 6))
        beyond = q_mm - floor
        density = density * (1 - 0.75 * np.clip(beyond / 0.4, 0, 1)) + 0.8 * np.exp(-np.abs(beyond) / 0.35)
    elif not plan["upper"] and rng.random() < 0.45:  # the mandibular canal
        line = deepest + rng.uniform(1.5, 5.0) + 0.6 * np.sin(p_mm / rng.uniform(10, 20))
        off, half = np.abs(q_mm - line), rng.uniform(1.1, 1.7)
        density = density * (1 - 0.55 * np.clip((half - off) / 0.3, 0, 1)) + 0.5 * np.exp(-np.abs(off - half) / 0.25)
    bone_mm = rng.uniform(8.0, 12.0)
    path = np.clip(bone_mm - layers["occupied"], 0, None)
    bone = MU_BONE * density * path * in_bone * (1 - 0.35 * np.clip(layers["pdl"], 0, 1))
    bone += 0.25 * MU_BONE * bone_mm * np.clip(layers["lamina"], 0, 1) * in_bone
    # soft tissue: cheek and tongue over everything, less towards the occlusal side (air in the mouth)
    soft_mm = rng.uniform(12, 22) * (1 + 0.15 * np.tanh(p_mm / 10) * rng.uniform(-1, 1))
    soft = MU_SOFT * soft_mm * (0.45 + 0.55 * np.clip((q_mm - crest_mm + 9.0) / 9.0, 0, 1))
    attenuation = soft + bone + layers["teeth"] + np.clip(layers["metal"], 0, None)
    if rng.random() < 0.25:  # a bite block near the occlusal edge
        block = (np.abs(p_mm - rng.uniform(-5, 5)) < rng.uniform(4, 8)) & (np.abs(q_mm - (crest_mm - rng.uniform(
            9, 13))) < rng.uniform(1.5, 2.5))
        attenuation = attenuation + 0.12 * ndimage.gaussian_filter(block.astype(np.float64), 1.0)
    truths = [(ImplantTruth(it.frame.origin, _tip(it.frame, it.body.design.length_mm),
                            it.body.design.diameter_mm / pixel, it.body.design), 1.0) for it in placed]
    return attenuation, truths, pixel


def _expose(attenuation: Array, rng: np.random.Generator, pixel: float) -> Array:
    """The sensor's reading (0 black … 1 white), windowed as an export: dense things bright, metal saturated."""
    height, width = attenuation.shape
    k = rng.uniform(0.8, 1.25)
    ys = (np.arange(height, dtype=np.float32) / max(height, width))[:, None]
    xs = (np.arange(width, dtype=np.float32) / max(height, width))[None, :]
    field = 1 + rng.uniform(-0.12, 0.12) * (xs - 0.5) + rng.uniform(-0.12, 0.12) * (ys - 0.5)
    signal = np.exp(-k * attenuation) * field
    signal = ndimage.gaussian_filter(signal, rng.uniform(0.5, 1.3))
    grain = rng.standard_normal(signal.shape, dtype=np.float32) * np.float32(rng.uniform(0.006, 0.025))
    signal = signal + grain * np.sqrt(np.clip(signal, 0, None))
    dense = 1 - signal
    lo = float(np.percentile(dense[::3, ::3], rng.uniform(0.5, 4)))
    hi = 1 - math.exp(-k * rng.uniform(2.3, 3.3))
    film = np.clip((dense - lo) / max(hi - lo, 1e-3), 0, 1) ** rng.uniform(0.75, 1.35)
    if rng.random() < 0.35:  # a sharpened export
        film = np.clip(film + rng.uniform(0.3, 1.0) * (film - ndimage.gaussian_filter(film, 2.0)), 0, 1)
    if rng.random() < 0.25:  # the sensor's cut corners
        cut = rng.uniform(2.0, 4.0) / pixel
        corner = np.minimum(np.minimum(xs * max(height, width), width - xs * max(height, width)),
                            np.minimum(ys * max(height, width), height - ys * max(height, width)))
        diag = np.minimum(xs * max(height, width), width - xs * max(height, width)) + np.minimum(
            ys * max(height, width), height - ys * max(height, width))
        film = np.where((diag < cut) & (corner < cut), 0.0, film)
    return film


def _homography(src: Array, dst: Array) -> Array:
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        rows += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        rhs += [u, v]
    h = np.linalg.solve(np.array(rows, dtype=np.float64), np.array(rhs, dtype=np.float64))
    return np.append(h, 1.0).reshape(3, 3)


def _apply(matrix: Array, x: float, y: float) -> tuple[float, float]:
    out = matrix @ np.array([x, y, 1.0])
    return float(out[0] / out[2]), float(out[1] / out[2])


def _photograph(film: Array, rng: np.random.Generator) -> tuple[Array, Array]:
    """A phone photo of the film on a monitor: perspective, moire, glare, a colour cast; RGB 0…1 and the mapping."""
    height, width = film.shape
    scale = rng.uniform(0.75, 1.0)
    out_w, out_h = int(width * scale * rng.uniform(1.15, 1.3)), int(height * scale * rng.uniform(1.15, 1.3))
    angle = rng.normal(0, 0.06)
    corners = np.array([(0, 0), (width, 0), (width, height), (0, height)], dtype=np.float64)
    centred = (corners - (width / 2, height / 2)) * scale
    keystone = rng.uniform(-0.06, 0.06)
    centred[:, 0] *= 1 + keystone * np.sign(centred[:, 1])
    turned = centred @ np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
    dst = turned + (out_w / 2, out_h / 2) + rng.normal(0, 0.012 * min(out_w, out_h), (4, 2))
    matrix = _homography(corners, dst)
    inverse = np.linalg.inv(matrix)
    inverse /= inverse[2, 2]
    screen = Image.fromarray((film * 255).astype(np.uint8)).transform(
        (out_w, out_h), Image.Transform.PERSPECTIVE, tuple(inverse.flatten()[:8]), Image.Resampling.BILINEAR,
        fillcolor=int(rng.uniform(10, 45)))
    grey = np.asarray(screen, dtype=np.float64) / 255
    yy, xx = np.mgrid[0:out_h, 0:out_w]
    period, turn = rng.uniform(2.5, 5.0), rng.uniform(0, np.pi)
    grey = grey * (1 + rng.uniform(0.02, 0.07) * np.sin(2 * np.pi * (xx * math.cos(turn) + yy * math.sin(turn))
                                                            / period))
    gx, gy = rng.uniform(0, out_w), rng.uniform(0, out_h)
    glare = rng.uniform(0.1, 0.35) * np.exp(-((xx - gx) ** 2 + (yy - gy) ** 2) / (2 * (0.2 * out_w) ** 2))
    grey = 0.06 + 0.88 * grey + glare
    rgb = np.stack([grey * c for c in 1 + rng.uniform(-0.08, 0.08, 3)], axis=-1)
    rgb = ndimage.gaussian_filter(rgb, (0.8, 0.8, 0)) + rng.normal(0, 0.015, rgb.shape)
    return np.clip(rgb, 0, 1), matrix


def _store(film: Array, truths: list[tuple[ImplantTruth, float]], plan: dict[str, object], rng: np.random.Generator,
           pixel: float) -> tuple[bytes, FilmTruth]:
    """The file a clinic sends: upper-jaw films turned platform down, mirrored, quarter turns, then encoded."""
    points = [np.array([t.platform_xy, t.apex_xy], dtype=np.float64) for t, _ in truths]
    scales = [s for _, s in truths]
    tags = {f"restoration:{plan['restoration']}"}
    if len(truths) > 1:
        tags.add("two-implants")
    if plan["upper"]:
        film = film[::-1]
        points = [np.column_stack([pt[:, 0], film.shape[0] - pt[:, 1]]) for pt in points]
        tags.add("upper-jaw")
    if plan["mirrored"]:
        film = film[:, ::-1]
        points = [np.column_stack([film.shape[1] - pt[:, 0], pt[:, 1]]) for pt in points]
        tags.add("mirrored")
    turns = int(plan["quarter_turns"])  # type: ignore[call-overload]
    for _ in range(turns % 4):  # counter-clockwise: (x, y) -> (y, W - x)
        w = film.shape[1]
        film = np.rot90(film)
        points = [np.column_stack([pt[:, 1], w - pt[:, 0]]) for pt in points]
    if turns % 4 == 2:
        tags.add("rotated-180")
    film = np.ascontiguousarray(film)
    jpeg = int(plan["jpeg_quality"])  # type: ignore[call-overload]
    if plan["photographed"]:
        rgb, matrix = _photograph(film, rng)
        moved = []
        for i, pt in enumerate(points):
            mapped = np.array([_apply(matrix, float(x), float(y)) for x, y in pt])
            scales[i] *= float(np.linalg.norm(mapped[1] - mapped[0]) / max(1e-6, float(np.linalg.norm(pt[1] - pt[0]))))
            moved.append(mapped)
        points = moved
        pixel /= scales[0]
        image = Image.fromarray((rgb * 255).astype(np.uint8), mode="RGB")
        jpeg = jpeg or int(rng.uniform(70, 92))
        tags.add("photographed")
    elif plan["bits"] == 16 and not jpeg:
        image = Image.fromarray((film * 4095).astype(np.uint16))
        tags.add("16-bit")
    else:
        image = Image.fromarray((film * 255).astype(np.uint8), mode="L")
    out = io.BytesIO()
    if jpeg:
        image.save(out, format="JPEG", quality=jpeg)
        tags.add("jpeg")
    else:
        image.save(out, format="PNG", compress_level=1)
    implants = tuple(ImplantTruth((float(pt[0, 0]), float(pt[0, 1])), (float(pt[1, 0]), float(pt[1, 1])),
                                  t.diameter_px * s, t.design) for pt, (t, _), s in zip(points, truths, scales,
                                                                                         strict=True))
    return out.getvalue(), FilmTruth(implants, pixel, frozenset(tags))


def render_film(design: ImplantDesign, seed: int, options: SceneOptions = ANY_SCENE) -> tuple[bytes, FilmTruth]:
    """One film of `design` at one of its sizes, as the file a clinic would send, and what it shows;
    deterministic from (design, seed, options)."""
    rng = np.random.default_rng([seed, 0x51E7])
    design = design.random_size(rng)
    plan = _scene_plan(rng, options)
    attenuation, truths, pixel = _compose(design, rng, plan)
    film = _expose(attenuation, rng, pixel)
    return _store(film, truths, plan, rng, pixel)
