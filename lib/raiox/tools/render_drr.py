"""A second film generator, written apart from `raiox.tools.render`: digitally reconstructed radiographs of 3D implants.

What it models (shared/RADIOGRAPHS.md, "Rendering films in 3D"):

- The implant as a 3D solid sampled along parallel rays (a detector pixel's ray through a cylinder around the implant
  axis, integrated numerically): a revolved core with its taper, helical threads of `thread_leads` starts in the
  design's profile (V, square, buttress with its flat flank towards the platform, reverse buttress), a smooth or
  micro-threaded collar with its flare, a flat, round or pointed apex, the apex vent as a hole across the axis, apex
  grooves as three cutting flutes, and the connection (internal hex, tri-channel or conical cavity with the screw
  channel below, or an external hex boss). Turned about its own axis and tilted towards the beam (vertical
  angulation), so foreshortening, thread slant and the blur of the far threads come from geometry.
- Restorations as 3D solids on the same axis: cover screw, healing cap, abutment with its screw (sometimes platform
  switched), a crown (ellipsoids, chords solved exactly) on an abutment in metal-ceramic (alloy coping under
  porcelain), zirconia, lithium disilicate or composite.
- A jaw of my own making: buccal and lingual cortical plates, a rounded alveolar ridge with a cortical crest and a
  saucer of crestal bone loss around each implant neck, trabecular bone as the projected zero-crossing network of
  several layers of band-passed noise, the mandibular canal or the sinus floor, soft tissue; neighbouring teeth of
  enamel, dentin, pulp and one or two roots in sockets with periodontal space and lamina dura, some with amalgam
  fillings or root fillings; up to two neighbouring implants of other random systems with their own restorations;
  sometimes the edge of a sensor holder.
- Beer-Lambert attenuation with per-material coefficients and mild beam hardening, slight cone-beam magnification,
  Poisson-like quantum noise, scatter, detector blur, 12-bit quantisation, and the export clinics use (log, window,
  gamma, unsharp mask) to an 8-bit PNG, a 16-bit PNG (12-bit range) or a JPEG; quarter-turn and mirrored storage;
  phone photographs of the film on a monitor (perspective, moire of the screen's subpixel grid, glare, colour cast).
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from raiox.tools.implant_designs import (
    RESTORATIONS,
    FilmTruth,
    ImplantDesign,
    ImplantTruth,
    Restoration,
    SceneOptions,
    random_system,
)

F32 = npt.NDArray[np.float32]
ANY_SCENE = SceneOptions()  # every choice left to the seed
CrownMaterial = Literal["metal-ceramic", "zirconia", "disilicate", "composite"]

# Linear attenuation (1/mm) at an effective energy of about 35 keV (a 60-70 kVp intraoral tube); a film scales them
# all by its beam hardness.
_MU: dict[str, float] = {
    "titanium": 1.8, "zirconia": 7.5, "alloy": 12.0, "porcelain": 1.0, "disilicate": 0.75, "composite": 0.35,
    "amalgam": 20.0, "gutta-percha": 3.0, "enamel": 0.34, "dentin": 0.26, "bone": 0.28, "soft": 0.04,
    "plastic": 0.025,
}

# Flank angles from the radial plane (coronal flank, apical flank) and half the crest width as a fraction of the pitch.
_FLANKS_DEG: dict[str, tuple[float, float]] = {
    "v": (30.0, 30.0), "square": (3.0, 3.0), "buttress": (4.0, 45.0), "reverse-buttress": (45.0, 4.0)}
_CREST_HALF: dict[str, float] = {"v": 0.04, "square": 0.22, "buttress": 0.07, "reverse-buttress": 0.07}

_LUT_MM = 0.005  # axial step of the radius tables
_BLOCK_ROWS = 12  # detector rows evaluated together (keeps the sample blocks in cache)
_SAMPLE_MM = 0.085  # ray sampling step through the centre of an implant (finer towards its silhouette)


# ---------------------------------------------------------------------------------------------------------------
# Implant geometry: radius tables over the depth s below the platform (s < 0 above it)


@dataclass(frozen=True)
class _Helix:
    pitch: float  # crest spacing along the axis
    leads: int
    profile: F32  # thread height (0..1 of its depth) over one pitch; index 0 coronal, 255 apical


@dataclass
class _Zone:
    """One part of a revolved solid: outer radius R(s, θ) = min(core + depth·profile(helix phase) + boss·shape(θ),
    env), minus a cavity of radius cav_a + cav_b·shape(θ), plus a filling of radius fill_a + fill_b·shape(θ)."""

    s0: float
    radius: float  # bounding cylinder
    shape: str  # cross-section of the θ-shaped parts: "hex", "tri" or "round"
    shape_turn: float
    core: F32
    env: F32
    macro: _Helix | None = None
    dep_macro: F32 | None = None
    micro: _Helix | None = None
    dep_micro: F32 | None = None
    boss: F32 | None = None
    cav_a: F32 | None = None
    cav_b: F32 | None = None
    fill_a: F32 | None = None
    fill_b: F32 | None = None
    vent: tuple[float, float, float] | None = None  # depth, half height along the axis, half width
    flute_cut: F32 | None = None  # flutes remove material beyond this radius

    @property
    def s_extent(self) -> tuple[float, float]:
        solid = np.nonzero(self.env >= 0)[0]
        return self.s0 + float(solid[0]) * _LUT_MM, self.s0 + float(solid[-1]) * _LUT_MM


@dataclass(frozen=True)
class _Crown:
    material: CrownMaterial
    margin: float  # height above the platform where the crown starts
    height: float
    half_md: float  # mesiodistal half width
    half_bl: float  # buccolingual half width
    coping: tuple[float, float, float]  # half width, half height, centre height of a metal coping (metal-ceramic)


@dataclass(frozen=True)
class _Fitting:
    """What sits on an implant, as profiles over the height z above the platform (piecewise linear)."""

    kind: Restoration
    outer: tuple[tuple[float, float], ...] = ()  # (z, radius) of the titanium part's outside
    bore: tuple[tuple[float, float], ...] = ()  # hollow inside it (access channel, socket)
    screw: tuple[tuple[float, float], ...] = ()  # the screw head and shank inside the bore
    socket: tuple[float, float, float] | None = None  # a hex socket: from z, to z, half across flats
    shank_depth: float = 0.0  # how deep the screw reaches below the platform
    engaged: bool = False  # an abutment fills the implant's connection
    crown: _Crown | None = None

    @property
    def top(self) -> float:
        return max((z for z, _ in self.outer), default=0.0)


@dataclass(frozen=True)
class _Connection:
    depth: float  # depth of the hex, lobes or cone
    half_width: float  # hex half across flats, lobe base radius or cone radius at the platform
    cone_tan: float
    channel_radius: float  # the screw channel below
    channel_end: float
    boss_height: float  # external hex


def _thread_profile(profile: str, pitch: float, depth: float) -> F32:
    coronal, apical = (depth * math.tan(math.radians(angle)) / pitch for angle in _FLANKS_DEG[profile])
    crest = _CREST_HALF[profile]
    total = 2 * crest + coronal + apical
    if total > 0.94:  # a deep thread on a fine pitch: the flanks meet, the roots vanish
        crest, coronal, apical = (value * 0.94 / total for value in (crest, coronal, apical))
    u = (np.arange(256, dtype=np.float64) + 0.5) / 256
    rise = np.clip((u - (0.5 - crest - coronal)) / max(coronal, 1e-3), 0, 1)
    fall = np.clip((0.5 + crest + apical - u) / max(apical, 1e-3), 0, 1)
    return np.minimum(rise, fall).astype(np.float32)


def _dimensions(d: ImplantDesign) -> tuple[float, float, float, float]:
    """Crest radius, thread depth, core radius, collar radius."""
    crest = d.diameter_mm / 2
    depth = min(d.thread_depth_mm, 0.45 * crest)
    core = crest - depth
    collar = max(crest + d.collar_flare, core * 0.85)
    return crest, depth, core, collar


def _connection(d: ImplantDesign) -> _Connection:
    _, _, core, collar = _dimensions(d)
    channel = float(np.clip(0.21 * d.diameter_mm, 0.6, 1.0))
    channel = min(channel, core - 0.35)
    end = min(d.length_mm * 0.55, 5.5)
    if d.connection == "internal-hex":
        half = min(0.3 * d.diameter_mm, (core - 0.3) / 1.155)
        return _Connection(min(1.3, 0.3 * d.length_mm), half, 0.0, min(channel, half * 0.85), end, 0.0)
    if d.connection == "tri-channel":
        half = min(0.27 * d.diameter_mm, (core - 0.3) / 1.3)
        return _Connection(min(1.4, 0.3 * d.length_mm), half, 0.0, min(channel, half * 0.9), end, 0.0)
    if d.connection == "conical":
        top = min(0.36 * d.diameter_mm, collar - 0.3)
        depth = min(2.2, 0.3 * d.length_mm)
        cone_tan = math.tan(math.radians(7.0))
        return _Connection(depth, top, cone_tan, min(channel, top - depth * cone_tan), end, 0.0)
    half = min(0.34 * d.diameter_mm, collar * 0.82)  # external hex boss
    return _Connection(0.0, half, 0.0, channel, end, 0.7)


def _s_table(s_lo: float, s_hi: float) -> npt.NDArray[np.float64]:
    return s_lo + np.arange(int(math.ceil((s_hi - s_lo) / _LUT_MM)) + 1, dtype=np.float64) * _LUT_MM


def _body_zone(d: ImplantDesign, fit: _Fitting, pad: float, turn: float) -> _Zone:
    length = d.length_mm
    crest, depth, core0, collar = _dimensions(d)
    conn = _connection(d)
    boss = conn.boss_height if fit.kind == "none" else 0.0
    s = _s_table(-boss - pad, length + pad)
    collar_h = min(d.collar_mm, 0.5 * length)
    micro_depth = float(np.clip(0.45 * d.microthread_pitch_mm, 0.04, 0.12)) if d.microthreads else 0.0

    taper_from = d.taper_start * length
    core_body = np.where(s <= taper_from, core0,
                         core0 * (1 - d.taper * (s - taper_from) / max(length - taper_from, 1e-6)))
    in_collar = (s >= 0) & (s < collar_h)
    in_body = (s >= collar_h) & (s <= length)
    core = np.where(in_collar, collar - micro_depth, np.where(in_body, core_body, 0.0))
    dep_macro = np.where(in_body, depth * np.clip((s - collar_h) / (0.5 * d.thread_pitch_mm), 0, 1), 0.0)
    dep_micro = np.where(in_collar, micro_depth * np.clip((collar_h - s) / 0.06, 0, 1), 0.0)

    env = np.where((s >= -boss) & (s <= length), crest + 1.0, -1.0)
    env = np.where((s >= 0) & (s < 0.12), np.minimum(env, collar - (0.12 - s) * 0.8), env)  # platform bevel
    end_core = float(core0 * (1 - d.taper)) if length > taper_from else core0
    if d.apex == "flat":
        chamfer = min(0.3, 0.3 * end_core)
        env = np.where(s > length - chamfer, np.minimum(env, end_core + depth - (s - length + chamfer)), env)
    elif d.apex == "round":
        dome = min(end_core + 0.5 * depth, 0.35 * length)
        dome_r = np.sqrt(np.clip(dome**2 - (s - (length - dome)) ** 2, 0, None))
        run_out = dome + (length - dome - s) * 1.5  # threads run out on a cone above the dome
        env = np.where(s <= length - dome, np.minimum(env, run_out), env)
        env = np.where((s > length - dome) & (s <= length), np.minimum(env, dome_r), env)
    else:
        cone = min(2.2 * end_core, 0.4 * length)
        tip = 0.15 * end_core
        cone_r = tip + (end_core + depth - tip) * (length - s) / cone
        env = np.where((s > length - cone) & (s <= length), np.minimum(env, cone_r), env)

    boss_arr = np.where((s >= -boss) & (s < 0), conn.half_width, 0.0)
    core = np.where(boss_arr > 0, 0.0, core)

    cav_a = np.zeros_like(s)
    cav_b = np.zeros_like(s)
    shape = "round"
    if d.connection in ("internal-hex", "tri-channel"):
        shape = "hex" if d.connection == "internal-hex" else "tri"
        cav_b = np.where((s >= 0) & (s < conn.depth), conn.half_width, 0.0)
    elif d.connection == "conical":
        cav_a = np.where((s >= 0) & (s < conn.depth), conn.half_width - s * conn.cone_tan, 0.0)
    else:
        shape = "hex"
    channel_top = conn.depth if d.connection != "external-hex" else -boss
    cav_a = np.where((s >= channel_top) & (s < conn.channel_end), conn.channel_radius, cav_a)

    fill_a = np.zeros_like(s)
    fill_b = np.zeros_like(s)
    if fit.shank_depth > 0:
        fill_a = np.where((s >= -boss) & (s < fit.shank_depth), conn.channel_radius - 0.07, 0.0)
    if fit.engaged:
        fill_a = np.where((s >= 0) & (s < conn.depth), np.maximum(cav_a - 0.04, fill_a), fill_a)
        fill_b = np.where((s >= 0) & (s < conn.depth), np.maximum(cav_b - 0.04, 0.0), 0.0)

    zone = _Zone(
        s0=float(s[0]), radius=max(crest, collar, conn.half_width * 1.16) + 0.05, shape=shape, shape_turn=turn,
        core=core.astype(np.float32), env=env.astype(np.float32),
        boss=boss_arr.astype(np.float32) if boss > 0 else None,
        cav_a=cav_a.astype(np.float32), cav_b=cav_b.astype(np.float32),
        fill_a=fill_a.astype(np.float32) if fill_a.any() else None,
        fill_b=fill_b.astype(np.float32) if fill_b.any() else None,
    )
    zone.macro = _Helix(d.thread_pitch_mm, d.thread_leads, _thread_profile(d.thread_profile, d.thread_pitch_mm, depth))
    zone.dep_macro = dep_macro.astype(np.float32)
    if micro_depth > 0:
        # Micro-threads share the macro thread's lead, so the implant advances evenly when it is screwed in.
        lead = d.thread_pitch_mm * d.thread_leads
        zone.micro = _Helix(d.microthread_pitch_mm, max(1, round(lead / d.microthread_pitch_mm)),
                            _thread_profile("v", d.microthread_pitch_mm, micro_depth))
        zone.dep_micro = dep_micro.astype(np.float32)
    if d.apex_vent:
        zone.vent = (length - max(0.2 * length, 1.3), float(np.clip(0.2 * d.diameter_mm, 0.45, 1.0)),
                     float(np.clip(0.11 * d.diameter_mm, 0.3, 0.55)))
    if d.apex_grooves:
        span = max(0.3 * length, 2.5)
        frac = np.clip((s - (length - span)) / span, 0, 1)
        zone.flute_cut = np.where(frac > 0, crest * (1 - 0.6 * frac), 99.0).astype(np.float32)
    return zone


def _restoration_zone(fit: _Fitting, pad: float, turn: float) -> _Zone | None:
    if not fit.outer:
        return None
    top = fit.top
    s = _s_table(-top - pad, pad)
    z = -s

    def profile(points: tuple[tuple[float, float], ...]) -> npt.NDArray[np.float64]:
        if not points:
            return np.zeros_like(z)
        zs, rs = zip(*points, strict=True)
        return np.interp(z, zs, rs, left=0.0, right=0.0)

    outer = profile(fit.outer)
    env = np.where((z >= 0) & (z <= top), 99.0, -1.0)
    cav_b = np.zeros_like(z)
    if fit.socket is not None:
        lo, hi, half = fit.socket
        cav_b = np.where((z >= lo) & (z <= hi), half, 0.0)
    zone = _Zone(s0=float(s[0]), radius=float(outer.max()) + 0.05, shape="hex", shape_turn=turn,
                 core=outer.astype(np.float32), env=env.astype(np.float32),
                 cav_a=profile(fit.bore).astype(np.float32), cav_b=cav_b.astype(np.float32),
                 fill_a=profile(fit.screw).astype(np.float32))
    return zone


# ---------------------------------------------------------------------------------------------------------------
# Projection: parallel rays through the zones (numerical line integrals) and exact chords through ellipsoids


def _shape(kind: str, theta: F32, turn: float) -> F32:
    if kind == "hex":
        sector = np.mod(theta - turn, np.float32(math.pi / 3)) - np.float32(math.pi / 6)
        return (1.0 / np.cos(sector)).astype(np.float32)
    if kind == "tri":
        lobes = np.maximum(np.cos(3 * (theta - turn)), 0) ** 3
        return (1.0 + 0.3 * lobes).astype(np.float32)
    return np.ones_like(theta)


def _profile_terms(helix: _Helix) -> tuple[float, float, float, float]:
    """The thread profile as two clipped ramps over the phase u in [0, 1): min((u - a) / wc, (b - u) / wa)."""
    profile = helix.profile
    rising = np.nonzero(profile > 0)[0]
    peak = np.nonzero(profile >= 1)[0]
    a = rising[0] / 256
    top_lo, top_hi = peak[0] / 256, (peak[-1] + 1) / 256
    b = (rising[-1] + 1) / 256
    return a, max(top_lo - a, 1e-3), b, max(b - top_hi, 1e-3)


def _project_zone(zone: _Zone, xs: F32, vs: F32, cos_a: float, sin_a: float, turn: float, out: F32) -> None:
    """Add the path length (mm) of the zone's solid along each ray (row v, column x) to `out`.

    A ray at (x, v) runs through the implant frame as (x, y, s = -v / cos a + y tan a); it is sampled at `n`
    depths y across the bounding cylinder, the same for every column, so a sample's depth s depends on its row and
    y only and the radius tables are read once per (row, y). A sample's occupancy is a soft step of the solid's
    radius R(s, θ) at its radius r (the step width shrinks towards the silhouette, where r changes slowly along
    the ray)."""
    cols = np.nonzero(np.abs(xs) < zone.radius)[0]
    if cols.size == 0:
        return
    x = torch.from_numpy(xs[cols].astype(np.float32))
    n = int(np.clip(math.ceil(2 * zone.radius / _SAMPLE_MM), 16, 96))
    dy = 2 * zone.radius / n
    y = (torch.arange(n, dtype=torch.float32) + 0.5) * dy - zone.radius
    chord = torch.sqrt(torch.clamp(zone.radius**2 - x * x, min=0)) / zone.radius
    edge = (1.0 / torch.clamp(0.8 * dy * chord, min=0.012)).expand(n, -1).contiguous()
    r = torch.hypot(x[None, :], y[:, None])
    theta = torch.atan2(y[:, None].expand(-1, x.numel()), x[None, :]) + turn
    r_edge = r * edge - 0.5
    shape = torch.from_numpy(_shape(zone.shape, theta.numpy(), zone.shape_turn))
    shape_edge = shape * edge
    two_pi = 2 * math.pi
    helices: list[tuple[torch.Tensor, tuple[float, float, float, float], torch.Tensor, float]] = []
    for helix, helix_depth in ((zone.macro, zone.dep_macro), (zone.micro, zone.dep_micro)):
        if helix is not None and helix_depth is not None and helix_depth.any():
            helices.append((theta * (helix.leads / two_pi) + 64.0, _profile_terms(helix),
                            torch.from_numpy(helix_depth), 1.0 / helix.pitch))
    vent_across: torch.Tensor | None = None
    if zone.vent is not None:
        vent_across = (r * torch.sin(theta) / zone.vent[2]) ** 2
    flutes: list[tuple[torch.Tensor, torch.Tensor]] = []
    if zone.flute_cut is not None:
        xr, yr = r * torch.cos(theta), r * torch.sin(theta)
        for flute in range(3):
            angle = 0.4 + flute * two_pi / 3
            along = (xr * math.cos(angle) + yr * math.sin(angle)) * edge + 0.5
            across = -xr * math.sin(angle) + yr * math.cos(angle)
            flutes.append((along, torch.clamp((0.45 - across.abs()) * edge + 0.5, 0, 1)))

    tables = {name: torch.from_numpy(getattr(zone, name)) for name in
              ("core", "env", "boss", "cav_a", "cav_b", "fill_a", "fill_b", "flute_cut")
              if getattr(zone, name) is not None}
    s_rows = -vs.astype(np.float64) / cos_a
    lo, hi = zone.s_extent
    reach = zone.radius * abs(sin_a) / cos_a
    active = np.nonzero((s_rows + reach >= lo) & (s_rows - reach <= hi))[0]
    if active.size == 0:
        return
    y_shift = y.double() * (sin_a / cos_a)
    size = zone.core.size
    block = max(1, 100_000 // (n * cols.size))
    result = torch.zeros((out.shape[0], cols.size), dtype=torch.float32)
    for start in range(int(active[0]), int(active[-1]) + 1, block):
        stop = min(start + block, int(active[-1]) + 1)
        s = torch.from_numpy(s_rows[start:stop])[:, None] + y_shift[None, :]  # (rows, n)
        k = torch.clamp(torch.round((s - zone.s0) / _LUT_MM).long(), 0, size - 1)
        at = {name: table[k] for name, table in tables.items()}
        if not bool((at["env"] >= 0).any()):
            continue
        biggest = at["core"].clone()
        radius = at["core"][:, :, None].expand(-1, -1, cols.size)
        for phase, (a, wc, b, wa), depth, inv_pitch in helices:
            dep = depth[k]
            if bool(dep.any()):
                u = torch.frac_((s * inv_pitch).float()[:, :, None] + phase)
                rise = torch.mul(u, 1 / wc).sub_(a / wc)
                fall = u.mul_(-1 / wa).add_(b / wa)
                g = torch.minimum(rise, fall, out=rise).clamp_(0, 1)
                radius = torch.addcmul(radius, g, dep[:, :, None])
                biggest += dep
        if "boss" in at and bool(at["boss"].any()):
            radius = radius + at["boss"][:, :, None] * shape
            biggest += at["boss"] * 1.16
        env = at["env"]
        if bool((env < biggest).any()):
            radius = torch.minimum(radius, env[:, :, None])
        occ = torch.mul(radius, edge).sub_(r_edge).clamp_(0, 1)
        for a_name, b_name, sign in (("cav_a", "cav_b", -1), ("fill_a", "fill_b", 1)):
            a_k, b_k = at.get(a_name), at.get(b_name)
            has_a = a_k is not None and bool(a_k.any())
            has_b = b_k is not None and bool(b_k.any())
            if not (has_a or has_b):
                continue
            if has_a and a_k is not None:
                part = torch.mul(edge, a_k[:, :, None]).sub_(r_edge)
            else:
                part = -r_edge.expand_as(occ)
            if has_b and b_k is not None:
                part = torch.addcmul(part, shape_edge, b_k[:, :, None])
            part = part.clamp_(0, 1)
            if sign < 0:
                occ.mul_(part.neg_().add_(1))
            else:
                occ.add_(part)
        if zone.vent is not None and vent_across is not None:
            depth_v, half_h, half_w = zone.vent
            along_axis = ((s - depth_v) / half_h).float()
            if bool((along_axis.abs() < 1).any()):
                q = (1 - along_axis**2)[:, :, None] - vent_across
                hole = (q * (0.5 * min(half_h, half_w))).mul_(edge).add_(0.5).clamp_(0, 1)
                occ.mul_(hole.neg_().add_(1))
        if flutes and "flute_cut" in at and bool((at["flute_cut"] < 90).any()):
            cut_edge = at["flute_cut"][:, :, None] * edge
            for along, width in flutes:
                notch = (along - cut_edge).clamp_(0, 1)
                occ.mul_(notch.mul_(width).neg_().add_(1))
        result[start:stop] = occ.sum(dim=1)
    out[:, cols] += (result * (dy / cos_a)).numpy()


def _axial_chord(xs: F32, vs: F32, cos_a: float, sin_a: float, centre: tuple[float, float],
                 semi: tuple[float, float, float], z_range: tuple[float, float]) -> F32:
    """Exact chord (mm) of each ray (row v, column x) through an ellipsoid whose axes follow the implant frame,
    centred at (x, 0, z) and cut to heights z_range; a ray at world depth t runs through
    (x, v sin a + t cos a, v cos a - t sin a)."""
    cx, cz = centre
    ax, ay, az = semi
    qx2 = (((xs - cx) / ax) ** 2).astype(np.float32)
    qy0 = vs * sin_a / ay
    qz0 = (vs * cos_a - cz) / az
    dqy, dqz = cos_a / ay, -sin_a / az
    a = dqy * dqy + dqz * dqz
    b = 2 * (qy0 * dqy + qz0 * dqz)
    c_rows = qy0 * qy0 + qz0 * qz0 - 1
    disc = (b * b - 4 * a * c_rows)[:, None] - (4 * a) * qx2[None, :]
    half = np.sqrt(np.maximum(disc, 0)) / (2 * a)
    mid = (-b / (2 * a))[:, None]
    t1, t2 = mid - half, mid + half
    z_lo, z_hi = ((z_range[0] - cz) / az, (z_range[1] - cz) / az)
    if abs(dqz) > 1e-9:
        ta, tb = (z_lo - qz0) / dqz, (z_hi - qz0) / dqz
        t1 = np.maximum(t1, np.minimum(ta, tb)[:, None])
        t2 = np.minimum(t2, np.maximum(ta, tb)[:, None])
    else:
        inside = ((qz0 >= z_lo) & (qz0 <= z_hi))[:, None]
        t2 = np.where(inside, t2, t1)
    return np.clip(t2 - t1, 0, None).astype(np.float32)


@dataclass(frozen=True)
class _Chord:
    length: F32  # exact chord of the (cut) ellipsoid


def _chord(xs: F32, vs: F32, centre: tuple[float, float, float], axes: npt.NDArray[np.float64],
           semi: tuple[float, float, float], c_range: tuple[float, float] | None = None) -> _Chord:
    """Chords of rays along the beam (world y) through an ellipsoid of any orientation; `xs` (columns) and `vs`
    (rows) are world coordinates in mm, `axes` has the ellipsoid's unit axes as columns, `c_range` cuts it along
    its third axis (in units of that semi-axis)."""
    dx = xs[None, :] - np.float32(centre[0])
    dv = vs[:, None] - np.float32(centre[2])
    q0 = []
    dq = []
    for k in range(3):
        q0.append(dx * np.float32(axes[0, k] / semi[k]) + dv * np.float32(axes[2, k] / semi[k])
                   - np.float32(axes[1, k] * centre[1] / semi[k]))
        dq.append(float(axes[1, k] / semi[k]))
    a = dq[0] ** 2 + dq[1] ** 2 + dq[2] ** 2
    b = 2 * (q0[0] * dq[0] + q0[1] * dq[1] + q0[2] * dq[2])
    c = q0[0] * q0[0] + q0[1] * q0[1] + q0[2] * q0[2] - 1
    level = c + 1 - b * b / (4 * a)
    half = np.sqrt(np.maximum(1 - level, 0) / a)
    if c_range is None:
        return _Chord((2 * half).astype(np.float32))
    mid = -b / (2 * a)
    t1, t2 = mid - half, mid + half
    if abs(dq[2]) > 1e-9:
        ta, tb = (c_range[0] - q0[2]) / dq[2], (c_range[1] - q0[2]) / dq[2]
        t1 = np.maximum(t1, np.minimum(ta, tb))
        t2 = np.minimum(t2, np.maximum(ta, tb))
    else:
        t2 = np.where((q0[2] >= c_range[0]) & (q0[2] <= c_range[1]), t2, t1)
    return _Chord(np.clip(t2 - t1, 0, None).astype(np.float32))


def _rotation(in_plane: float, towards_beam: float) -> npt.NDArray[np.float64]:
    """Columns: an object's axes in world (x right, y along the beam, v up) after tilting its long (third) axis
    `towards_beam` and then turning it `in_plane` (radians, counter-clockwise on the film)."""
    ca, sa = math.cos(towards_beam), math.sin(towards_beam)
    tilt = np.array([[1, 0, 0], [0, ca, sa], [0, -sa, ca]], dtype=np.float64)
    cb, sb = math.cos(in_plane), math.sin(in_plane)
    turn = np.array([[cb, 0, -sb], [0, 1, 0], [sb, 0, cb]], dtype=np.float64)
    return turn @ tilt


# ---------------------------------------------------------------------------------------------------------------
# One implant with what sits on it, projected on its own grid (axis vertical, platform at v = 0)


@dataclass(frozen=True)
class _Projection:
    attenuation: F32  # sum of mu * path
    displaced: F32  # mm of jaw the implant body takes along each ray
    titanium: F32  # mm of titanium (implant and restoration)
    xs: F32
    vs: F32


def _project_implant(d: ImplantDesign, fit: _Fitting, pixel: float, angulation: float, turn: float,
                     mu: dict[str, float]) -> _Projection:
    cos_a, sin_a = math.cos(angulation), abs(math.sin(angulation))
    sin_signed = math.sin(angulation)
    pad = 0.1 + 4.0 * sin_a / cos_a
    body = _body_zone(d, fit, pad, turn)
    rest = _restoration_zone(fit, pad, turn)
    reach = max(body.radius, rest.radius if rest else 0.0)
    top = max(fit.top, body.s_extent[0] * -1)
    crown = fit.crown
    if crown is not None:
        reach = max(reach, crown.half_md, crown.half_bl * sin_a)
        top = max(top, crown.margin + crown.height + 1.0)
    half_cols = int(math.ceil(reach / pixel)) + 2
    xs = ((np.arange(2 * half_cols + 1) - half_cols) * pixel).astype(np.float32)
    v_top = top * cos_a + reach * sin_a + 2 * pixel
    v_bottom = -(d.length_mm * cos_a + body.radius * sin_a) - 2 * pixel
    vs = (v_top - np.arange(int(math.ceil((v_top - v_bottom) / pixel)) + 1) * pixel).astype(np.float32)

    titanium_body = np.zeros((vs.size, xs.size), np.float32)
    _project_zone(body, xs, vs, cos_a, sin_signed, turn, titanium_body)
    titanium_rest = np.zeros_like(titanium_body)
    if rest is not None:
        _project_zone(rest, xs, vs, cos_a, sin_signed, turn, titanium_rest)
    attenuation = mu["titanium"] * (titanium_body + titanium_rest)
    if crown is not None:
        attenuation += _crown_attenuation(crown, xs, vs, cos_a, sin_signed, titanium_rest, mu)
    return _Projection(attenuation.astype(np.float32), titanium_body, titanium_body + titanium_rest, xs, vs)


def _crown_attenuation(crown: _Crown, xs: F32, vs: F32, cos_a: float, sin_a: float, abutment: F32,
                       mu: dict[str, float]) -> F32:
    # Widest at two thirds of its height (the contact areas), about 0.65 of that at the margin, two cusps on top.
    top = crown.margin + crown.height
    centre = crown.margin + 0.65 * crown.height
    semi = (crown.half_md, crown.half_bl, 0.85 * crown.height)
    body = _axial_chord(xs, vs, cos_a, sin_a, (0.0, centre), semi, (crown.margin, top))
    cusp = (0.4 * crown.half_md, 0.7 * crown.half_bl, 1.0)
    for side in (-1.0, 1.0):
        body = body + _axial_chord(xs, vs, cos_a, sin_a, (side * 0.45 * crown.half_md, top - 0.2), cusp,
                                   (top, top + 1.0))
    if crown.material == "metal-ceramic":
        cw, ch, cc = crown.coping
        coping = _axial_chord(xs, vs, cos_a, sin_a, (0.0, cc), (cw, cw, ch), (crown.margin, top))
        metal = np.maximum(coping - abutment, 0)
        return (mu["alloy"] * metal + mu["porcelain"] * np.maximum(body - coping, 0)).astype(np.float32)
    material = {"zirconia": "zirconia", "disilicate": "disilicate", "composite": "composite"}[crown.material]
    return (mu[material] * np.maximum(body - abutment, 0)).astype(np.float32)


def _draw_fitting(rng: np.random.Generator, d: ImplantDesign, kind: Restoration) -> _Fitting:
    _, _, _, platform = _dimensions(d)
    conn = _connection(d)
    channel = conn.channel_radius
    screw_len = float(min(conn.channel_end - 0.3, rng.uniform(3.0, 4.5)))
    if kind == "none":
        return _Fitting(kind)
    if kind == "cover-screw":
        height = float(rng.uniform(0.3, 0.7))
        radius = platform * float(rng.uniform(0.85, 1.0))
        outer: tuple[tuple[float, float], ...] = ((0.0, radius), (height - 0.15, radius), (height, radius - 0.25))
        return _Fitting(kind, outer, socket=(height - 0.3, height + 0.01, 0.5), screw=(),
                        shank_depth=min(screw_len, 2.5))
    if kind == "healing-cap":
        height = float(rng.uniform(2.0, 6.0))
        base = platform * float(rng.uniform(0.85, 1.0))
        wide = platform * float(rng.uniform(1.05, 1.45))
        flare = height * float(rng.uniform(0.3, 0.7))
        outer = ((0.0, base), (flare, wide), (height - 0.3, wide), (height, wide - 0.35))
        return _Fitting(kind, outer, socket=(height - 1.2, height + 0.01, float(rng.uniform(0.55, 0.75))),
                        shank_depth=screw_len)
    switched = rng.random() < 0.35
    base = platform * (float(rng.uniform(0.72, 0.88)) if switched else float(rng.uniform(0.97, 1.0)))
    gingival = float(rng.uniform(0.8, 3.0))
    emergence = max(base, platform * float(rng.uniform(0.95, 1.3)))
    post_h = float(rng.uniform(4.0, 7.0) if kind == "abutment" else rng.uniform(3.5, 6.0))
    post_r = emergence * float(rng.uniform(0.72, 0.85))
    taper = math.tan(math.radians(float(rng.uniform(3.0, 8.0))))
    top = gingival + post_h
    top_r = max(post_r - taper * post_h, 0.9)
    outer = ((0.0, base), (gingival * 0.6, (base + emergence) / 2 + 0.05), (gingival, emergence),
             (gingival + 0.05, post_r), (top - 0.4, top_r), (top, top_r - 0.4))
    access = float(np.clip(channel + 0.35, 0.9, min(1.3, top_r - 0.35)))
    seat = float(rng.uniform(0.3, 1.2))
    head_top = seat + 1.0
    bore = ((0.0, channel), (seat - 0.01, channel), (seat, access), (top + 0.01, access))
    screw = ((0.0, channel - 0.07), (seat - 0.01, channel - 0.07), (seat, access - 0.08), (head_top, access - 0.08),
             (head_top + 0.01, 0.0))
    crown = None
    if kind == "crown":
        material: CrownMaterial = ("metal-ceramic", "zirconia", "disilicate", "composite")[
            int(rng.choice(4, p=[0.4, 0.3, 0.2, 0.1]))]
        margin = gingival * float(rng.uniform(0.5, 1.0))
        height = float(rng.uniform(6.5, 9.0))
        half_md = float(rng.uniform(3.3, 5.0))
        coping = (emergence * 0.9 + 0.4, (top - margin) / 2 + 0.35, (top + margin) / 2)
        crown = _Crown(material, margin, max(height, top - margin + 1.2), half_md, float(rng.uniform(3.8, 5.3)),
                       coping)
    return _Fitting(kind, outer, bore, screw, None, screw_len, True, crown)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Torch on one core without autograd (films are rendered many at a time, one per process), restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            yield
    finally:
        torch.set_num_threads(threads)


def implant_path_mm(design: ImplantDesign, pixel_mm: float, *, angulation_deg: float = 0.0,
                    axial_turn_deg: float = 0.0) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """The bare implant's titanium path length (mm) on a grid of `pixel_mm`, its axis vertical with the platform up,
    and the platform and apex in pixel coordinates (x right, y down, pixel centres at +0.5): a clean projection for
    checks and figures, without scene, noise or export."""
    angulation = math.radians(angulation_deg)
    with _one_thread():
        projection = _project_implant(design, _Fitting("none"), pixel_mm, angulation, math.radians(axial_turn_deg),
                                      dict(_MU))
    x0 = (projection.xs.size - 1) / 2 + 0.5
    y0 = float(projection.vs[0]) / pixel_mm + 0.5
    apex_y = y0 + design.length_mm * math.cos(angulation) / pixel_mm
    return projection.titanium, (x0, y0), (x0, apex_y)


# ---------------------------------------------------------------------------------------------------------------
# The film's choices


@dataclass(frozen=True)
class _Plan:
    upper: bool
    restoration: Restoration
    neighbours: int
    photographed: bool
    quarter_turns: int
    mirrored: bool
    bits: int
    jpeg_quality: int  # 0: PNG


def _plan(options: SceneOptions, rng: np.random.Generator) -> _Plan:
    """Every choice is drawn, in a fixed order, whether or not an option overrides it: a film differs from its
    sibling with one option changed in that option only."""
    upper = bool(rng.random() < 0.35)
    restoration: Restoration = RESTORATIONS[int(rng.choice(5, p=[0.2, 0.12, 0.13, 0.15, 0.4]))]
    draw = rng.random()
    neighbours = 0 if draw < 0.75 else 1 if draw < 0.93 else 2
    photographed = bool(rng.random() < 0.10)
    quarter_turns = 0 if rng.random() < 0.85 else int(rng.integers(1, 4))
    mirrored = bool(rng.random() < 0.1)
    form = rng.random()  # 50 % 8-bit PNG, 20 % 16-bit PNG, 30 % JPEG
    quality = int(rng.integers(55, 96))

    if options.neighbours is not None and not 0 <= options.neighbours <= 2:
        raise ValueError(f"neighbours must be 0, 1 or 2, not {options.neighbours}")
    if options.quarter_turns is not None and not 0 <= options.quarter_turns <= 3:
        raise ValueError(f"quarter_turns must be 0-3, not {options.quarter_turns}")
    if options.bits is not None and options.bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, not {options.bits}")
    if options.jpeg_quality is not None and not 0 <= options.jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be 0-100, not {options.jpeg_quality}")
    if options.restoration is not None and options.restoration not in RESTORATIONS:
        raise ValueError(f"restoration must be one of {RESTORATIONS}, not {options.restoration!r}")
    if options.bits == 16 and (options.jpeg_quality or options.photographed):
        raise ValueError("a 16-bit film is a PNG: it cannot be a JPEG or a photograph")
    if options.photographed and options.jpeg_quality == 0:
        raise ValueError("a photographed film is a JPEG: jpeg_quality cannot be 0")

    if options.photographed is not None:
        photographed = options.photographed
    elif options.bits == 16 or options.jpeg_quality == 0:
        photographed = False
    if photographed:
        bits, jpeg = 8, options.jpeg_quality or quality
    else:
        jpeg = options.jpeg_quality if options.jpeg_quality is not None else (quality if form >= 0.7 else 0)
        if options.bits == 16:
            jpeg = 0
        bits = options.bits if options.bits is not None else (16 if jpeg == 0 and 0.5 <= form < 0.7 else 8)
    return _Plan(
        upper=upper if options.upper_jaw is None else options.upper_jaw,
        restoration=restoration if options.restoration is None else options.restoration,
        neighbours=neighbours if options.neighbours is None else options.neighbours,
        photographed=photographed,
        quarter_turns=quarter_turns if options.quarter_turns is None else options.quarter_turns,
        mirrored=mirrored if options.mirrored is None else options.mirrored,
        bits=bits,
        jpeg_quality=jpeg,
    )


def _seed_sequence(design: ImplantDesign, seed: int) -> np.random.SeedSequence:
    digest = int.from_bytes(hashlib.sha256(repr(design).encode()).digest()[:8], "little")
    wide = seed % (1 << 64)
    return np.random.SeedSequence([wide & 0xFFFFFFFF, wide >> 32, digest & 0xFFFFFFFF, digest >> 32])


# ---------------------------------------------------------------------------------------------------------------
# The scene on the film, in a lower-jaw layout (crowns up; an upper-jaw film is this turned half a turn).
# Film millimetres: x right, v up, origin at the film centre.


@dataclass(frozen=True)
class _Placed:
    design: ImplantDesign  # at the size drawn
    fitting: _Fitting
    platform: tuple[float, float]  # film mm
    tilt: float  # in-plane angle of the axis (radians): the apex lies along (sin, -cos)
    angulation: float  # towards the beam
    turn: float  # about its own axis
    bone_loss: float  # depth of the crestal saucer below the platform (mm)

    @property
    def apex(self) -> tuple[float, float]:
        reach = self.design.length_mm * math.cos(self.angulation)
        return (self.platform[0] + reach * math.sin(self.tilt), self.platform[1] - reach * math.cos(self.tilt))


@dataclass
class _Canvas:
    """Film-sized maps in the lower-jaw layout, and its pixel grid in film millimetres."""

    pixel: float
    xs: F32  # column centres
    vs: F32  # row centres (top row first)
    attenuation: F32  # sum of mu * path of everything but the jaw bone
    displaced: F32  # mm of jaw taken by implants and roots with their sockets
    lamina: F32  # mm of extra cortical bone (lamina dura, canal walls)

    @classmethod
    def blank(cls, width: int, height: int, pixel: float) -> _Canvas:
        xs = ((np.arange(width) + 0.5 - width / 2) * pixel).astype(np.float32)
        vs = ((height / 2 - np.arange(height) - 0.5) * pixel).astype(np.float32)
        zeros = np.zeros((height, width), np.float32)
        return cls(pixel, xs, vs, zeros, zeros.copy(), zeros.copy())

    def window(self, centre: tuple[float, float], reach: float) -> tuple[slice, slice]:
        """Rows and columns within `reach` mm of a point."""
        c0 = int(np.searchsorted(self.xs, centre[0] - reach))
        c1 = int(np.searchsorted(self.xs, centre[0] + reach))
        r0 = int(np.searchsorted(-self.vs, -(centre[1] + reach)))
        r1 = int(np.searchsorted(-self.vs, -(centre[1] - reach)))
        return slice(r0, r1), slice(c0, c1)


def _paste(canvas: _Canvas, placed: _Placed, projection: _Projection) -> None:
    """Add an implant's own-grid maps to the film, turned by its tilt (bilinear resampling)."""
    cos_t, sin_t = math.cos(placed.tilt), math.sin(placed.tilt)
    px, pv = placed.platform
    corners = [(x, v) for x in (float(projection.xs[0]), float(projection.xs[-1]))
               for v in (float(projection.vs[0]), float(projection.vs[-1]))]
    film = [(px + x * cos_t - v * sin_t, pv + x * sin_t + v * cos_t) for x, v in corners]
    xs_f = [p[0] for p in film]
    vs_f = [p[1] for p in film]
    c0 = max(int(np.searchsorted(canvas.xs, min(xs_f))) - 1, 0)
    c1 = min(int(np.searchsorted(canvas.xs, max(xs_f))) + 1, canvas.xs.size)
    r0 = max(int(np.searchsorted(-canvas.vs, -max(vs_f))) - 1, 0)
    r1 = min(int(np.searchsorted(-canvas.vs, -min(vs_f))) + 1, canvas.vs.size)
    if c1 <= c0 or r1 <= r0:
        return
    dx = torch.from_numpy(canvas.xs[c0:c1] - px)[None, :]
    dv = torch.from_numpy(canvas.vs[r0:r1] - pv)[:, None]
    local_x = dx * cos_t + dv * sin_t
    local_v = -dx * sin_t + dv * cos_t
    pixel = canvas.pixel
    width, height = projection.xs.size, projection.vs.size
    # grid_sample's normalised coordinates: -1 and 1 at the outer edges of the first and last pixels.
    gx = ((local_x - float(projection.xs[0])) / pixel + 0.5) / width * 2 - 1
    gy = ((float(projection.vs[0]) - local_v) / pixel + 0.5) / height * 2 - 1
    grid = torch.stack([gx, gy], dim=-1)[None].float()
    maps = torch.from_numpy(np.stack([projection.attenuation, projection.displaced]))[None]
    sampled = torch.nn.functional.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros",
                                              align_corners=False)[0].numpy()
    canvas.attenuation[r0:r1, c0:c1] += sampled[0]
    canvas.displaced[r0:r1, c0:c1] += sampled[1]


