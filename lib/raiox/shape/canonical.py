"""Find the implants on a film and straighten each one: platform up, axis vertical, scaled to one diameter.

No learning: metal is segmented at a few thresholds, each elongated component is straightened on its
principal axis, the threaded stretch is found from the edges' roughness, and the platform end is the one
with the smooth collar, the attached abutment or crown, the connection's cavity and the wider end. The
canonical crop is `CROP_WIDTH` × `CROP_HEIGHT` pixels with the implant's outer diameter `CROP_DIAMETER`
pixels wide and its platform at row `PLATFORM_ROW`, whatever the film's resolution or the implant's size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image
from scipy import ndimage

CROP_WIDTH = 64
CROP_HEIGHT = 256
CROP_DIAMETER = 36.0  # the implant's outer diameter in the crop, pixels
PLATFORM_ROW = 24  # the platform's row in the crop: what sits on it stays in view above
SEGMENT_SIDE = 512  # films are segmented at most this many pixels a side
# How implants are found and cropped: part of every model id, so that a catalog cropped another way is re-embedded.
FINDER_VERSION = 5
_DEBUG = False
_THREADED = 0.15  # periodicity above which a row counts as threaded
_THRESHOLDS = (0.85, 0.72, 0.6)  # metal masks between the film's median (0) and its brightest (1)
# A finding is kept when it scores at least this share of the best one: a neighbour half out of the film or under a
# bright crown scores far below a whole implant, and missing the implant asked about costs more than one extra panel.
_KEPT_SHARE = 0.15
# Implants on one film share its magnification, and none is under a third as wide as another (3 to 7 mm, measured
# within a fifth): anything narrower than that beside the best finding is a filling, a post or a speck.
_NARROWEST_SHARE = 0.3
# Crowns touching, or a bridge over two implants, make one component of several implants and their restorations, too
# large or too wide to be an implant and joined along no one axis: one at least this many times the smallest kept is
# also looked at in pieces, the narrow necks between them eroded away (a radius of `_NECK_SHARE` of its width).
_SPLIT_AREA = 8
_NECK_SHARE = 0.08


@dataclass(frozen=True)
class Finding:
    """One implant on a film: its canonical crop and where it lies on the film (pixels of the decoded film)."""

    crop: np.ndarray  # uint8 (CROP_HEIGHT, CROP_WIDTH), platform up
    platform_xy: tuple[float, float]
    apex_xy: tuple[float, float]
    diameter_px: float
    found: bool  # False: no implant stood out, and the crop is the whole film squeezed in (a fallback)
    score: float  # how implant-like: threads, elongation, size
    orientation_margin: float  # how clearly the platform end was told from the apex end (0: a guess)

    @property
    def length_px(self) -> float:
        return math.dist(self.platform_xy, self.apex_xy)

    @property
    def box(self) -> list[tuple[float, float]]:
        """The crop's four corners on the film (top-left, top-right, bottom-right, bottom-left)."""
        frame = _Frame(self.platform_xy, self.apex_xy, self.diameter_px)
        return [frame.film_point(u, v) for u, v in ((0, 0), (CROP_WIDTH, 0), (CROP_WIDTH, CROP_HEIGHT),
                                                     (0, CROP_HEIGHT))]


@dataclass(frozen=True)
class _Frame:
    """The crop's coordinates (u right, v down) on the film: the platform at (CROP_WIDTH / 2, PLATFORM_ROW),
    the axis pointing down the crop, CROP_DIAMETER crop pixels per diameter."""

    platform: tuple[float, float]
    apex: tuple[float, float]
    diameter: float

    def film_point(self, u: float, v: float) -> tuple[float, float]:
        (px, py), (ax, ay) = self.platform, self.apex
        length = max(math.hypot(ax - px, ay - py), 1e-6)
        down = ((ax - px) / length, (ay - py) / length)
        right = (-down[1], down[0])
        scale = self.diameter / CROP_DIAMETER
        du, dv = (u - CROP_WIDTH / 2) * scale, (v - PLATFORM_ROW) * scale
        return px + du * right[0] + dv * down[0], py + du * right[1] + dv * down[1]


