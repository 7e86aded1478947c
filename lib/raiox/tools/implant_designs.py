"""Parametric implant systems for rendered films: what a system's shape is, the sizes it is sold in, the
twelve demo systems, and random fictional systems with continuous parameters (training and held-out sets).

Every film generator (`raiox.tools.render`, `raiox.tools.render_drr`) draws from an `ImplantDesign` at one
size; a system is the design without its size, so films of one system may show any of its sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

ThreadProfile = Literal["v", "square", "buttress", "reverse-buttress"]
Apex = Literal["flat", "round", "pointed"]
Connection = Literal["internal-hex", "conical", "external-hex", "tri-channel"]

THREAD_PROFILES: tuple[ThreadProfile, ...] = ("v", "square", "buttress", "reverse-buttress")
APEXES: tuple[Apex, ...] = ("flat", "round", "pointed")
CONNECTIONS: tuple[Connection, ...] = ("internal-hex", "conical", "external-hex", "tri-channel")


@dataclass(frozen=True)
class ImplantDesign:
    """One implant system's geometry at one size (millimetres).

    The body is a solid of revolution, platform at the top: a neck (`collar_mm` high, micro-threaded or
    smooth, its radius `collar_flare` wider than the thread crests), then macro-threads down to the apex.
    The core (thread root) radius is `diameter_mm / 2 - thread_depth_mm` down to `taper_start` of the
    length, then narrows linearly to `(1 - taper)` of that at the apex. Threads are helices of
    `thread_leads` starts: crests `thread_pitch_mm` apart along the axis, each lead advancing
    `pitch × leads` per turn. `apex_vent` is a hole across the apical part, `apex_grooves` cutting flutes
    (notches along the axis in the apical third). The connection is a cavity at the platform (internal hex,
    tri-channel, conical: a cone narrowing downwards) or a hex boss on top of it (external hex).
    """

    manufacturer: str
    system: str
    length_mm: float = 10.0
    diameter_mm: float = 4.0
    taper: float = 0.0
    thread_pitch_mm: float = 0.8
    thread_depth_mm: float = 0.35
    thread_profile: ThreadProfile = "v"
    collar_mm: float = 1.0
    microthreads: bool = False
    apex: Apex = "round"
    apex_vent: bool = False
    connection: Connection = "internal-hex"
    taper_start: float = 0.3
    thread_leads: int = 1
    microthread_pitch_mm: float = 0.25
    apex_grooves: bool = False
    collar_flare: float = 0.0
    # The sizes the system is sold in; () means only this design's own length or diameter.
    lengths_mm: tuple[float, ...] = ()
    diameters_mm: tuple[float, ...] = ()

    @property
    def implant_type(self) -> str:
        return "tapered" if self.taper > 0.15 else "parallel-walled"

    @property
    def sizes(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(lengths, diameters) the system is sold in."""
        return self.lengths_mm or (self.length_mm,), self.diameters_mm or (self.diameter_mm,)

    def at_size(self, length_mm: float, diameter_mm: float) -> ImplantDesign:
        """The same system at another size: pitch, depths, collar and the relative shape stay."""
        return replace(self, length_mm=float(length_mm), diameter_mm=float(diameter_mm))

    def only_at(self, length_mm: float, diameter_mm: float) -> ImplantDesign:
        """The system at one size and only that one (so a film generator cannot pick another)."""
        return replace(self.at_size(length_mm, diameter_mm), lengths_mm=(float(length_mm),),
                       diameters_mm=(float(diameter_mm),))

    def random_size(self, rng: np.random.Generator) -> ImplantDesign:
        """The system at one of its sizes, chosen at random (a film shows one implant of the line)."""
        lengths, diameters = self.sizes
        return self.at_size(float(rng.choice(lengths)), float(rng.choice(diameters)))


