"""`raiox bench identify`: what embedding one film costs now: decoding, finding and straightening the implants,
measuring them, and the encoder, one film at a time and batched, on films from both generators."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from raiox.tools.bench.common import machine


def _ms(function: Callable[[], Any], count: int) -> float:
    started = time.perf_counter()
    function()
    return (time.perf_counter() - started) * 1000 / count


def _timed(identifier: Any, data: list[bytes]) -> dict[str, Any]:
    from raiox.adapters.imaging import load_radiograph
    from raiox.shape.canonical import film_grey, find_implants
    from raiox.shape.descriptor import describe

    count = len(data)
    identifier.identify(data[:4])  # warm-up: thread pools, first-call allocations
    started = time.perf_counter()
    films = [film_grey(load_radiograph(d, max_pixels=identifier.max_pixels, grey=True)) for d in data]
    decode = time.perf_counter()
    crops = [f.crop for film in films for f in find_implants(film)]
    canonical = time.perf_counter()
    for crop in crops:
        describe(crop)
    measured = time.perf_counter()
    identifier._run(np.stack(crops))
    encoded = time.perf_counter()
    one = _ms(lambda: [identifier.identify([d]) for d in data], count)
    batched = _ms(lambda: identifier.identify(data), count)

    def per_film(a: float, b: float) -> float:
        return round((b - a) * 1000 / count, 1)

    return {"pixels_per_film": round(float(np.mean([film.size for film in films]))),
            "implants_per_film": round(len(crops) / count, 2),
            "one_at_a_time_ms": round(one, 1), "batched_ms": round(batched, 1),
            "stages_ms": {"decode": per_film(started, decode), "find_and_straighten": per_film(decode, canonical),
                          "describe": per_film(canonical, measured), "encoder": per_film(measured, encoded)}}


def bench_identify(identifier: Any, *, films: int = 24, seed: int = 0) -> dict[str, Any]:
    """Milliseconds per film for the configured identifier, with the share of each stage."""
    from raiox.tools.implant_designs import SceneOptions, random_systems
    from raiox.tools.quality import render_function

    systems = random_systems(films, seed=910_000 + seed)
    report: dict[str, Any] = {"benchmark": "identify", "model_id": identifier.model_id, "device": identifier.device,
                              "films": films, "renderers": {}}
    for renderer in ("flat", "drr"):
        render = render_function(renderer)
        data = [render(system, 6_000_000 + n, SceneOptions())[0] for n, system in enumerate(systems)]
        report["renderers"][renderer] = _timed(identifier, data)
    report["machine"] = machine()
    return report