def film_grey(film: Image.Image | np.ndarray) -> np.ndarray:
    """A film's grey levels as float32 in 0…1, what finding and cropping read (an array is taken as that already:
    a caller that crops one film several times converts it once)."""
    if isinstance(film, np.ndarray):
        return film
    return np.asarray(film.convert("L"), dtype=np.float32) / 255.0


def _sample(grey: np.ndarray, frame: _Frame, width: int, height: int) -> np.ndarray:
    """The film resampled into frame coordinates (width × height), anti-aliased when it shrinks."""
    scale = frame.diameter / CROP_DIAMETER
    source = grey
    factor = 1
    if scale > 1.6:  # shrink the film first (a box filter), so that sampling does not alias the threads
        factor = int(scale)
        x0, y0 = frame.film_point(0, 0)
        corners = [frame.film_point(u, v) for u, v in ((0, 0), (width, 0), (width, height), (0, height))]
        xs, ys = [c[0] for c in corners] + [x0], [c[1] for c in corners] + [y0]
        left, top = max(0, int(min(xs)) - factor), max(0, int(min(ys)) - factor)
        right, bottom = min(grey.shape[1], int(max(xs)) + factor + 1), min(grey.shape[0], int(max(ys)) + factor + 1)
        if right - left < factor or bottom - top < factor:
            return np.zeros((height, width), dtype=np.float32)
        window = Image.fromarray(grey[top:bottom, left:right], mode="F").reduce(factor)
        source = np.asarray(window, dtype=np.float32)
        offset = (left, top)
    else:
        offset = (0, 0)
    (px, py), (ax, ay) = frame.platform, frame.apex
    length = max(math.hypot(ax - px, ay - py), 1e-6)
    down = ((ax - px) / length, (ay - py) / length)
    right = (-down[1], down[0])
    # Crop pixel (v, u) lies on the film at platform + (u + ½ - width/2)·scale·right + (v + ½ - PLATFORM_ROW)·scale
    # ·down: one affine map from crop (row, column) to source (row, column).
    step = scale / factor
    matrix = np.array([[down[1] * step, right[1] * step], [down[0] * step, right[0] * step]])
    u0, v0 = 0.5 - width / 2, 0.5 - PLATFORM_ROW
    half = 0.5 * (factor > 1)
    origin = np.array([(py - offset[1]) / factor + (u0 * right[1] + v0 * down[1]) * step - half,
                       (px - offset[0]) / factor + (u0 * right[0] + v0 * down[0]) * step - half])
    return ndimage.affine_transform(source, matrix, origin, output_shape=(height, width), order=1, mode="constant",
                                    cval=0.0).astype(np.float32)


def _normalised(crop: np.ndarray) -> np.ndarray:
    """Contrast set by the crop itself: the 2nd percentile black, the metal's 99.5th white."""
    low, high = np.percentile(crop, [2, 99.5])
    return (np.clip((crop - low) / max(high - low, 1e-3), 0, 1) * 255).astype(np.uint8)


@dataclass
class _Candidate:
    centre: tuple[float, float]  # film pixels
    axis: tuple[float, float]  # unit vector along the component's long side
    extent: tuple[float, float]  # along the axis from the centre: (min, max), film pixels
    width: float  # film pixels across
    level: float  # the metal threshold that found it (0…1 on the film's normalised grey)


