"""Training films for the shape encoder, rendered once into a cache: each film's implant as the canonicaliser
crops it (turned platform-up with the ground truth when it guessed the ends wrong), the same crop upside
down (for the orientation head), and the shape attributes of its system at the size drawn.

A cache is a folder of `<renderer>-<systems>x<films>s<seed>-NNNNN.npz` shards plus `systems.json`; building it
resumes where it stopped, and a build with another renderer, seed or count of films adds its films beside the
others (training reads every shard). System numbers are the same in every build: the first N of one list.
"""

from __future__ import annotations

import io
import json
import math
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from raiox.shape.attributes import attribute_targets
from raiox.shape.canonical import CROP_HEIGHT, CROP_WIDTH, canonical_crop, find_implants
from raiox.tools.implant_designs import FilmTruth, ImplantDesign, ImplantTruth, SceneOptions

# The generators training may use. The third one (`silhouette`, raiox.tools.render_silhouette) is for validation
# only: a film of it in a training cache would make `raiox eval --renderer silhouette` measure nothing new.
RENDERERS = ("flat", "drr")
SHARD_FILMS = 256


def _trainable(renderer: str) -> str:
    if renderer not in RENDERERS:
        raise ValueError(f"film generator {renderer!r} cannot make training films: one of {', '.join(RENDERERS)} "
                         "(the silhouette generator is for validation only)")
    return renderer


def _render(renderer: str, design: ImplantDesign, seed: int) -> tuple[bytes, FilmTruth]:
    if _trainable(renderer) == "flat":
        from raiox.tools.render import render_film
    else:
        from raiox.tools.render_drr import render_film
    return render_film(design, seed, SceneOptions())


@dataclass(frozen=True)
class CachedFilm:
    crop: np.ndarray  # platform up
    upside_down: np.ndarray
    located: bool  # the canonicaliser found this implant (else the crop comes from the ground truth)
    ends_right: bool  # it also told the platform from the apex
    attributes: np.ndarray


def nearest_finding(findings: Sequence[Any], implant: ImplantTruth) -> Any | None:
    """The found implant (a canonicaliser `Finding`) lying on the true one, the most implant-like if several;
    None when none does: the canonicaliser missed it."""
    platform, apex = implant.platform_xy, implant.apex_xy
    centre = ((platform[0] + apex[0]) / 2, (platform[1] + apex[1]) / 2)
    reach = 0.35 * math.dist(platform, apex) + 0.5 * implant.diameter_px
    nearest = None
    for finding in findings:
        middle = ((finding.platform_xy[0] + finding.apex_xy[0]) / 2, (finding.platform_xy[1] + finding.apex_xy[1]) / 2)
        if finding.found and math.dist(middle, centre) < reach and (nearest is None or finding.score > nearest.score):
            nearest = finding
    return nearest


def platform_up(finding: Any, implant: ImplantTruth) -> bool:
    """Whether the finding's platform end is the true platform (the crop is not upside down)."""
    return math.dist(finding.platform_xy, implant.platform_xy) < math.dist(finding.platform_xy, implant.apex_xy)


def prepare_film(data: bytes, truth: FilmTruth, rng: np.random.Generator) -> CachedFilm:
    """The crops of the film's first (asked-for) implant and its attribute targets."""
    from raiox.adapters.imaging import load_radiograph

    image = load_radiograph(data)
    implant = truth.implants[0]
    platform, apex, diameter = implant.platform_xy, implant.apex_xy, implant.diameter_px
    nearest = nearest_finding(find_implants(image), implant)
    if nearest is not None:
        ends_right = platform_up(nearest, implant)
        top, bottom = (nearest.platform_xy, nearest.apex_xy) if ends_right else (nearest.apex_xy, nearest.platform_xy)
        width = nearest.diameter_px
    else:  # what a canonicaliser that found it might have cut: the truth, jittered
        ends_right = False

        def jitter() -> float:
            return float(rng.normal(0, 0.12 * diameter))

        top = (platform[0] + jitter(), platform[1] + jitter())
        bottom = (apex[0] + jitter(), apex[1] + jitter())
        width = diameter * float(rng.uniform(0.85, 1.15))
    crop = canonical_crop(image, top, bottom, width)
    upside_down = canonical_crop(image, bottom, top, width)
    return CachedFilm(crop, upside_down, nearest is not None, ends_right, attribute_targets(implant.design))