def demo_catalog() -> list[ImplantDesign]:
    """Twelve clearly fictional implant systems that differ the way real ones do."""
    return [
        ImplantDesign("Demo Orbit Dental", "Orbit Tapered TX", 11.5, 4.3, 0.45, 0.8, 0.4, "v", 0.8, False, "round"),
        ImplantDesign("Demo Orbit Dental", "Orbit Parallel PX", 10.0, 4.1, 0.05, 0.8, 0.35, "v", 1.5, False, "flat"),
        ImplantDesign("Demo Orbit Dental", "Orbit Narrow NX", 12.0, 3.3, 0.2, 0.6, 0.3, "v", 0.6, True, "round"),
        ImplantDesign("Demo Nordfjord Implant", "Fjord Conical C", 10.0, 4.0, 0.3, 1.2, 0.45, "buttress", 1.0,
                      False, "pointed", True, "conical"),
        ImplantDesign("Demo Nordfjord Implant", "Fjord Square S", 9.0, 4.8, 0.1, 1.0, 0.45, "square", 0.8,
                      False, "flat", False, "conical"),
        ImplantDesign("Demo Nordfjord Implant", "Fjord Short SH", 6.5, 5.0, 0.15, 1.0, 0.5, "square", 0.6,
                      False, "round", False, "internal-hex"),
        ImplantDesign("Demo Helix Systems", "Helix Classic EX", 10.0, 3.75, 0.0, 0.6, 0.3, "v", 0.6, False,
                      "flat", True, "external-hex"),
        ImplantDesign("Demo Helix Systems", "Helix Wide EW", 8.5, 5.5, 0.05, 0.6, 0.3, "v", 0.8, False,
                      "round", False, "external-hex"),
        ImplantDesign("Demo Helix Systems", "Helix Taper HT", 13.0, 4.0, 0.5, 0.9, 0.45, "buttress", 0.4, True,
                      "pointed", True, "conical"),
        ImplantDesign("Demo Ponte Medical", "Ponte Zygo Z", 15.0, 3.5, 0.1, 1.4, 0.35, "v", 3.0, False,
                      "round", False, "internal-hex"),
        ImplantDesign("Demo Ponte Medical", "Ponte Bone Level BL", 10.0, 4.1, 0.25, 0.8, 0.25, "v", 0.5, True,
                      "round", False, "conical"),
        ImplantDesign("Demo Ponte Medical", "Ponte Tissue Level TL", 10.0, 4.1, 0.0, 1.0, 0.3, "v", 2.5, False,
                      "round", False, "internal-hex"),
    ]


_LENGTH_LADDER = (6.0, 7.0, 8.0, 8.5, 10.0, 11.5, 13.0, 14.0, 16.0)
_DIAMETER_LADDER = (3.0, 3.3, 3.5, 3.75, 4.0, 4.3, 4.5, 4.8, 5.0, 5.5, 6.0)


