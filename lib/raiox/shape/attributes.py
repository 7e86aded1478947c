"""The shape attributes a reviewer reads on a film (thread form, pitch and depth per diameter, body taper,
collar, apex, vent, flutes, connection): their names and values, and as the shape encoder's training targets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

THREAD_PROFILES = ("v", "square", "buttress", "reverse-buttress")
APEXES = ("flat", "round", "pointed")
CONNECTIONS = ("internal-hex", "conical", "external-hex", "tri-channel")
LEADS = (1, 2, 3)

# Continuous attributes, free of size: each is a ratio to the implant's outer diameter or its length.
REGRESSIONS = ("taper", "taper_start", "pitch_per_diameter", "depth_per_diameter", "collar_per_diameter",
               "flare_per_diameter")
BINARIES = ("microthreads", "apex_vent", "apex_grooves")
CLASSES: dict[str, tuple[Any, ...]] = {"thread_profile": THREAD_PROFILES, "apex": APEXES,
                                       "connection": CONNECTIONS, "thread_leads": LEADS}
TARGET_SIZE = len(REGRESSIONS) + len(BINARIES) + len(CLASSES)
HEAD_SIZE = len(REGRESSIONS) + len(BINARIES) + sum(len(v) for v in CLASSES.values())


class _Design(Protocol):
    """What the targets read of a design; read-only, so a frozen dataclass (ImplantDesign) fits."""

    @property
    def diameter_mm(self) -> float: ...
    @property
    def taper(self) -> float: ...
    @property
    def taper_start(self) -> float: ...
    @property
    def thread_pitch_mm(self) -> float: ...
    @property
    def thread_depth_mm(self) -> float: ...
    @property
    def collar_mm(self) -> float: ...
    @property
    def collar_flare(self) -> float: ...
    @property
    def microthreads(self) -> bool: ...
    @property
    def apex_vent(self) -> bool: ...
    @property
    def apex_grooves(self) -> bool: ...
    @property
    def thread_profile(self) -> str: ...
    @property
    def apex(self) -> str: ...
    @property
    def connection(self) -> str: ...
    @property
    def thread_leads(self) -> int: ...


def attribute_targets(design: _Design) -> np.ndarray:
    """A design's attributes as one float vector: regressions, binaries, then class indices."""
    d = design.diameter_mm
    regressions = [design.taper, design.taper_start, design.thread_pitch_mm / d, design.thread_depth_mm / d,
                   design.collar_mm / d, design.collar_flare / d]
    binaries = [float(design.microthreads), float(design.apex_vent), float(design.apex_grooves)]
    classes = [float(CLASSES["thread_profile"].index(design.thread_profile)), float(APEXES.index(design.apex)),
               float(CONNECTIONS.index(design.connection)), float(LEADS.index(design.thread_leads))]
    return np.asarray(regressions + binaries + classes, dtype=np.float32)


@dataclass(frozen=True)
class ReadAttributes:
    """What the shape encoder reads off one implant's crop, with its confidence per categorical answer."""

    values: dict[str, float | str | bool]
    confidence: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {"values": self.values, "confidence": {k: round(v, 3) for k, v in self.confidence.items()}}


def read_attributes(head: np.ndarray) -> ReadAttributes:
    """The attribute head's raw output (HEAD_SIZE,) as named values."""
    values: dict[str, float | str | bool] = {}
    confidence: dict[str, float] = {}
    position = 0
    for name in REGRESSIONS:
        values[name] = round(float(head[position]), 3)
        position += 1
    for name in BINARIES:
        probability = float(1 / (1 + np.exp(-head[position])))
        values[name] = probability >= 0.5
        confidence[name] = max(probability, 1 - probability)
        position += 1
    for name, options in CLASSES.items():
        logits = head[position:position + len(options)]
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        best = int(np.argmax(probabilities))
        values[name] = options[best]
        confidence[name] = float(probabilities[best])
        position += len(options)
    return ReadAttributes(values, confidence)