def _prepare_chunk(task: tuple[str, list[tuple[int, dict[str, Any], int]]]) -> dict[str, np.ndarray]:
    """Render and prepare a chunk of (system index, design fields, seed) on a worker process."""
    import torch

    torch.set_num_threads(1)
    renderer, items = task
    crops, flipped, systems, located, ends, attributes = [], [], [], [], [], []
    for system, fields, seed in items:
        design = ImplantDesign(**{**fields, "lengths_mm": tuple(fields["lengths_mm"]),
                                  "diameters_mm": tuple(fields["diameters_mm"])})
        data, truth = _render(renderer, design, seed)
        film = prepare_film(data, truth, np.random.default_rng(seed))
        crops.append(film.crop)
        flipped.append(film.upside_down)
        systems.append(system)
        located.append(film.located)
        ends.append(film.ends_right)
        attributes.append(film.attributes)
    return {"crops": np.stack(crops), "upside_down": np.stack(flipped), "systems": np.asarray(systems, np.int32),
            "located": np.asarray(located), "ends_right": np.asarray(ends),
            "attributes": np.stack(attributes).astype(np.float32),
            "renderer": np.full(len(items), RENDERERS.index(renderer), np.int8)}


def build_cache(out: Path, designs: Sequence[ImplantDesign], *, films_per_system: int, renderer: str,
                seed: int, workers: int | None = None, progress: bool = True) -> int:
    """Render `films_per_system` films of every design with `renderer` into `out` (resuming: shards already
    written are kept). Returns the number of films in the cache for this renderer."""
    from tqdm import tqdm

    _trainable(renderer)
    out.mkdir(parents=True, exist_ok=True)
    listed = out / "systems.json"
    if not listed.exists() or len(json.loads(listed.read_text())) < len(designs):
        listed.write_text(json.dumps([asdict(d) for d in designs]))
    rng = np.random.default_rng(seed)
    items = [(number, asdict(design), int(rng.integers(0, 2**31 - 1)))
             for number, design in enumerate(designs) for _ in range(films_per_system)]
    order = rng.permutation(len(items))
    items = [items[i] for i in order]
    shards = [items[i:i + SHARD_FILMS] for i in range(0, len(items), SHARD_FILMS)]
    layout = f"{renderer}-{len(designs)}x{films_per_system}s{seed}"
    todo = [(n, shard) for n, shard in enumerate(shards) if not (out / f"{layout}-{n:05d}.npz").exists()]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 2, mp_context=context) as pool, \
            tqdm(total=len(items), initial=(len(shards) - len(todo)) * SHARD_FILMS, desc=f"rendering {renderer}",
                 unit="film", disable=not progress) as bar:
        futures = {pool.submit(_prepare_chunk, (renderer, shard)): n for n, shard in todo}
        for future in _as_completed(futures):
            n = futures[future]
            arrays = future.result()
            path = out / f"{layout}-{n:05d}.npz"
            np.savez(path.with_suffix(".tmp.npz"), allow_pickle=True, **arrays)
            path.with_suffix(".tmp.npz").rename(path)
            bar.update(len(arrays["systems"]))
    return len(items)


def _as_completed(futures: dict[Future[dict[str, np.ndarray]], int]) -> Iterator[Future[dict[str, np.ndarray]]]:
    from concurrent.futures import as_completed

    yield from as_completed(futures)


def load_cache(folder: Path, renderers: Sequence[str] = RENDERERS) -> dict[str, np.ndarray]:
    """Every shard of the cache (of the given renderers) concatenated."""
    for renderer in renderers:
        _trainable(renderer)
    parts: dict[str, list[np.ndarray]] = {}
    for path in sorted(folder.glob("*.npz")):
        if path.name.endswith(".tmp.npz") or path.name.split("-")[0] not in renderers:
            continue
        with np.load(path) as shard:
            for key in shard.files:
                parts.setdefault(key, []).append(shard[key])
    if not parts:
        raise FileNotFoundError(f"no cached films in {folder}")
    return {key: np.concatenate(values) for key, values in parts.items()}


def crop_png(crop: np.ndarray) -> bytes:
    """A crop as PNG bytes (for looking at a cache)."""
    out = io.BytesIO()
    Image.fromarray(crop.reshape(CROP_HEIGHT, CROP_WIDTH)).save(out, format="PNG")
    return out.getvalue()