def _candidates(grey: np.ndarray) -> list[_Candidate]:
    """Bright, compact, reasonably large components of the metal masks, each with its principal axis."""
    shrink = max(1, math.ceil(max(grey.shape) / SEGMENT_SIDE))
    small = np.asarray(Image.fromarray(grey, mode="F").reduce(shrink), dtype=np.float32) if shrink > 1 else grey
    small = ndimage.gaussian_filter(small, 1.0)
    low, high = (float(v) for v in np.percentile(small, [50, 99.8]))
    if high - low < 0.12:  # nothing clearly brighter than bone
        return []
    found: list[_Candidate] = []
    min_area = max(30.0, small.size * 0.0015)
    kept = np.zeros(small.shape, dtype=np.int32)  # pixels of components kept at a higher threshold (their area)
    for fraction in _THRESHOLDS:
        level = low + fraction * (high - low)
        mask = _opened(small >= level)
        labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
        if count == 0:
            continue
        areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        boxes = ndimage.find_objects(labels)
        for number in np.flatnonzero(areas >= min_area) + 1:
            box = boxes[number - 1]
            assert box is not None  # every label up to `count` has pixels
            inside = labels[box] == number  # the component within its bounding box
            kept_here = kept[box]  # a view: kept's pixels in that box
            holds = kept_here[inside]
            # At a lower threshold an object may merge with bone, teeth or its neighbour: a component much larger
            # than one already kept inside it is that merge, not another implant. A small fragment kept above (a
            # highlight, a part cut off by a seam) vetoes nothing: the implant around it shows at a lower level.
            largest = float(holds.max()) if holds.size else 0.0
            if largest > 0 and len(holds) > 2.5 * largest and largest >= 4 * min_area:
                continue
            rows, cols = np.nonzero(inside)
            whole, parts = _parts(rows + box[0].start, cols + box[1].start, shrink, fraction, small.size,
                                  min(grey.shape))
            if whole is None:
                continue
            if all(part is not whole for part in parts) and len(rows) >= _SPLIT_AREA * min_area:
                for piece in _pieces(inside, round(_NECK_SHARE * whole.width / shrink)):
                    piece_rows, piece_cols = np.nonzero(piece)
                    parts += _parts(piece_rows + box[0].start, piece_cols + box[1].start, shrink, fraction,
                                    small.size, min(grey.shape))[1]
            for part in parts:
                duplicate = any(math.dist(part.centre, c.centre) < 0.5 * c.width
                                and abs(np.dot(part.axis, c.axis)) > 0.95 for c in found)
                if not duplicate:
                    found.append(part)
                    kept_here[inside] = np.maximum(kept_here[inside], len(rows))
    return found


def _parts(rows: np.ndarray, cols: np.ndarray, shrink: int, fraction: float, size: int,
           side: int) -> tuple[_Candidate | None, list[_Candidate]]:
    """A component (its mask pixels' rows and columns) as a whole, and the candidates it yields: itself unless too
    large or too wide to be an implant, and its narrow stretch."""
    ys, xs = (rows + 0.5) * shrink, (cols + 0.5) * shrink
    whole = _outline(xs, ys, shrink, fraction)
    if whole is None:
        return None, []
    parts = []
    if len(rows) <= 0.2 * size and whole.width <= 0.4 * side:
        parts.append(whole)  # else the film on a photographed screen, a glare, an exposed border, a merge
    # An implant under a crown as bright as itself is one component with the crown: its narrow stretch is
    # looked at on its own too.
    narrow = _narrow_stretch(xs, ys, whole, shrink)
    if narrow is not None:
        part = _outline(*narrow, shrink, fraction)
        if part is not None and part.width <= 0.4 * side:
            parts.append(part)
    return whole, parts


def _pieces(inside: np.ndarray, radius: int) -> list[np.ndarray]:
    """The pieces of a component joined by necks narrower than 2 × `radius`, each grown back within the component;
    none when eroding by `radius` leaves it in one piece."""
    radius = max(2, radius)
    labels, count = ndimage.label(ndimage.binary_erosion(inside, iterations=radius), structure=np.ones((3, 3)))
    if count < 2:
        return []
    cores = [labels == n for n in range(1, count + 1)]
    return [ndimage.binary_dilation(core, iterations=radius, mask=inside) for core in cores
            if np.count_nonzero(core) >= 20]  # not a crumb the erosion left


def _opened(mask: np.ndarray) -> np.ndarray:
    """`ndimage.binary_opening(mask)` (a 3×3 cross, nothing outside the mask) in a few shifted ANDs and ORs."""
    eroded = np.zeros_like(mask)
    eroded[1:-1, 1:-1] = (mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:])
    opened = eroded.copy()
    opened[1:] |= eroded[:-1]
    opened[:-1] |= eroded[1:]
    opened[:, 1:] |= eroded[:, :-1]
    opened[:, :-1] |= eroded[:, 1:]
    return opened