@dataclass(frozen=True)
class _Tooth:
    cej: tuple[float, float]  # film mm, the centre of the cemento-enamel junction
    tilt: float
    angulation: float
    width: float
    depth: float  # buccolingual
    crown_h: float
    root_len: float
    roots: int
    amalgam: int  # 0 none, -1 / 1 on which side of the occlusal surface
    root_filled: bool


def _draw_tooth(rng: np.random.Generator, cej: tuple[float, float], width: float, tilt: float,
                angulation: float) -> _Tooth:
    molar = width > 8.3
    return _Tooth(cej=cej, tilt=tilt + float(rng.normal(0, math.radians(4))),
                  angulation=angulation + float(rng.normal(0, math.radians(5))), width=width,
                  depth=width * float(rng.uniform(0.95, 1.15)) if molar else width * float(rng.uniform(1.05, 1.3)),
                  crown_h=float(rng.uniform(6.5, 8.5)), root_len=float(rng.uniform(11.0, 14.0) if molar else
                                                                         rng.uniform(12.5, 16.0)),
                  roots=2 if molar else 1, amalgam=int(rng.choice([0, 0, 0, 0, -1, 1])) if rng.random() < 0.5 else 0,
                  root_filled=bool(rng.random() < 0.15))


def _add_tooth(canvas: _Canvas, tooth: _Tooth, mu: dict[str, float]) -> None:
    axes = _rotation(tooth.tilt, tooth.angulation)
    origin = np.array([tooth.cej[0], 0.0, tooth.cej[1]])

    def box(centre: tuple[float, float, float], semi: tuple[float, float, float]) -> tuple[slice, slice] | None:
        """The film rows and columns an ellipsoid's shadow can reach."""
        world = origin + axes @ np.array(centre)
        reach_x = math.sqrt(sum((axes[0, k] * semi[k]) ** 2 for k in range(3)))
        reach_v = math.sqrt(sum((axes[2, k] * semi[k]) ** 2 for k in range(3)))
        c0 = int(np.searchsorted(canvas.xs, world[0] - reach_x))
        c1 = int(np.searchsorted(canvas.xs, world[0] + reach_x))
        r0 = int(np.searchsorted(-canvas.vs, -(world[2] + reach_v)))
        r1 = int(np.searchsorted(-canvas.vs, -(world[2] - reach_v)))
        return (slice(r0, r1), slice(c0, c1)) if r1 > r0 and c1 > c0 else None

    def chord(window: tuple[slice, slice], centre: tuple[float, float, float], semi: tuple[float, float, float],
              c_range: tuple[float, float] | None = None) -> F32:
        world = origin + axes @ np.array(centre)
        return _chord(canvas.xs[window[1]], canvas.vs[window[0]], (float(world[0]), float(world[1]),
                                                                   float(world[2])), axes, semi, c_range).length

    w, bl, hc = tooth.width, tooth.depth, tooth.crown_h
    crown_box = box((0, 0, 0.5 * hc), (w / 2, bl / 2, 0.55 * hc + 1.0))
    if crown_box is not None:
        crown = chord(crown_box, (0, 0, 0.6 * hc), (w / 2, bl / 2, 0.85 * hc), (-0.6 / 0.85, 0.4 / 0.85))
        for side in (-1, 1):
            crown += chord(crown_box, (side * 0.22 * w, 0, hc - 0.2), (0.22 * w, 0.34 * bl, 1.0), (0.2, 1.0))
        dentin_semi = (w / 2 - 1.1, bl / 2 - 1.1, 0.85 * hc - 2.0)
        dentin_centre = 0.6 * hc - 0.6
        dentin = chord(crown_box, (0, 0, dentin_centre), dentin_semi, (-dentin_centre / dentin_semi[2], 1.0))
        pulp = chord(crown_box, (0, 0, 0.22 * hc), (0.1 * w, 0.13 * bl, 0.16 * hc))
        attenuation = mu["enamel"] * np.maximum(crown - dentin, 0) + mu["dentin"] * np.maximum(dentin - pulp, 0)
        if tooth.amalgam:
            filling = chord(crown_box, (tooth.amalgam * 0.12 * w, 0, hc - 0.8), (0.24 * w, 0.3 * bl, 1.3),
                            (-1.0, 0.55))
            attenuation += (mu["amalgam"] - mu["enamel"]) * filling
        canvas.attenuation[crown_box] += attenuation
    roots: list[tuple[tuple[float, float, float], tuple[float, float, float]]] = []
    if tooth.roots == 1:
        roots.append(((0.0, 0.0, 0.0), (0.31 * w, 0.38 * bl, tooth.root_len)))
    else:
        roots.append(((0.0, 0.0, 0.0), (0.33 * w, 0.4 * bl, 3.0)))  # the trunk the roots branch from
        for offset in (-0.24 * w, 0.24 * w):
            roots.append(((offset, 0.0, -2.0), (0.17 * w, 0.38 * bl, tooth.root_len * 0.92)))
    for number, (centre, semi) in enumerate(roots):
        wall_semi = (semi[0] + 0.5, semi[1] + 0.5, semi[2] + 0.5)
        window = box(centre, wall_semi)
        if window is None:
            continue
        root = chord(window, centre, semi, (-1.0, 0.0))
        ligament = chord(window, centre, (semi[0] + 0.2, semi[1] + 0.2, semi[2] + 0.2), (-1.0, 0.05))
        wall = chord(window, centre, wall_semi, (-1.0, 0.05))
        attenuation = mu["dentin"] * root
        if tooth.roots == 1 or number > 0:
            canal = chord(window, centre, (0.3, 0.4, semi[2] * 0.93), (-1.0, 0.0))
            attenuation -= mu["dentin"] * canal
            if tooth.root_filled:
                attenuation += mu["gutta-percha"] * canal
        canvas.attenuation[window] += attenuation
        canvas.displaced[window] += ligament
        canvas.lamina[window] += wall - ligament


