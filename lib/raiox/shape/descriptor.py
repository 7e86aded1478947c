"""A shape descriptor measured on a canonical crop, free of size: thread pitch, depth and form per diameter,
the body's outer and core profile along its length, the collar and micro-threads, the apex, a vent, the
connection's cavity, and the centre line's brightness. With the film's pixel spacing, the same in millimetres.

No learning: edges are found per row, the threads' pitch is the edges' strongest repeat, their form is the
ripple folded over one pitch. The vector (`ShapeDescriptor.vector`) is standardised per feature so that a
cosine between two of them weighs every measurement alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from raiox.shape.canonical import CROP_DIAMETER, CROP_WIDTH, PLATFORM_ROW, edges_around_axis

_PROFILE_POINTS = (0.1, 0.3, 0.5, 0.7, 0.9)  # fractions of the length where widths are read
_CENTRE_POINTS = (0.05, 0.15, 0.25, 0.4, 0.6, 0.8)
_FOLD_BINS = 8


@dataclass(frozen=True)
class ShapeDescriptor:
    """What was measured; every length is in implant diameters unless it says mm."""

    length: float  # platform to apex
    pitch: float  # between thread crests (0 when no thread repeats)
    depth: float  # thread depth (crest to root, per side)
    thread_strength: float  # how regular the threads are (0…1)
    collar: float  # platform to the first thread
    microthreads: float  # how strongly the collar repeats at a fine pitch (0…1)
    outer: tuple[float, ...]  # outer width at _PROFILE_POINTS of the length
    core: tuple[float, ...]  # core (thread root) width at the same points
    thread_form: tuple[float, ...]  # the ripple over one pitch, folded and normalised (_FOLD_BINS values)
    apex_rounding: float  # how much the last tenth narrows (0 flat … 1 pointed)
    vent: float  # darkening of the axis in the apical quarter
    cavity: tuple[float, ...]  # darkening of the axis near the platform, at _CENTRE_POINTS
    boss: float  # metal above the platform narrower than it (an external hex), as a width
    diameter_px: float = 0.0  # on the film, for millimetres
    mm_per_px: float | None = None
    extras: dict[str, float] = field(default_factory=dict)

    def vector(self) -> np.ndarray:
        """The measurements as one vector, standardised (subtract a typical value, divide by its spread)."""
        raw = np.asarray([self.pitch, self.depth, self.thread_strength, self.collar, self.microthreads,
                          *self.outer, *self.core, *np.subtract(self.outer, self.core), *self.thread_form,
                          self.apex_rounding, self.vent, *self.cavity, self.boss], dtype=np.float32)
        return ((raw - _CENTRES) / _SPREADS * _WEIGHTS).astype(np.float32)

    def in_mm(self) -> dict[str, float] | None:
        """Lengths in millimetres when the film's pixel spacing is known."""
        if not self.mm_per_px:
            return None
        diameter_mm = self.diameter_px * self.mm_per_px
        return {"diameter_mm": round(diameter_mm, 2), "length_mm": round(self.length * diameter_mm, 2),
                "pitch_mm": round(self.pitch * diameter_mm, 2), "depth_mm": round(self.depth * diameter_mm, 2),
                "collar_mm": round(self.collar * diameter_mm, 2)}

    def summary(self) -> dict[str, Any]:
        """What a reviewer reads: the measurements with their units."""
        return {
            "length_per_diameter": round(self.length, 2),
            "pitch_per_diameter": round(self.pitch, 3),
            "depth_per_diameter": round(self.depth, 3),
            "threads": round(self.thread_strength, 2),
            "collar_per_diameter": round(self.collar, 2),
            "microthreads": round(self.microthreads, 2),
            "taper": round(1 - self.core[-2] / max(self.core[0], 1e-3), 2),
            "apex_rounding": round(self.apex_rounding, 2),
            "vent": round(self.vent, 2),
            "cavity": round(max(self.cavity[:3]), 2),
            "external_hex": round(self.boss, 2),
            **({"mm": self.in_mm()} if self.mm_per_px else {}),
        }


DESCRIPTOR_SIZE = 3 + 2 + 3 * len(_PROFILE_POINTS) + _FOLD_BINS + 2 + len(_CENTRE_POINTS) + 1
# Typical values and spreads per feature (from rendered crops of many random systems; `raiox.tools.shape_eval`
# prints them again), and weights: the thread features are what tells systems apart most reliably.
_CENTRES = np.asarray([0.2, 0.06, 0.4, 0.3, 0.2] + [1.0] * 5 + [0.8] * 5 + [0.2] * 5 + [0.0] * _FOLD_BINS
                      + [0.3, 0.05] + [0.05] * len(_CENTRE_POINTS) + [0.0], dtype=np.float32)