def _outline(xs: np.ndarray, ys: np.ndarray, shrink: int, level: float) -> _Candidate | None:
    """A component's centre, principal axis, extent along it and width across (film pixels); None when too small."""
    cy, cx = float(ys.mean()), float(xs.mean())
    if len(xs) < 3:
        return None
    _, vectors = np.linalg.eigh(np.cov(np.stack([xs - cx, ys - cy])))
    axis = (float(vectors[0, 1]), float(vectors[1, 1]))  # the larger eigenvalue's vector
    along = (xs - cx) * axis[0] + (ys - cy) * axis[1]
    across = -(xs - cx) * axis[1] + (ys - cy) * axis[0]
    high, low = np.percentile(across, [97, 3])
    width = float(high - low) + shrink
    extent = (float(along.min()) - shrink, float(along.max()) + shrink)
    if extent[1] - extent[0] < 2.5 * shrink or width < 2 * shrink:
        return None
    return _Candidate((cx, cy), axis, extent, width, level)


def _narrow_stretch(xs: np.ndarray, ys: np.ndarray, whole: _Candidate,
                    shrink: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The pixels of a component's longest stretch along its axis that is much narrower than its widest part (an
    implant below its crown), when that stretch is elongated and not the whole component."""
    (cx, cy), (ax, ay) = whole.centre, whole.axis
    along = (xs - cx) * ax + (ys - cy) * ay
    across = -(xs - cx) * ay + (ys - cy) * ax
    bins = ((along - along.min()) / shrink).astype(int)
    count = int(bins.max()) + 1
    if count < 8:
        return None
    low, high = np.full(count, np.inf), np.full(count, -np.inf)
    np.minimum.at(low, bins, across)
    np.maximum.at(high, bins, across)
    widths = np.where(np.isfinite(low), high - low + shrink, 0.0)
    narrow = (widths > 0) & (widths < 0.65 * float(np.percentile(widths, 95)))
    start, end = _longest_run(narrow)
    stretch = end - start
    if stretch < 4 or stretch > 0.85 * count or stretch * shrink < 1.5 * float(np.median(widths[start:end])):
        return None
    keep = (bins >= start) & (bins < end)
    return xs[keep], ys[keep]


@dataclass
class _Profile:
    """A straightened band around a candidate: rows along its axis, the metal's edges and widths per row."""

    band: np.ndarray
    scale: float  # film pixels per band pixel
    left: np.ndarray
    right: np.ndarray
    metal: np.ndarray  # bool per row: the row crosses metal at the centre
    periodic: np.ndarray  # per row: how regularly the edges ripple (threads), 0…1
    film_median: float  # the whole film's median grey and its brightest (what metal is compared with)
    film_high: float


_BAND_WIDTH = 96  # band pixels across (the candidate's mask spans about half)