def _band_noise(rng: np.random.Generator, shape: tuple[int, int], cell: float, wavelength: float,
                aspect: float) -> tuple[F32, F32]:
    """Two independent fields of noise band-passed around `wavelength` (mm) on a grid of `cell` mm, from one inverse
    FFT of complex white noise (real and imaginary parts)."""
    fy = (np.fft.fftfreq(shape[0], d=cell) * aspect).astype(np.float32)[:, None]
    fx = (np.fft.fftfreq(shape[1], d=cell) / aspect).astype(np.float32)[None, :]
    radius = np.sqrt(fx * fx + fy * fy)
    centre = np.float32(1.0 / wavelength)
    band = np.exp(-(((radius - centre) / (np.float32(0.45) * centre)) ** 2))
    spectrum = torch.complex(torch.from_numpy(rng.standard_normal(shape, dtype=np.float32) * band),
                             torch.from_numpy(rng.standard_normal(shape, dtype=np.float32) * band))
    field = torch.fft.ifft2(spectrum)
    real, imag = field.real.numpy(), field.imag.numpy()
    return real / (real.std() + 1e-9), imag / (imag.std() + 1e-9)


def _fast_size(n: int) -> int:
    """The next size whose only prime factors are 2, 3 and 5 (fast FFTs)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def _trabecular(rng: np.random.Generator, width_mm: float, height_mm: float, upper: bool) -> tuple[F32, float]:
    """Trabecular density (mean about 1) on a coarse grid, and the grid's cell: the projection of several layers of
    plates, each the zero-crossing network (|n| small) of band-passed noise, over slowly varying marrow spaces."""
    cell = 0.075
    shape = (_fast_size(int(height_mm / cell) + 2), _fast_size(int(width_mm / cell) + 2))
    spacing = float(rng.uniform(0.7, 1.1) if upper else rng.uniform(0.9, 1.5))
    aspect = float(rng.uniform(0.8, 1.3))
    contrast = float(rng.uniform(0.25, 0.55))
    density = np.zeros(shape, np.float32)
    for layer in range(2):
        for field in _band_noise(rng, shape, cell, spacing * (0.85 + 0.4 * layer), aspect):
            wall = float(rng.uniform(0.25, 0.5))
            density += np.exp(-((field / wall) ** 2))
    density /= density.mean()
    coarse = (_fast_size(shape[0] // 6 + 2), _fast_size(shape[1] // 6 + 2))
    marrow = _resize(_band_noise(rng, coarse, cell * 6, float(rng.uniform(2.5, 5.0)), 1.0)[0], *shape)
    density = (1 - contrast + contrast * density) * np.clip(1 + float(rng.uniform(0.08, 0.2)) * marrow, 0.5, None)
    return (density / density.mean()).astype(np.float32), cell


def _resize(image: F32, height: int, width: int) -> F32:
    tensor = torch.from_numpy(np.ascontiguousarray(image))[None, None]
    return torch.nn.functional.interpolate(tensor, size=(height, width), mode="bilinear",
                                           align_corners=False)[0, 0].numpy()


@dataclass(frozen=True)
class _Jaw:
    tilt: float  # the jaw's in-plane angle on the film
    crest: tuple[float, float, float, float, float]  # level at the implant, slope, amplitude, wavelength, phase
    width: float  # buccolingual width of the ridge (mm)
    rounding: float  # how far below the crest the ridge reaches full width
    cortex: float  # thickness of each cortical plate
    crest_cortex: float  # strength of the cortical line along the crest
    fraction: float  # bone volume fraction of the trabecular part
    canal: tuple[float, float, float] | None  # level at x = 0, slope, radius (lower jaw)
    sinus: tuple[float, float, float] | None  # floor level at x = 0, curvature, centre x (upper jaw)
    soft: tuple[float, float, float]  # soft tissue mm at the centre, gradients along x and v


def _add_jaw(canvas: _Canvas, jaw: _Jaw, implants: list[_Placed], rng: np.random.Generator,
             mu: dict[str, float], upper: bool) -> F32:
    """The film's total attenuation: the jaw bone and soft tissue added to everything on the canvas."""
    cos_j, sin_j = math.cos(jaw.tilt), math.sin(jaw.tilt)
    X = canvas.xs[None, :]
    V = canvas.vs[:, None]
    jx = X * np.float32(cos_j) + V * np.float32(sin_j)  # jaw coordinates: along the arch, and up
    jv = V * np.float32(cos_j) - X * np.float32(sin_j)

    # The crest along the arch (a table over jx), lowered into a saucer around each implant's neck.
    along = np.arange(float(jx.min()) - 0.1, float(jx.max()) + 0.1, 0.02)
    level, slope, amplitude, wavelength, phase = jaw.crest
    crest_1d = level + slope * along + amplitude * np.sin(along * (2 * math.pi / wavelength) + phase)
    saucer_1d = np.zeros_like(along)
    for placed in implants:
        px, pv = placed.platform
        ix = px * cos_j + pv * sin_j
        iv = -px * sin_j + pv * cos_j
        radius = placed.design.diameter_mm / 2
        spread = 1.2 + 0.5 * placed.bone_loss
        distance = np.abs(along - ix)
        reach = np.where(distance < radius, 1.0, np.clip(1 - (distance - radius) / spread, 0, 1)) ** 1.5
        floor = iv - placed.bone_loss
        crest_1d = np.minimum(crest_1d, floor + (crest_1d - floor) * (1 - reach))
        if placed.bone_loss > 0.3:
            saucer_1d = np.maximum(saucer_1d, reach)
    crest = np.interp(jx, along, crest_1d).astype(np.float32)
    no_cortex = np.interp(jx, along, saucer_1d).astype(np.float32)

    depth = crest - jv
    edge = np.clip(depth * np.float32(10.0) + np.float32(0.5), 0, 1)
    full = np.sqrt(np.clip(depth * np.float32(1 / jaw.rounding), 0, 1))
    full *= edge
    full *= np.float32(jaw.width)
    plates = np.clip(depth * np.float32(1 / 1.5), 0.35, 1)
    plates *= edge
    plates *= np.float32(2 * jaw.cortex)
    crest_line = np.exp(np.maximum(depth, 0) * np.float32(-1 / 0.45))
    crest_line *= edge
    crest_line *= np.float32(jaw.width * jaw.crest_cortex) * (1 - no_cortex)
    room = full - plates
    room -= canvas.displaced
    np.maximum(room, 0, out=room)
    if jaw.sinus is not None:
        floor_level, curvature, centre = jaw.sinus
        to_floor = jv - (floor_level - curvature * (jx - np.float32(centre)) ** 2)
        beyond = np.clip(to_floor * np.float32(-1 / 0.3), 0, 1)
        room *= 1 - 0.8 * beyond
        plates *= 1 - 0.5 * beyond
        plates += 1.2 * np.exp(-np.abs(to_floor) * np.float32(1 / 0.25)) * edge
    if jaw.canal is not None:
        canal_level, canal_slope, canal_r = jaw.canal
        offset = jv - (jx * np.float32(canal_slope) + np.float32(canal_level))
        offset *= offset
        inside = 2 * np.sqrt(np.maximum(np.float32(canal_r**2) - offset, 0))
        wall = 2 * np.sqrt(np.maximum(np.float32((canal_r + 0.25) ** 2) - offset, 0)) - inside
        room = np.maximum(room - inside, 0)
        plates += 0.6 * wall * edge
    height_mm = canvas.vs.size * canvas.pixel
    width_mm = canvas.xs.size * canvas.pixel
    density, _ = _trabecular(rng, width_mm, height_mm, upper)
    density = _resize(density, canvas.vs.size, canvas.xs.size)
    room *= density
    room *= np.float32(jaw.fraction)
    mineral = plates
    mineral += crest_line
    mineral += room
    mineral += np.float32(0.75) * canvas.lamina * edge
    soft_mm, soft_dx, soft_dv = jaw.soft
    gingiva = np.clip((np.float32(3.5) - depth) * np.float32(1 / 1.5), 0, 1)
    gingiva *= np.clip(depth + np.float32(1.0), 0, 1)
    total = canvas.attenuation + np.float32(mu["bone"]) * mineral
    total += np.float32(3.0 * mu["soft"]) * gingiva
    total += np.float32(mu["soft"]) * (np.float32(soft_mm) + np.float32(soft_dx) * X + np.float32(soft_dv) * V)
    return total.astype(np.float32)