_SPREADS = np.asarray([0.08, 0.03, 0.25, 0.3, 0.25] + [0.12] * 5 + [0.15] * 5 + [0.08] * 5 + [0.35] * _FOLD_BINS
                      + [0.25, 0.08] + [0.08] * len(_CENTRE_POINTS) + [0.3], dtype=np.float32)
_WEIGHTS = np.asarray([1.5, 1.0, 0.6, 0.8, 0.6] + [0.6] * 5 + [0.6] * 5 + [0.5] * 5 + [0.35] * _FOLD_BINS
                      + [0.7, 0.6] + [0.35] * len(_CENTRE_POINTS) + [0.8], dtype=np.float32)


def _edges(crop: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Per row, the metal's left and right edge around the axis (NaN where the axis is not metal), and the level."""
    grey = ndimage.gaussian_filter(crop.astype(np.float32), (0.6, 0.8))
    centre = CROP_WIDTH // 2
    axis = grey[:, centre - 3:centre + 4]
    metal = float(np.percentile(axis[PLATFORM_ROW:], 85))
    surround = float(np.median(np.concatenate([grey[:, :6], grey[:, -6:]])))
    level = surround + 0.35 * (metal - surround)
    left, right = edges_around_axis(grey, level, half_width=3)
    return left, right, level


def _apex_row(left: np.ndarray, right: np.ndarray) -> int:
    """The last row of the metal run that starts at the platform."""
    row = PLATFORM_ROW
    while row + 1 < len(left) and not np.isnan(left[row + 1]) and right[row + 1] - left[row + 1] > 2:
        row += 1
    return row


def _period(signals: list[np.ndarray], low: int, high: int) -> tuple[float, float]:
    """The strongest repeat (between `low` and `high` rows) that the signals share, and its normalised
    autocorrelation. Each edge is autocorrelated on its own: the two sides of one helix are half a lead apart,
    so their sum would cancel."""
    totals = np.zeros(high - low + 1)
    used = 0
    for ripple in signals:
        if len(ripple) < 2 * high:
            continue
        ripple = ripple - ripple.mean()
        energy = float(np.dot(ripple, ripple))
        if energy < 1e-6:
            continue
        totals += [float(np.dot(ripple[:-lag], ripple[lag:])) / energy * len(ripple) / (len(ripple) - lag)
                   for lag in range(low, high + 1)]
        used += 1
    if not used:
        return 0.0, 0.0
    scores = totals / used
    # A repeat at the pitch repeats at twice it too: take the first peak that is nearly as strong as the best.
    peaks = [i for i in range(len(scores)) if (i == 0 or scores[i] >= scores[i - 1])
             and (i == len(scores) - 1 or scores[i] >= scores[i + 1])]
    strongest = float(scores.max())
    best = next((i for i in peaks if scores[i] >= 0.8 * strongest), int(np.argmax(scores)))
    lag = float(low + best)
    if 0 < best < len(scores) - 1:  # parabolic refinement between the neighbouring lags
        a, b, c = scores[best - 1], scores[best], scores[best + 1]
        denominator = a - 2 * b + c
        lag += 0.5 * (a - c) / denominator if denominator else 0.0
    return lag, max(0.0, float(scores[best]))


def describe(crop: np.ndarray, *, diameter_px: float = 0.0, mm_per_px: float | None = None) -> ShapeDescriptor:
    """Measure a canonical crop (platform up at PLATFORM_ROW, CROP_DIAMETER pixels across)."""
    left, right, _ = _edges(crop)
    apex = _apex_row(left, right)
    length_rows = max(apex - PLATFORM_ROW, 4)
    body = slice(PLATFORM_ROW, apex + 1)
    l_edge, r_edge = _fill(left[body]), _fill(right[body])
    width = r_edge - l_edge
    window = max(5, int(0.4 * CROP_DIAMETER)) | 1
    ripples = [edge - ndimage.median_filter(edge, size=window, mode="nearest") for edge in (-l_edge, r_edge)]
    threaded_part = slice(int(0.15 * length_rows), int(0.85 * length_rows))
    pitch_rows, strength = _period([r[threaded_part] for r in ripples], 3, max(6, int(0.5 * CROP_DIAMETER)))
    outer_env = ndimage.maximum_filter1d(width, size=max(3, int(pitch_rows) or 5), mode="nearest")
    core_env = ndimage.minimum_filter1d(width, size=max(3, int(pitch_rows) or 5), mode="nearest")
    depth = float(np.median((outer_env - core_env)[threaded_part])) / 2 / CROP_DIAMETER if len(width) > 4 else 0.0
    outer = tuple(float(outer_env[min(len(width) - 1, int(p * length_rows))]) / CROP_DIAMETER for p in _PROFILE_POINTS)
    core = tuple(float(core_env[min(len(width) - 1, int(p * length_rows))]) / CROP_DIAMETER for p in _PROFILE_POINTS)
    form = _fold(ripples[1][threaded_part], pitch_rows)
    collar, micro = _collar(ripples, width, pitch_rows, strength)
    tenth = max(2, length_rows // 10)
    before = float(np.median(width[max(0, len(width) - 3 * tenth):len(width) - tenth])) if len(width) > 3 * tenth else 1
    last = float(np.median(width[len(width) - tenth // 2 - 1:])) if len(width) else 0.0
    apex_rounding = float(np.clip(1 - last / max(before, 1e-3), 0, 1))
    grey = crop.astype(np.float32)
    centre = CROP_WIDTH // 2
    quarter = int(CROP_DIAMETER * 0.25)

    def darkening(row_from: int, row_to: int) -> float:
        rows = slice(max(PLATFORM_ROW, row_from), max(PLATFORM_ROW + 1, row_to))
        axis = grey[rows, centre - 1:centre + 2].mean() if grey[rows].size else 0.0
        walls = np.concatenate([grey[rows, centre - quarter - 1:centre - quarter + 1],
                                grey[rows, centre + quarter - 1:centre + quarter + 1]], axis=1)
        return float((walls.mean() - axis) / 255.0) if walls.size else 0.0

    span = max(2, int(0.06 * length_rows))
    cavity = tuple(darkening(PLATFORM_ROW + int(p * length_rows) - span, PLATFORM_ROW + int(p * length_rows) + span)
                   for p in _CENTRE_POINTS)
    vent = darkening(PLATFORM_ROW + int(0.72 * length_rows), PLATFORM_ROW + int(0.95 * length_rows))
    above = slice(PLATFORM_ROW - 10, PLATFORM_ROW - 2)
    widths_above = (right[above] - left[above])
    widths_above = widths_above[~np.isnan(widths_above)]
    boss = 0.0
    if len(widths_above) >= 3:
        ratio = float(np.median(widths_above)) / CROP_DIAMETER
        boss = float(np.clip((1.0 - ratio) * 2, 0, 1)) if 0.3 < ratio < 0.85 else 0.0
    return ShapeDescriptor(
        length=length_rows / CROP_DIAMETER, pitch=pitch_rows / CROP_DIAMETER if strength > 0.15 else 0.0,
        depth=depth, thread_strength=float(strength), collar=collar, microthreads=micro, outer=outer, core=core,
        thread_form=form, apex_rounding=apex_rounding, vent=vent, cavity=cavity, boss=boss,
        diameter_px=diameter_px, mm_per_px=mm_per_px)


def _fill(values: np.ndarray) -> np.ndarray:
    good = ~np.isnan(values)
    if not good.any():
        return np.zeros(len(values))
    index = np.arange(len(values))
    return np.interp(index, index[good], values[good])


def _fold(ripple: np.ndarray, pitch: float) -> tuple[float, ...]:
    """The ripple averaged over one pitch, started at its crest and scaled to unit spread: the thread's form."""
    if pitch < 3 or len(ripple) < 2 * pitch:
        return (0.0,) * _FOLD_BINS
    phase = (np.arange(len(ripple)) % pitch) / pitch
    bins = np.minimum((phase * _FOLD_BINS).astype(int), _FOLD_BINS - 1)
    sums = np.bincount(bins, weights=ripple, minlength=_FOLD_BINS)
    counts = np.maximum(np.bincount(bins, minlength=_FOLD_BINS), 1)
    profile = sums / counts
    profile = np.roll(profile, -int(np.argmax(profile)))
    profile = profile - profile.mean()
    spread = float(np.abs(profile).max()) or 1.0
    return tuple(float(v) for v in profile / spread)


def _collar(ripples: list[np.ndarray], width: np.ndarray, pitch: float, strength: float) -> tuple[float, float]:
    """The smooth (or micro-threaded) neck's height in diameters, and how strongly it repeats at a fine pitch."""
    if pitch < 3 or strength < 0.15:
        return 0.0, 0.0
    ripple = (ripples[0] + ripples[1]) / 2
    amplitude = ndimage.maximum_filter1d(np.abs(ripple), size=int(pitch) + 1, mode="nearest")
    typical = float(np.median(amplitude[len(amplitude) // 3: 2 * len(amplitude) // 3])) or 1e-3
    threaded = amplitude > 0.5 * typical
    first = int(np.argmax(threaded)) if threaded.any() else 0
    neck = ripple[:max(first, 1)]
    micro = 0.0
    if first > 8:
        _, micro = _period([neck], 2, max(3, int(pitch * 0.6)))
    return first / CROP_DIAMETER, float(micro)


def descriptor_distance(a: ShapeDescriptor, b: ShapeDescriptor) -> float:
    """Cosine distance of two descriptors' vectors (what matching compares)."""
    va, vb = a.vector(), b.vector()
    return 1.0 - float(np.dot(va, vb) / max(1e-9, math.sqrt(float(np.dot(va, va)) * float(np.dot(vb, vb)))))