def random_system(rng: np.random.Generator, *, manufacturer: str, system: str) -> ImplantDesign:
    """A fictional system with continuous shape parameters within the ranges of real lines
    (shared/RADIOGRAPHS.md), sold in 2–4 neighbouring diameters and 3–6 neighbouring lengths."""
    first_d = int(rng.integers(0, len(_DIAMETER_LADDER) - 1))
    diameters = _DIAMETER_LADDER[first_d:first_d + int(rng.integers(2, 5))]
    first_l = int(rng.integers(0, len(_LENGTH_LADDER) - 2))
    lengths = _LENGTH_LADDER[first_l:first_l + int(rng.integers(3, 7))]
    narrowest = min(diameters)
    tapered = rng.random() < 0.6
    leads = int(rng.choice([1, 1, 1, 1, 2, 2, 3]))
    pitch = float(rng.uniform(0.5, 1.3))
    design = ImplantDesign(
        manufacturer=manufacturer,
        system=system,
        length_mm=float(lengths[len(lengths) // 2]),
        diameter_mm=float(diameters[len(diameters) // 2]),
        taper=float(rng.uniform(0.12, 0.5)) if tapered else float(rng.uniform(0.0, 0.06)),
        thread_pitch_mm=pitch,
        thread_depth_mm=float(min(rng.uniform(0.15, 0.55), 0.16 * narrowest, 0.55 * pitch)),
        thread_profile=THREAD_PROFILES[int(rng.integers(0, len(THREAD_PROFILES)))],
        collar_mm=float(rng.uniform(0.2, 3.0) if rng.random() < 0.8 else rng.uniform(0.2, 0.8)),
        microthreads=bool(rng.random() < 0.3),
        apex=APEXES[int(rng.integers(0, len(APEXES)))],
        apex_vent=bool(rng.random() < 0.35),
        connection=CONNECTIONS[int(rng.integers(0, len(CONNECTIONS)))],
        taper_start=float(rng.uniform(0.0, 0.6)),
        thread_leads=leads,
        microthread_pitch_mm=float(rng.uniform(0.15, 0.3)),
        apex_grooves=bool(rng.random() < 0.3),
        collar_flare=float(rng.uniform(-0.2, 0.25)) if rng.random() < 0.5 else 0.0,
        lengths_mm=tuple(float(v) for v in lengths),
        diameters_mm=tuple(float(v) for v in diameters),
    )
    return design


def design_distance(a: ImplantDesign, b: ImplantDesign) -> float:
    """How differently two systems look, in units of 'one clearly visible difference': each categorical
    attribute that differs counts 1, each continuous one its difference over what a reviewer can tell apart.
    Sizes do not count: they say which part to order, not which system it is."""
    categorical = sum([
        a.thread_profile != b.thread_profile, a.microthreads != b.microthreads, a.apex != b.apex,
        a.apex_vent != b.apex_vent, a.connection != b.connection, a.apex_grooves != b.apex_grooves,
        a.thread_leads != b.thread_leads,
    ])
    continuous = (
        abs(a.taper - b.taper) / 0.15
        + abs(math.log(a.thread_pitch_mm / b.thread_pitch_mm)) / 0.2
        + abs(a.thread_depth_mm - b.thread_depth_mm) / 0.12
        + abs(a.collar_mm - b.collar_mm) / 0.6
        + abs(a.taper_start - b.taper_start) / 0.3
        + abs(a.collar_flare - b.collar_flare) / 0.2
    )
    return categorical + continuous


_MAKERS = ("Aurora Dental", "Kestrel Implants", "Lumen Bio", "Meridian Oral", "Quartz Medical", "Sable Systems",
           "Tidewater Dental", "Vireo Implant", "Basalt Medical", "Corvid Oral")


def random_systems(count: int, *, seed: int, min_distance: float = 0.0, prefix: str = "Sys") -> list[ImplantDesign]:
    """`count` random systems from `seed`; with `min_distance`, each differs from every earlier one by at least
    that much (`design_distance`), as real product lines do. Names carry the seed, so sets drawn from disjoint
    seeds never share a name."""
    rng = np.random.default_rng(seed)
    designs: list[ImplantDesign] = []
    tries = 0
    while len(designs) < count:
        tries += 1
        if tries > count * 200:
            raise ValueError(f"cannot draw {count} systems {min_distance} apart; lower min_distance")
        number = len(designs)
        candidate = random_system(rng, manufacturer=f"Demo {_MAKERS[number % len(_MAKERS)]}",
                                  system=f"{prefix} {seed}-{number:04d}")
        if all(design_distance(candidate, other) >= min_distance for other in designs):
            designs.append(candidate)
    return designs


Restoration = Literal["none", "cover-screw", "healing-cap", "abutment", "crown"]
RESTORATIONS: tuple[Restoration, ...] = ("none", "cover-screw", "healing-cap", "abutment", "crown")


@dataclass(frozen=True)
class SceneOptions:
    """What a film generator puts on a film besides the implant; None leaves the choice to the seed."""

    upper_jaw: bool | None = None  # platform down, apex up (as an upper-jaw periapical shows it)
    restoration: Restoration | None = None  # what sits on the implant
    neighbours: int | None = None  # other implants on the film (0–2), of random other systems
    photographed: bool | None = None  # a phone photo of the film on a screen: perspective, glare, moiré, colour
    quarter_turns: int | None = None  # the file stored rotated by 90° steps (0–3), besides the small tilt
    mirrored: bool | None = None  # the file stored mirrored
    bits: Literal[8, 16] | None = None  # 16: a 16-bit PNG (12-bit sensor range)
    jpeg_quality: int | None = None  # a JPEG at this quality instead of a PNG (0: PNG)


ANY_SCENE = SceneOptions()


@dataclass(frozen=True)
class ImplantTruth:
    """Where one implant lies on the film as stored (pixels, x right, y down)."""

    platform_xy: tuple[float, float]  # the centre of the platform (the connection's end)
    apex_xy: tuple[float, float]  # the tip of the apex
    diameter_px: float  # the outer (thread crest) diameter
    design: ImplantDesign  # the system at the size drawn


@dataclass(frozen=True)
class FilmTruth:
    """What a rendered film shows: the implant asked for first, then any neighbours; the slices it belongs to
    (`upper-jaw`, `restoration:<kind>`, `two-implants`, `photographed`, `rotated-180`, `mirrored`, `16-bit`,
    `jpeg`); millimetres per pixel."""

    implants: tuple[ImplantTruth, ...]
    pixel_spacing_mm: float
    tags: frozenset[str]