def _holder(canvas: _Canvas, rng: np.random.Generator, mu: dict[str, float]) -> F32:
    """A sensor holder's bite block along one edge: a band of plastic with a straight border."""
    extra = np.zeros((canvas.vs.size, canvas.xs.size), np.float32)
    present = rng.random() < 0.15
    side = int(rng.integers(0, 4))
    inset = float(rng.uniform(1.0, 5.0))
    angle = float(rng.normal(0, math.radians(6)))
    thickness = float(rng.uniform(6.0, 14.0))
    if not present:
        return extra
    half_w = canvas.xs.size * canvas.pixel / 2
    half_h = canvas.vs.size * canvas.pixel / 2
    normal = [(0.0, 1.0), (0.0, -1.0), (1.0, 0.0), (-1.0, 0.0)][side]
    limit = (half_h if side < 2 else half_w) - inset
    nx = normal[0] * math.cos(angle) - normal[1] * math.sin(angle)
    nv = normal[0] * math.sin(angle) + normal[1] * math.cos(angle)
    distance = canvas.xs[None, :] * nx + canvas.vs[:, None] * nv - limit
    inside = np.clip(distance / 0.08 + 0.5, 0, 1)
    rim = np.exp(-((distance / 0.25) ** 2)) * 0.5
    return (mu["plastic"] * (thickness * inside + thickness * rim)).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# Detector and export