def _straighten(grey: np.ndarray, candidate: _Candidate, film_median: float, film_high: float) -> _Profile:
    scale = candidate.width / (_BAND_WIDTH * 0.5)
    length = candidate.extent[1] - candidate.extent[0]
    rows = max(8, int(length / scale * 1.2) + 8)
    cx, cy = candidate.centre
    ax, ay = candidate.axis
    start = candidate.extent[0] - 0.1 * length - 4 * scale
    top = (cx + ax * start, cy + ay * start)
    bottom = (cx + ax * (start + rows * scale), cy + ay * (start + rows * scale))
    frame = _Frame(top, bottom, scale * CROP_DIAMETER)  # _sample's scale: `scale` film pixels per band pixel
    band = _sample(grey, _shift(frame, rows_above=PLATFORM_ROW), _BAND_WIDTH, rows)
    smooth = ndimage.gaussian_filter1d(band, 0.7, axis=1)
    # The edge lies a third of the way from what surrounds the metal to the metal, measured in the band itself:
    # a threshold near the metal's brightest would shrink the outline, since a cylinder's projection thins at
    # its sides. What surrounds it is the brighter side: with air or soft tissue on one side and bone on the
    # other, a level between the two would take the bone for metal and measure the implant far too wide.
    quarter = _BAND_WIDTH // 4
    core = smooth[:, _BAND_WIDTH // 2 - 3:_BAND_WIDTH // 2 + 4]
    metal_level = float(np.percentile(core, 85))
    surround = max(float(np.median(smooth[:, :quarter // 2])), float(np.median(smooth[:, -quarter // 2:])))
    level = surround + 0.35 * (metal_level - surround)
    left, right = edges_around_axis(smooth, level)
    metal = ~np.isnan(left)
    diameter = float(np.nanpercentile(right - left, 70)) if metal.any() else _BAND_WIDTH / 2
    periodic = _periodicity([left, right], metal, max(diameter, 8.0))
    return _Profile(band, scale, left, right, metal, periodic, film_median, film_high)


def _shift(frame: _Frame, rows_above: int) -> _Frame:
    """The frame moved so that its first row (not PLATFORM_ROW) is at the frame's platform point."""
    (px, py), (ax, ay) = frame.platform, frame.apex
    length = max(math.hypot(ax - px, ay - py), 1e-6)
    step = frame.diameter / CROP_DIAMETER * rows_above
    dx, dy = (ax - px) / length * step, (ay - py) / length * step
    return _Frame((px + dx, py + dy), (ax + dx, ay + dy), frame.diameter)


def edges_around_axis(grey: np.ndarray, level: float, half_width: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the sub-pixel left and right edges of the run of pixels at or above `level` that covers the
    middle column (NaN for rows where the middle is below `level`)."""
    rows, width = grey.shape
    centre = width // 2
    inside = grey >= level
    crosses = inside[:, centre - half_width:centre + half_width + 1].any(axis=1)
    columns = np.arange(width)
    # The last outside pixel left of the centre and the first one right of it bound the run.
    outside_left = np.where(~inside[:, :centre], columns[None, :centre], -1).max(axis=1)
    outside_right = np.where(~inside[:, centre:], columns[None, centre:], width).min(axis=1)
    lo, hi = outside_left + 1, outside_right - 1
    row_index = np.arange(rows)

    def crossing(edge: np.ndarray, outside: np.ndarray) -> np.ndarray:
        valid = (outside >= 0) & (outside < width)
        a = grey[row_index, np.clip(edge, 0, width - 1)]
        b = grey[row_index, np.clip(outside, 0, width - 1)]
        t = np.clip(np.where(a != b, (a - level) / np.where(a != b, a - b, 1.0), 0.5), 0, 1)
        return np.where(valid, edge + np.sign(outside - edge) * t, edge).astype(np.float64)

    left = np.where(crosses, crossing(lo, outside_left), np.nan)
    right = np.where(crosses, crossing(hi, outside_right), np.nan)
    return left, right


def _periodicity(edges: list[np.ndarray], metal: np.ndarray, diameter: float) -> np.ndarray:
    """Per row, how periodic the edges' ripple is around it (0…1): threads repeat at a pitch of 0.08–0.45
    diameters, while noise does not repeat and a wall's step is a single jump (which a running median keeps,
    so it leaves no ripple)."""
    window = max(12, int(0.9 * diameter))
    lags = np.arange(max(3, int(0.07 * diameter)), max(5, int(0.5 * diameter)) + 1)
    scores = np.zeros(len(metal))
    for edge in edges:
        filled = _fill_nan(edge)
        ripple = filled - ndimage.median_filter(filled, size=max(5, int(0.5 * diameter)) | 1, mode="nearest")
        ripple = ripple - ndimage.uniform_filter1d(ripple, size=window, mode="nearest")
        # A floor of a ripple 1.5 % of the diameter deep: a smooth wall's noise is no thread
        energy = ndimage.uniform_filter1d(ripple * ripple, size=window, mode="nearest") + (0.015 * diameter) ** 2
        # Row k of `ahead` is the ripple lags[k] rows further on (zero past the end): every lag in one pass.
        ahead = sliding_window_view(np.concatenate([ripple, np.zeros(int(lags[-1]))]), len(ripple))[lags]
        products = ndimage.uniform_filter1d(ripple * ahead, size=window, axis=1, mode="nearest")
        scores += np.maximum(products.max(axis=0) / energy, 0.0)
    scores = scores / len(edges)
    scores[~metal] = 0.0
    return np.clip(scores, 0.0, 1.0)


def _fill_nan(values: np.ndarray) -> np.ndarray:
    good = ~np.isnan(values)
    if not good.any():
        return np.zeros_like(values)
    index = np.arange(len(values))
    return np.interp(index, index[good], values[good])


@dataclass
class _Implant:
    start: int  # band row of one end
    end: int  # band row of the other end (exclusive)
    diameter: float  # band pixels
    score: float
    platform_at_start: bool
    margin: float


def _longest_run(flags: np.ndarray) -> tuple[int, int]:
    best, best_start, start = 0, 0, None
    for i, flag in enumerate(np.append(flags, False)):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            if i - start > best:
                best, best_start = i - start, start
            start = None
    return best_start, best_start + best


def _measure(profile: _Profile) -> _Implant | None:
    """The implant's stretch of the band (its threads, the collar above them, the apex below), its diameter,
    and which end is the platform."""
    widths = profile.right - profile.left
    metal_rows = profile.metal & (widths > 3)
    if metal_rows.sum() < 6:
        return None
    a, b = _longest_run(metal_rows)
    diameter_guess = float(np.nanpercentile(widths[a:b], 70))
    if diameter_guess < 4:
        return None
    threaded = (profile.periodic > _THREADED) & metal_rows
    threaded = ndimage.binary_closing(threaded, iterations=max(1, int(diameter_guess * 0.1)))
    t0, t1 = _longest_run(threaded[a:b])
    t0, t1 = t0 + a, t1 + a
    threads = t1 - t0
    if threads >= 0.6 * diameter_guess:
        diameter = float(np.nanpercentile(widths[t0:t1], 80))
    else:  # no threads: a smooth implant, or not an implant (filling, crown): the metal run is the body
        t0, t1 = a, b
        diameter = diameter_guess
    # Whichever end carries smooth metal past the threads (collar, abutment, crown, external hex) is the platform;
    # the apex ends close to the last thread.
    beyond_start = _run_back(metal_rows, t0, diameter, widths)
    beyond_end = _run_on(metal_rows, t1, diameter, widths)
    collar = _cue(beyond_start - beyond_end, 0.25 * diameter)
    near_start = float(np.nanmedian(widths[t0:t0 + max(2, (t1 - t0) // 6)]))
    near_end = float(np.nanmedian(widths[max(t0, t1 - max(2, (t1 - t0) // 6)):t1]))
    wider = _cue(near_start - near_end, 0.08 * diameter)  # the apex end tapers or rounds
    cavity = _cue(_cavity(profile, t0, t1, diameter, at_start=True) - _cavity(profile, t0, t1, diameter,
                                                                              at_start=False), 0.04)
    vote = 1.2 * collar + 0.8 * wider + 0.8 * cavity
    if _DEBUG:
        print("cues", dict(t0=t0, t1=t1, a=a, b=b, d=round(diameter, 1), beyond=(beyond_start, beyond_end),
                           collar=round(collar, 2), wider=round(wider, 2), cavity=round(cavity, 2)))
    platform_at_start = vote >= 0
    if platform_at_start:
        start = t0 - _collar(widths, t0, -1, min(beyond_start, int(0.9 * diameter)), diameter)
        end = t1 + min(beyond_end, int(0.3 * diameter))
    else:
        start = t0 - min(beyond_start, int(0.3 * diameter))
        end = t1 + _collar(widths, t1 - 1, 1, min(beyond_end, int(0.9 * diameter)), diameter)
    length = end - start
    elongation = length / max(diameter, 1.0)
    thread_share = threads / max(length, 1)
    # Implants are threaded and the most radiopaque things on a film: teeth, crowns and fillings are smooth, and
    # enamel or ceramic is less bright than titanium.
    centre = _BAND_WIDTH // 2
    metal = float(np.median(profile.band[max(0, start):max(start + 1, end), centre - 3:centre + 4]))
    brightness = float(np.clip((metal - profile.film_median) / max(profile.film_high - profile.film_median, 1e-3),
                               0, 1)) ** 2
    # Threads weigh most, but a smooth stretch still counts: fine threads that barely reach the outline, or a
    # long smooth neck, scored a hundredth of a threaded neighbour and were dropped from the film.
    score = float(np.clip(elongation / 2.5, 0, 1.5) * (0.25 + thread_share) ** 2 * brightness
                  * math.sqrt(diameter * profile.scale))
    return _Implant(start, end, diameter, score, platform_at_start, abs(vote))


def _collar(widths: np.ndarray, row: int, direction: int, limit: int, diameter: float) -> int:
    """How many rows of smooth collar follow the last thread at `row` (towards `direction`), up to `limit`: the
    collar keeps one width, and whatever sits on the platform (abutment, cap, crown) starts with a step."""
    reference = None
    count = 0
    while count < limit:
        r = row + direction * (count + 1)
        if r < 0 or r >= len(widths) or np.isnan(widths[r]):
            break
        if count >= 2:
            reference = reference if reference is not None else float(np.median(
                widths[[row + direction * k for k in (1, 2, 3)]]))
            if abs(widths[r] - reference) > 0.07 * diameter:
                break
        count += 1
    return count


def _cue(difference: float, unit: float) -> float:
    return float(np.tanh(difference / max(unit, 1e-6)))


def _run_back(metal: np.ndarray, row: int, diameter: float, widths: np.ndarray) -> int:
    count = 0
    while row - count - 1 >= 0 and metal[row - count - 1] and widths[row - count - 1] < 1.3 * diameter:
        count += 1
    return count


def _run_on(metal: np.ndarray, row: int, diameter: float, widths: np.ndarray) -> int:
    count = 0
    while row + count < len(metal) and metal[row + count] and widths[row + count] < 1.3 * diameter:
        count += 1
    return count


def _cavity(profile: _Profile, t0: int, t1: int, diameter: float, *, at_start: bool) -> float:
    """How much darker the axis is than the walls near one end (an internal connection's hollow)."""
    span = max(3, int(0.8 * diameter))
    rows = slice(t0, min(t1, t0 + span)) if at_start else slice(max(t0, t1 - span), t1)
    band = profile.band[rows]
    if band.size == 0:
        return 0.0
    centre = _BAND_WIDTH // 2
    quarter = max(1, int(diameter * 0.25))
    axis = float(band[:, centre - 1:centre + 2].mean())
    walls = float(np.concatenate([band[:, centre - quarter - 1:centre - quarter + 1],
                                  band[:, centre + quarter - 1:centre + quarter + 1]], axis=1).mean())
    return walls - axis


def find_implants(image: Image.Image | np.ndarray, *, limit: int = 4) -> list[Finding]:
    """The implants on a film, whole ones before those the film's edge cuts, the most implant-like and central first
    (at most `limit`); one fallback finding (found=False, the whole film) when nothing implant-like stands out."""
    grey = film_grey(image)
    located: list[_Located] = []
    sample = grey[::4, ::4]
    film_median, film_high = (float(v) for v in np.percentile(sample, [50, 99.8]))
    for candidate in _candidates(grey):
        profile = _straighten(grey, candidate, film_median, film_high)
        implant = _measure(profile)
        if implant is None or implant.score <= 0:
            continue
        located.append(_locate(candidate, profile, implant))
    distinct = _distinct(sorted(located, key=lambda f: -f.score))
    kept = [f for f in distinct if f.score >= _KEPT_SHARE * distinct[0].score
            and f.diameter_px >= _NARROWEST_SHARE * distinct[0].diameter_px] if distinct else []
    # A film is taken centred on the implant asked about, whole: one the film's edge cuts is a neighbour and comes
    # after every whole one, and the nearer the middle, the more a finding counts.
    implants = sorted(kept, key=lambda f: (_cut_by_edge(f, grey.shape), -f.score * _centrality(f, grey.shape)))[:limit]
    # Only the implants kept are cropped (most candidates are not).
    return [Finding(_crop(grey, f.platform_xy, f.apex_xy, f.diameter_px), f.platform_xy, f.apex_xy, f.diameter_px,
                    True, f.score, f.margin) for f in implants] or [whole_film(grey)]


@dataclass(frozen=True)
class _Located:
    """An implant found on the film, before it is cropped."""

    platform_xy: tuple[float, float]
    apex_xy: tuple[float, float]
    diameter_px: float
    score: float
    margin: float


def _locate(candidate: _Candidate, profile: _Profile, implant: _Implant) -> _Located:
    cx, cy = candidate.centre
    ax, ay = candidate.axis
    length = candidate.extent[1] - candidate.extent[0]
    start = candidate.extent[0] - 0.1 * length - 4 * profile.scale  # band row 0, as _straighten placed it
    # The centre line is the implant's own (a crown in the same component may sit off its axis).
    middle = ((profile.left + profile.right) / 2)[max(0, implant.start):max(implant.start + 1, implant.end)]
    if np.isnan(middle).all():
        middle = (profile.left + profile.right) / 2
    centre_offset = (np.nanmedian(middle) - _BAND_WIDTH / 2) * profile.scale

    def film(row: float) -> tuple[float, float]:
        along = start + row * profile.scale
        return cx + ax * along - ay * centre_offset, cy + ay * along + ax * centre_offset

    top, bottom = film(implant.start), film(implant.end)
    platform, apex = (top, bottom) if implant.platform_at_start else (bottom, top)
    return _Located(platform, apex, implant.diameter * profile.scale, implant.score, implant.margin)


def _centrality(finding: _Located, shape: tuple[int, ...]) -> float:
    """1 at the film's middle, 0.1 halfway to a corner, 0.004 at a corner: a neighbour off to the side must look
    far more implant-like than the implant in the middle to come before it."""
    half_diagonal = math.hypot(shape[0], shape[1]) / 2
    x, y = _middle(finding)
    return (1 - 0.5 * min(1.0, math.hypot(x - shape[1] / 2, y - shape[0] / 2) / half_diagonal)) ** 8


def _cut_by_edge(finding: _Located, shape: tuple[int, ...]) -> bool:
    """Whether the implant's outline (platform to apex, its diameter wide) runs off the film."""
    (px, py), (ax, ay) = finding.platform_xy, finding.apex_xy
    length = max(math.hypot(ax - px, ay - py), 1e-6)
    half = finding.diameter_px / 2
    across = (-(ay - py) / length * half, (ax - px) / length * half)
    slack = 0.15 * finding.diameter_px
    return any(not (-slack <= x + sign * across[0] <= shape[1] + slack and -slack <= y + sign * across[1] <= shape[0]
                    + slack) for x, y in ((px, py), (ax, ay)) for sign in (-1, 1))


def _distinct(findings: list[_Located]) -> list[_Located]:
    """One finding per implant: a weaker one whose axis lies within a stronger one's body is the same implant, and
    so is a much thinner and shorter one within any other's body (a highlight or a fragment, however threaded)."""
    kept: list[_Located] = []
    for finding in findings:
        if not any(_inside(_middle(finding), other) for other in kept):
            kept.append(finding)
    return [f for f in kept if not any(_fragment_of(f, other) for other in kept if other is not f)]


def _middle(finding: _Located) -> tuple[float, float]:
    return (finding.platform_xy[0] + finding.apex_xy[0]) / 2, (finding.platform_xy[1] + finding.apex_xy[1]) / 2


def _fragment_of(finding: _Located, other: _Located) -> bool:
    return (2.5 * finding.diameter_px < other.diameter_px
            and math.dist(finding.platform_xy, finding.apex_xy) < math.dist(other.platform_xy, other.apex_xy)
            and _inside(_middle(finding), other))


def _inside(point: tuple[float, float], finding: _Located) -> bool:
    (px, py), (ax, ay) = finding.platform_xy, finding.apex_xy
    length = max(math.hypot(ax - px, ay - py), 1e-6)
    along = ((point[0] - px) * (ax - px) + (point[1] - py) * (ay - py)) / length
    across = abs(-(point[0] - px) * (ay - py) + (point[1] - py) * (ax - px)) / length
    return -0.2 * length <= along <= 1.2 * length and across <= 0.8 * finding.diameter_px


def whole_film(grey: np.ndarray) -> Finding:
    """The fallback when no implant stands out: the whole film squeezed into the crop, upright as stored."""
    height, width = grey.shape
    image = Image.fromarray((grey * 255).astype(np.uint8), mode="L").resize((CROP_WIDTH, CROP_HEIGHT),
                                                                             Image.Resampling.BILINEAR)
    centre_x = width / 2
    return Finding(np.asarray(image, dtype=np.uint8).copy(), (centre_x, 0.0), (centre_x, float(height)),
                   float(width), False, 0.0, 0.0)


def canonical_crop(image: Image.Image | np.ndarray, platform_xy: tuple[float, float], apex_xy: tuple[float, float],
                   diameter_px: float) -> np.ndarray:
    """The canonical crop of an implant whose axis and diameter are known (ground truth, a reviewer's mark)."""
    return _crop(film_grey(image), platform_xy, apex_xy, diameter_px)


def _crop(grey: np.ndarray, platform_xy: tuple[float, float], apex_xy: tuple[float, float],
          diameter_px: float) -> np.ndarray:
    return _normalised(_sample(grey, _Frame(platform_xy, apex_xy, diameter_px), CROP_WIDTH, CROP_HEIGHT))