def _gauss(image: F32, sigma: float) -> F32:
    """Separable Gaussian blur (edges extended); wide ones on a grid twice as coarse."""
    if sigma < 0.2:
        return image
    if sigma > 1.6 and min(image.shape) > 16:
        tensor = torch.from_numpy(np.ascontiguousarray(image))[None, None]
        half = torch.nn.functional.avg_pool2d(tensor, 2, ceil_mode=True)[0, 0].numpy()
        return _resize(_gauss(half, math.sqrt(sigma**2 - 0.25) / 2), image.shape[0], image.shape[1])
    radius = max(1, int(math.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2).astype(np.float32)
    taps /= taps.sum()
    height, width = image.shape
    padded = np.pad(image, ((0, 0), (radius, radius)), mode="edge")
    rows = taps[0] * padded[:, :width]
    for i in range(1, taps.size):
        rows += taps[i] * padded[:, i:i + width]
    padded = np.pad(rows, ((radius, radius), (0, 0)), mode="edge")
    out = taps[0] * padded[:height]
    for i in range(1, taps.size):
        out += taps[i] * padded[i:i + height]
    return out


def _lowpass(image: F32, factor: int, sigma: float) -> F32:
    """A wide blur: block means on a grid `factor` times coarser, blurred there, and brought back."""
    tensor = torch.from_numpy(np.ascontiguousarray(image))[None, None]
    small = torch.nn.functional.avg_pool2d(tensor, factor, ceil_mode=True)[0, 0].numpy()
    return _resize(_gauss(small, sigma), image.shape[0], image.shape[1])


def _expose(attenuation: F32, rng: np.random.Generator, pixel_mm: float) -> F32:
    """Counts of a 12-bit sensor: Beer-Lambert with mild beam hardening, heel effect, scatter, quantum noise,
    scintillator blur, read noise, quantisation."""
    hardening = float(rng.uniform(0.03, 0.08))
    photons = float(rng.uniform(900.0, 4000.0)) * (pixel_mm / 0.04) ** 2
    heel = (float(rng.normal(0, 0.06)), float(rng.normal(0, 0.06)))
    scatter = float(rng.uniform(0.03, 0.12))
    blur = float(rng.uniform(0.5, 1.3))
    read_noise = float(rng.uniform(0.5, 3.0))
    full_scale = float(rng.uniform(3300.0, 4300.0))
    height, width = attenuation.shape
    effective = np.log1p(hardening * attenuation) / hardening
    gx = np.linspace(-1, 1, width, dtype=np.float32)[None, :] * heel[0]
    gy = np.linspace(-1, 1, height, dtype=np.float32)[:, None] * heel[1]
    expected = photons * (1 + gx + gy) * np.exp(-effective)
    expected += scatter * _lowpass(expected, 16, 3.0)
    counts = expected + np.sqrt(np.maximum(expected, 0)) * rng.standard_normal(expected.shape, dtype=np.float32)
    counts = _gauss(np.maximum(counts, 0), blur)
    raw = counts * (full_scale / photons) + read_noise * rng.standard_normal(counts.shape, dtype=np.float32)
    return np.clip(np.rint(raw), 0, 4095).astype(np.float32)


def _develop(raw: F32, rng: np.random.Generator) -> F32:
    """What a clinic's software exports, 0 (black) to 1 (white, metal): log, window, gamma, unsharp mask."""
    low_q = float(rng.uniform(0.002, 0.03))
    stretch = float(rng.uniform(1.7, 2.8))
    gamma = float(rng.uniform(0.75, 1.35))
    sharpen = float(rng.uniform(0.3, 1.2)) if rng.random() < 0.6 else 0.0
    radius = float(rng.uniform(1.5, 4.0))
    # The sensor's 4096 levels through one table: density (log), window from the film's histogram, gamma.
    levels = raw.astype(np.int16)
    counts = np.bincount(levels[::4, ::4].ravel(), minlength=4096)
    darkest_first = np.cumsum(counts[::-1]) / counts.sum()  # fraction of pixels at least this dense
    density_of = np.float32(math.log(4095.5)) - np.log(np.arange(4096, dtype=np.float32) + np.float32(0.5))
    low = float(density_of[4095 - int(np.searchsorted(darkest_first, low_q))])
    middle = float(density_of[4095 - int(np.searchsorted(darkest_first, 0.5))])
    high = low + (middle - low) * stretch
    table = np.clip((density_of - low) / max(high - low, 1e-3), 0, 1) ** np.float32(gamma)
    display = table.astype(np.float32)[levels]
    if sharpen:
        display += np.float32(sharpen) * (display - _gauss(display, radius))
        np.clip(display, 0, 1, out=display)
    return display


# ---------------------------------------------------------------------------------------------------------------
# A phone photograph of the film on a monitor


def _homography(src: npt.NDArray[np.float64], dst: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    rows = []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y, -u])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y, -v])
    _, _, vt = np.linalg.svd(np.array(rows))
    matrix = vt[-1].reshape(3, 3)
    return matrix / matrix[2, 2]


def _apply(matrix: npt.NDArray[np.float64], point: tuple[float, float]) -> tuple[float, float]:
    x, y, w = matrix @ np.array([point[0], point[1], 1.0])
    return float(x / w), float(y / w)


def _photograph(display: F32, rng: np.random.Generator, canvas: tuple[int, int] | None,
                implant_px: float) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float64]]:
    """The film shown on a monitor and photographed: RGB pixels and the film-to-photo homography."""
    height, width = display.shape
    occupancy = float(rng.uniform(0.7, 0.9))
    scale = float(rng.uniform(0.85, 1.25))
    angle = float(rng.normal(0, math.radians(3)))
    jitter = rng.uniform(-0.05, 0.05, size=(4, 2))
    shift = rng.normal(0, 0.03, size=2)
    screen_period = float(rng.choice([1.0, 2.0])) / (1 - float(rng.uniform(0.01, 0.08)))
    moire = float(rng.uniform(0.02, 0.1))
    black, white = float(rng.uniform(0.02, 0.08)), float(rng.uniform(0.82, 1.0))
    surround = float(rng.uniform(0.05, 0.25))
    glare = (float(rng.uniform(0.05, 0.35)), float(rng.uniform(0, 1)), float(rng.uniform(0, 1)),
             float(rng.uniform(0.3, 0.7)))
    cast = 1 + rng.normal(0, 0.05, size=3) + np.array([-1.0, 0.0, 1.0]) * float(rng.normal(0, 0.04))
    vignette = float(rng.uniform(0, 0.25))
    blur = float(rng.uniform(0.4, 1.2))
    noise = float(rng.uniform(0.005, 0.02))

    if canvas is None:
        scale = float(np.clip(scale, 150 / implant_px, 700 / implant_px))
        scale = min(scale, 1400 * occupancy / max(width, height))
        out_w, out_h = int(width * scale / occupancy), int(height * scale / occupancy)
    else:
        out_w, out_h = canvas
        scale = min(out_w / width, out_h / height) * occupancy
    centre = np.array([out_w / 2 * (1 + shift[0]), out_h / 2 * (1 + shift[1])])
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    placed = (corners - [width / 2, height / 2]) * scale @ rotation.T + centre
    placed += jitter * scale * max(width, height)
    to_photo = _homography(corners, placed)
    to_film = np.linalg.inv(to_photo)

    px = torch.arange(out_w, dtype=torch.float32)[None, :] + 0.5
    py = torch.arange(out_h, dtype=torch.float32)[:, None] + 0.5
    m = torch.from_numpy(to_film.astype(np.float32))
    w = m[2, 0] * px + m[2, 1] * py + m[2, 2]
    fx = (m[0, 0] * px + m[0, 1] * py + m[0, 2]) / w
    fy = (m[1, 0] * px + m[1, 1] * py + m[1, 2]) / w
    grid = torch.stack([(fx / width * 2 - 1), (fy / height * 2 - 1)], dim=-1)[None]
    source = torch.from_numpy(np.stack([display, np.ones_like(display)]))[None]
    sampled = torch.nn.functional.grid_sample(source, grid, mode="bilinear", padding_mode="zeros",
                                              align_corners=False)[0]
    shown, inside = sampled[0], sampled[1]
    luminance = (black + (white - black) * shown) * inside + surround * (1 - inside)
    # The screen's pixel grid (RGB stripes) seen through the camera's coarser grid aliases into moire.
    period = screen_period / scale
    rows_pattern = 0.5 + 0.5 * torch.cos(2 * math.pi * fy / period)
    channels = []
    for c in range(3):
        cols_pattern = 0.5 + 0.5 * torch.cos(2 * math.pi * (fx / period + c / 3))
        channels.append(luminance * (1 - moire + moire * 2 * cols_pattern * rows_pattern))
    rgb = torch.stack(channels)
    yy = py / out_h
    xx = px / out_w
    strength, gx0, gy0, spread = glare
    rgb += strength * torch.exp(-((xx - gx0) ** 2 + (yy - gy0) ** 2) / (2 * spread**2))
    rgb *= torch.from_numpy(cast.astype(np.float32))[:, None, None]
    rgb *= 1 - vignette * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2) * 2
    image = np.stack([_gauss(channel.numpy(), blur) for channel in rgb])
    image += noise * rng.standard_normal(image.shape, dtype=np.float32)
    pixels = np.clip(np.rint(image.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)
    return pixels, to_photo


# ---------------------------------------------------------------------------------------------------------------
# The film


def _encode(display: F32, plan: _Plan) -> bytes:
    buffer = io.BytesIO()
    if plan.bits == 16:
        Image.fromarray(np.rint(display * 4095).astype(np.uint16)).save(buffer, format="PNG", compress_level=1)
    elif plan.jpeg_quality:
        Image.fromarray(np.rint(display * 255).astype(np.uint8)).save(buffer, format="JPEG",
                                                                      quality=plan.jpeg_quality)
    else:
        Image.fromarray(np.rint(display * 255).astype(np.uint8)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


@dataclass(frozen=True)
class _Layout:
    pixel: float
    width: int
    height: int
    implants: list[_Placed]
    teeth: list[_Tooth]
    jaw: _Jaw


def _draw_neighbour(rng: np.random.Generator, seed: int, number: int) -> tuple[ImplantDesign, _Fitting, float, float]:
    system = random_system(rng, manufacturer="Demo Neighbour", system=f"Neighbour {seed}-{number}")
    design = system.random_size(rng)
    kind: Restoration = RESTORATIONS[int(rng.choice(5, p=[0.1, 0.1, 0.1, 0.1, 0.6]))]
    fitting = _draw_fitting(rng, design, kind)
    return design, fitting, float(rng.normal(0, math.radians(4))), float(rng.uniform(0, 2 * math.pi))


def _triangular(u: float, low: float, mode: float, high: float) -> float:
    """The triangular distribution's quantile at u: sizes near `mode` common, the extremes rare."""
    if high <= low:
        return low
    mode = min(max(mode, low), high)
    split = (mode - low) / (high - low)
    if u < split:
        return low + math.sqrt(u * (high - low) * (mode - low))
    return high - math.sqrt((1 - u) * (high - low) * (high - mode))


def _layout(design: ImplantDesign, seed: int, plan: _Plan, film_px: tuple[int, int] | None,
            rngs: dict[str, np.random.Generator]) -> _Layout:
    geo = rngs["geometry"]
    implant = design.random_size(geo)
    magnification = float(geo.uniform(1.0, 1.08))
    angulation = math.radians(float(np.clip(geo.normal(0, 9), -25, 25)))
    turn = float(geo.uniform(0, 2 * math.pi))
    jaw_tilt = math.radians(float(np.clip(geo.normal(0, 6), -15, 15)))
    tilt = float(np.clip(jaw_tilt + geo.normal(0, math.radians(4)), -math.radians(20), math.radians(20)))
    short_side = float(geo.uniform(20.0, 26.0))
    long_side = min(short_side * float(geo.uniform(1.35, 1.5)), 36.0)
    landscape = bool(geo.random() < 0.6)
    pitch_draw = float(geo.random())
    spacing = float(geo.uniform(6.5, 9.5))
    place_x, place_v = (float(v) for v in geo.random(2))
    first_side = 1.0 if geo.random() < 0.5 else -1.0
    neighbour_shift = [float(v) for v in geo.normal(0, 0.6, size=2)]
    fitting = _draw_fitting(rngs["fitting"], implant, plan.restoration)
    drawn = [_draw_neighbour(rngs["neighbours"], seed, k) for k in range(2)]

    # The implants relative to the asked one's platform (film mm), then the pixel size, then the film.
    cos_j, sin_j = math.cos(jaw_tilt), math.sin(jaw_tilt)
    radius = implant.diameter_mm / 2
    placed: list[tuple[ImplantDesign, _Fitting, tuple[float, float], float, float, float]] = [
        (implant, fitting, (0.0, 0.0), tilt, angulation, turn)]
    for k in range(plan.neighbours):
        n_design, n_fit, n_tilt, n_turn = drawn[k]
        side = first_side if k == 0 else -first_side
        gap = max(spacing, radius + n_design.diameter_mm / 2 + 2.5)
        jx, jv = side * gap, neighbour_shift[k]
        offset = (jx * cos_j - jv * sin_j, jx * sin_j + jv * cos_j)
        placed.append((n_design, n_fit, offset, jaw_tilt + n_tilt, angulation + n_tilt / 2, n_turn))
    xs_lo, xs_hi, vs_lo, vs_hi = [], [], [], []
    for d, _, (ox, ov), t, a, _ in placed:
        reach = d.length_mm * math.cos(a)
        ax, av = ox + reach * math.sin(t), ov - reach * math.cos(t)
        r = d.diameter_mm / 2 + 1.0
        xs_lo.append(min(ox, ax) - r)
        xs_hi.append(max(ox, ax) + r)
        vs_lo.append(min(ov, av) - r - 0.8)
        vs_hi.append(max(ov, av) + r)
    need_w, need_h = max(xs_hi) - min(xs_lo), max(vs_hi) - min(vs_lo)

    projected = implant.length_mm * math.cos(angulation)
    pixel_lo = max(0.025 / magnification, projected / 700)
    pixel_hi = min(0.06 / magnification, projected / 150)
    if film_px is not None:
        width, height = film_px if plan.quarter_turns % 2 == 0 else film_px[::-1]
        if plan.photographed:
            width, height = int(width * 0.8), int(height * 0.8)
        pixel_lo = max(pixel_lo, need_w / width, need_h / height)
        pixel = pixel_lo if pixel_lo >= pixel_hi else _triangular(pitch_draw, pixel_lo, 0.04 / magnification,
                                                                    pixel_hi)
    else:
        short_mm, long_mm = short_side / magnification, long_side / magnification
        if need_h > short_mm:
            landscape = False
        elif need_w > short_mm:
            landscape = True
        film_w, film_h = (long_mm, short_mm) if landscape else (short_mm, long_mm)
        film_w, film_h = max(film_w, need_w + 0.5), max(film_h, need_h + 0.5)
        pixel = _triangular(pitch_draw, pixel_lo, 0.04 / magnification, pixel_hi)
        width, height = int(round(film_w / pixel)), int(round(film_h / pixel))
    half_w, half_h = width * pixel / 2, height * pixel / 2
    lo_x, hi_x = -half_w - min(xs_lo), half_w - max(xs_hi)
    lo_v, hi_v = -half_h - min(vs_lo), half_h - max(vs_hi)
    origin = (lo_x + (0.2 + 0.6 * place_x) * (hi_x - lo_x) if hi_x > lo_x else (lo_x + hi_x) / 2,
              lo_v + place_v * (hi_v - lo_v) if hi_v > lo_v else (lo_v + hi_v) / 2)
    return _scene(rngs, plan, implant, placed, origin, jaw_tilt, angulation, spacing, pixel, width, height)


def _scene(rngs: dict[str, np.random.Generator], plan: _Plan, implant: ImplantDesign,
           placed: list[tuple[ImplantDesign, _Fitting, tuple[float, float], float, float, float]],
           origin: tuple[float, float], jaw_tilt: float, angulation: float, spacing: float, pixel: float,
           width: int, height: int) -> _Layout:
    """The jaw and teeth around the placed implants."""
    rng = rngs["jaw"]
    cos_j, sin_j = math.cos(jaw_tilt), math.sin(jaw_tilt)

    def to_jaw(point: tuple[float, float]) -> tuple[float, float]:
        return point[0] * cos_j + point[1] * sin_j, -point[0] * sin_j + point[1] * cos_j

    def to_film(point: tuple[float, float]) -> tuple[float, float]:
        return point[0] * cos_j - point[1] * sin_j, point[0] * sin_j + point[1] * cos_j

    platform = (origin[0], origin[1])
    ix, iv = to_jaw(platform)
    tissue_level = implant.collar_mm >= 1.8 and not implant.microthreads
    below = -(implant.collar_mm - float(rng.uniform(0.3, 1.0))) if tissue_level else float(rng.uniform(-0.5, 1.0))
    crest_level = iv + below
    crest = (crest_level, float(rng.normal(0, 0.06)), float(rng.uniform(0.2, 0.9)), float(rng.uniform(5, 12)),
             float(rng.uniform(0, 2 * math.pi)))

    def crest_at(jx: float) -> float:
        level, slope, amplitude, wavelength, phase = crest
        return level + slope * (jx - ix) + amplitude * (math.sin((jx - ix) * 2 * math.pi / wavelength + phase)
                                                        - math.sin(phase))

    losses = []
    for _ in range(3):
        draw = rng.random()
        losses.append(float(rng.uniform(0, 0.8) if draw < 0.5 else rng.uniform(0.8, 2.5) if draw < 0.85
                            else rng.uniform(2.5, 4.5)))
    implants: list[_Placed] = []
    for number, (d, fit, offset, tilt, angle, turn) in enumerate(placed):
        point = (platform[0] + offset[0], platform[1] + offset[1])
        implants.append(_Placed(d, fit, point, tilt, angle, turn, losses[number]))
    taken = [to_jaw(p.platform)[0] - ix for p in implants[1:]]

    teeth: list[_Tooth] = []
    tooth_rng = rngs["teeth"]
    for slot in (-2, -1, 1, 2):
        jx = ix + slot * spacing
        present = tooth_rng.random() < 0.8
        width_t = spacing * float(tooth_rng.uniform(0.85, 1.0))
        cej_up = float(tooth_rng.uniform(1.0, 2.0))
        tooth = _draw_tooth(tooth_rng, to_film((jx, crest_at(jx) + cej_up)), width_t, jaw_tilt, angulation)
        if present and all(abs(jx - ix - t) > spacing * 0.6 for t in taken):
            teeth.append(tooth)

    upper = plan.upper
    deepest = min(min(to_jaw(p.apex)[1] for p in implants),
                  min((to_jaw(t.cej)[1] - t.root_len for t in teeth), default=iv - 10))
    canal_draw, sinus_draw = rng.random(), rng.random()
    canal = (deepest - float(rng.uniform(1.5, 4.5)), float(rng.normal(0, 0.05)), float(rng.uniform(1.1, 1.8)))
    sinus = (to_jaw(implants[0].apex)[1] - float(rng.uniform(-1.0, 4.0)), float(rng.uniform(0.005, 0.03)),
             ix + float(rng.normal(0, 6)))
    jaw = _Jaw(
        tilt=jaw_tilt, crest=(crest_level - crest[1] * ix - crest[2] * math.sin(crest[4]), crest[1], crest[2], crest[3],
                              crest[4] - ix * 2 * math.pi / crest[3]),
        width=float(rng.uniform(6.0, 10.0) if upper else rng.uniform(7.0, 11.0)),
        rounding=float(rng.uniform(1.5, 3.5)),
        cortex=float(rng.uniform(0.4, 1.0) if upper else rng.uniform(0.8, 1.8)),
        crest_cortex=float(rng.uniform(0.05, 0.2)),
        fraction=float(rng.uniform(0.18, 0.35) if upper else rng.uniform(0.25, 0.45)),
        canal=canal if not upper and canal_draw < 0.35 else None,
        sinus=sinus if upper and sinus_draw < 0.4 else None,
        soft=(float(rng.uniform(14, 24)), float(rng.normal(0, 0.1)), float(rng.normal(0, 0.1))),
    )
    return _Layout(pixel, width, height, implants, teeth, jaw)


def _stored(point: tuple[float, float], plan: _Plan, width: int, height: int) -> tuple[float, float]:
    """A point of the lower-jaw-layout film (pixels) on the file as stored: upper jaw turned half a turn, then the
    stored quarter turns (counter-clockwise, as numpy's rot90), then the mirroring."""
    x, y = point
    if plan.upper:
        x, y = width - x, height - y
    for _ in range(plan.quarter_turns):
        x, y = y, width - x
        width, height = height, width
    if plan.mirrored:
        x = width - x
    return x, y


def render_film(design: ImplantDesign, seed: int, options: SceneOptions = ANY_SCENE, *,
                film_px: tuple[int, int] | None = None) -> tuple[bytes, FilmTruth]:
    """A complete film file (8-bit PNG, 16-bit PNG or JPEG) of one implant of the `design` system at one of its
    sizes, and its ground truth; deterministic from (design, seed, options). `film_px` fixes the stored file's
    (width, height); the pixel size then follows from it."""
    with _one_thread():
        return _render_film(design, seed, options, film_px)


def render(design: ImplantDesign, seed: int, options: SceneOptions = ANY_SCENE) -> bytes:
    """Just the film file of `render_film`."""
    return render_film(design, seed, options)[0]


def _render_film(design: ImplantDesign, seed: int, options: SceneOptions,
                 film_px: tuple[int, int] | None) -> tuple[bytes, FilmTruth]:
    names = ("plan", "geometry", "fitting", "neighbours", "jaw", "teeth", "holder", "bone", "detector", "export",
             "photo")
    rngs = {name: np.random.default_rng(child) for name, child in
            zip(names, _seed_sequence(design, seed).spawn(len(names)), strict=True)}
    plan = _plan(options, rngs["plan"])
    layout = _layout(design, seed, plan, film_px, rngs)
    beam = float(rngs["detector"].uniform(0.85, 1.15))
    mu = {name: value * beam for name, value in _MU.items()}

    canvas = _Canvas.blank(layout.width, layout.height, layout.pixel)
    for placed in layout.implants:
        projection = _project_implant(placed.design, placed.fitting, layout.pixel, placed.angulation,
                                      placed.turn, mu)
        _paste(canvas, placed, projection)
    for tooth in layout.teeth:
        _add_tooth(canvas, tooth, mu)
    canvas.attenuation += _holder(canvas, rngs["holder"], mu)
    attenuation = _add_jaw(canvas, layout.jaw, layout.implants, rngs["bone"], mu, plan.upper)
    if plan.upper:
        attenuation = attenuation[::-1, ::-1]
    display = _develop(_expose(attenuation, rngs["detector"], layout.pixel), rngs["export"])
    display = np.rot90(display, plan.quarter_turns)
    if plan.mirrored:
        display = display[:, ::-1]
    display = np.ascontiguousarray(display)

    def film_point(point: tuple[float, float]) -> tuple[float, float]:
        pixel_point = (point[0] / layout.pixel + layout.width / 2, layout.height / 2 - point[1] / layout.pixel)
        return _stored(pixel_point, plan, layout.width, layout.height)

    ends = [(film_point(p.platform), film_point(p.apex)) for p in layout.implants]
    spacing = layout.pixel
    scales = [1.0] * len(ends)
    if plan.photographed:
        main_px = math.dist(*ends[0])
        pixels, to_photo = _photograph(display, rngs["photo"], film_px, main_px)
        photo_ends = []
        for number, (platform, apex) in enumerate(ends):
            middle = ((platform[0] + apex[0]) / 2, (platform[1] + apex[1]) / 2)
            scales[number] = _local_scale(to_photo, middle)
            photo_ends.append((_apply(to_photo, platform), _apply(to_photo, apex)))
        ends = photo_ends
        spacing = layout.pixel / scales[0]
        buffer = io.BytesIO()
        Image.fromarray(pixels, mode="RGB").save(buffer, format="JPEG", quality=plan.jpeg_quality)
        data = buffer.getvalue()
    else:
        data = _encode(display, plan)

    truths = tuple(
        ImplantTruth(platform_xy=platform, apex_xy=apex,
                     diameter_px=placed.design.diameter_mm / layout.pixel * scale, design=placed.design)
        for (platform, apex), placed, scale in zip(ends, layout.implants, scales, strict=True))
    tags = {f"restoration:{plan.restoration}"}
    tags |= {tag for tag, on in (("upper-jaw", plan.upper), ("two-implants", plan.neighbours > 0),
                                 ("photographed", plan.photographed), ("rotated-180", plan.quarter_turns == 2),
                                 ("mirrored", plan.mirrored), ("16-bit", plan.bits == 16),
                                 ("jpeg", plan.jpeg_quality > 0)) if on}
    return data, FilmTruth(truths, spacing, frozenset(tags))


def _local_scale(matrix: npt.NDArray[np.float64], point: tuple[float, float]) -> float:
    """How many photo pixels one film pixel spans near `point` (square root of the Jacobian's determinant)."""
    step = 0.5
    origin = _apply(matrix, point)
    right = _apply(matrix, (point[0] + step, point[1]))
    down = _apply(matrix, (point[0], point[1] + step))
    det = (right[0] - origin[0]) * (down[1] - origin[1]) - (right[1] - origin[1]) * (down[0] - origin[0])
    return math.sqrt(abs(det)) / step
