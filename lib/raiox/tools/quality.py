"""Identification quality: rendered held-out sets from any film generator, `raiox eval` (top-1/top-3 overall
and per slice, the configured identifier beside the descriptor alone and a previous whole-film encoder, in one
run), a lab's labelled folder through the production query, and rendered films written as a lab's folder."""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from raiox.repository import catalog
from raiox.services import Services
from raiox.shape.identifier import reference_choices
from raiox.tools.implant_designs import FilmTruth, ImplantDesign, SceneOptions, demo_catalog, random_systems

log = logging.getLogger(__name__)

# Render seeds and system seeds in disjoint ranges: training systems come from TRAIN_SYSTEMS_SEED
# (raiox render-cache), held-out ones from HELD_OUT_SEED; reference films and new films of a system use
# different render seeds, and new films other sizes than its references wherever the system has them.
TRAIN_SYSTEMS_SEED = 100_000
HELD_OUT_SEED = 900_001
HELD_OUT_DISTANCE = 2.0  # any two held-out systems differ by at least two clearly visible attributes
REFERENCE_SEEDS = 3_000_000
QUERY_SEEDS = 5_000_000
APPROVAL_SEEDS = 7_000_000
RENDERERS = ("flat", "drr")  # the generators the shape encoder may train on (raiox render-cache)
VALIDATION_RENDERERS = ("silhouette",)  # written apart from both, never trained on: eval only
EVAL_RENDERERS = (*RENDERERS, *VALIDATION_RENDERERS)
SLICES = ("upper-jaw", "restoration:crown", "restoration:abutment", "two-implants", "photographed", "rotated-180")


def systems_by_name(name: str) -> list[ImplantDesign]:
    """`demo` (the 12 demo systems) or `heldout<N>` (N random systems no training set contains)."""
    if name == "demo":
        return demo_catalog()
    if name.startswith("heldout") and name[7:].isdigit() and int(name[7:]) > 0:
        return random_systems(int(name[7:]), seed=HELD_OUT_SEED, min_distance=HELD_OUT_DISTANCE, prefix="Held")
    raise ValueError(f"unknown rendered systems {name!r}: use `demo` or `heldout<N>`, e.g. heldout200")


def render_function(renderer: str) -> Callable[[ImplantDesign, int, SceneOptions], tuple[bytes, Any]]:
    """The film generator called `renderer` (any of EVAL_RENDERERS; only RENDERERS may be trained on)."""
    if renderer == "flat":
        from raiox.tools.render import render_film
    elif renderer == "drr":
        from raiox.tools.render_drr import render_film
    elif renderer == "silhouette":
        from raiox.tools.render_silhouette import render_film
    else:
        raise ValueError(f"unknown film generator {renderer!r}: one of {', '.join(EVAL_RENDERERS)}")
    return render_film


def renderers_named(name: str) -> list[str]:
    """What `raiox eval --renderer` runs: one generator, `both` (flat and drr) or `all` (every one)."""
    if name == "both":
        return list(RENDERERS)
    if name == "all":
        return list(EVAL_RENDERERS)
    if name in EVAL_RENDERERS:
        return [name]
    raise ValueError(f"unknown film generator {name!r}: one of {', '.join(EVAL_RENDERERS)}, `both` or `all`")


def split_sizes(design: ImplantDesign, references: int) -> tuple[list[ImplantDesign], list[ImplantDesign]]:
    """The system at the sizes its reference films show and at the other sizes new films show (the same ones
    again only when it is sold in too few sizes)."""
    lengths, diameters = design.sizes
    combos = [(length, diameter) for length in lengths for diameter in diameters]
    order = np.random.default_rng(zlib.crc32(design.system.encode())).permutation(len(combos))
    combos = [combos[i] for i in order]
    reference_sizes = combos[:max(1, min(references, len(combos) // 2))]
    query_sizes = combos[len(reference_sizes):] or reference_sizes
    return ([design.only_at(*size) for size in reference_sizes], [design.only_at(*size) for size in query_sizes])


@dataclass
class RenderedSet:
    """Reference films and new films of rendered systems, with their labels and slices."""

    renderer: str
    references: list[bytes] = field(default_factory=list)
    reference_labels: list[str] = field(default_factory=list)
    queries: list[bytes] = field(default_factory=list)
    query_labels: list[str] = field(default_factory=list)
    query_truths: list[FilmTruth] = field(default_factory=list)

    @property
    def query_tags(self) -> list[frozenset[str]]:
        return [truth.tags for truth in self.query_truths]


def rendered_set(designs: Sequence[ImplantDesign], renderer: str, *, references: int = 4, queries: int = 6,
                 progress: bool = True) -> RenderedSet:
    from tqdm import tqdm

    render = render_function(renderer)
    films = RenderedSet(renderer)
    for number, design in enumerate(tqdm(designs, desc=f"rendering ({renderer})", unit="system",
                                         disable=not progress)):
        at_reference, at_query = split_sizes(design, references)
        for n in range(references):
            data, _ = render(at_reference[n % len(at_reference)], REFERENCE_SEEDS + number * 100 + n, SceneOptions())
            films.references.append(data)
            films.reference_labels.append(design.system)
        for n in range(queries):
            data, truth = render(at_query[n % len(at_query)], QUERY_SEEDS + number * 100 + n, SceneOptions())
            films.queries.append(data)
            films.query_labels.append(design.system)
            films.query_truths.append(truth)
    return films


@dataclass
class EvalReport:
    name: str
    model_id: str
    renderer: str
    systems: int
    queries: int
    top1: float
    top3: float
    low_confidence_rate: float
    slices: dict[str, dict[str, float]] = field(default_factory=dict)
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)  # truth → predicted top-1 → count
    # Calibration: the margin below which 80 % of wrong top-1 answers fall (RAIOX_LOW_CONFIDENCE_MARGIN),
    # and the share of all answers it would flag.
    suggested_low_confidence_margin: float = 0.0
    flagged_at_suggested_margin: float = 0.0
    seconds: float = 0.0
    # Finding the implant, overall (`all`) and per slice: films, share found, share of those with the platform up.
    segmentation: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def rank_systems(query: np.ndarray, references: np.ndarray, labels: Sequence[str]) -> list[tuple[str, float]]:
    """Systems best first, as matching ranks them (`catalog.TOP_IMPLANTS_SQL`, exactly): per implant on the film
    (one query vector each), a system's similarity blends its best and second-best reference's cosines
    (1 : SECOND_REFERENCE_WEIGHT; the very same picture decides alone); the film keeps each system's best over its
    implants."""
    names = sorted(set(labels))
    column = {name: k for k, name in enumerate(names)}
    owner = np.asarray([column[label] for label in labels])
    best: dict[str, float] = {}
    for similarity in np.atleast_2d(query) @ references.T:
        order = np.lexsort((-similarity, owner))  # by system, its best reference first
        owners, ranked = owner[order], similarity[order]
        _, starts = np.unique(owners, return_index=True)  # every system has a reference: one start each
        following = np.minimum(starts + 1, len(order) - 1)
        has_second = (starts + 1 < len(order)) & (owners[following] == owners[starts])
        scores = catalog.system_similarity(ranked[starts], np.where(has_second, ranked[following], ranked[starts]))
        for name, score in zip(names, scores.tolist(), strict=True):
            best[name] = max(best.get(name, -2.0), score)
    return sorted(best.items(), key=lambda item: -item[1])


# An embedder turns films into vectors: (per film, an array of vectors, one per implant) and errors by index; a
# reference embedder is also told each film's system.
Embedder = Callable[[Sequence[bytes]], tuple[dict[int, np.ndarray], dict[int, str]]]
ReferenceEmbedder = Callable[[Sequence[bytes], Sequence[str]], tuple[dict[int, np.ndarray], dict[int, str]]]


def identifier_embedder(identifier: Any, *,
                        seen: dict[int, Any] | None = None) -> tuple[ReferenceEmbedder, Embedder]:
    """(references, queries) embedders of an identifier: a reference film is the implant that stands for its
    system (as the catalog chooses it: `reference_choices`), a new film every implant on it. `seen` collects what
    the identifier made of each new film."""

    def references(films: Sequence[bytes], labels: Sequence[str]) -> tuple[dict[int, np.ndarray], dict[int, str]]:
        batch = identifier.identify_in_chunks(films)
        chosen = reference_choices(batch.films, labels)
        return ({position: implant.embedding[None, :] for position, implant in chosen.items()},
                {i: str(e) for i, e in batch.errors.items()})

    def queries(films: Sequence[bytes]) -> tuple[dict[int, np.ndarray], dict[int, str]]:
        batch = identifier.identify_in_chunks(films)
        if seen is not None:
            seen.update(batch.films)
        return ({i: np.stack([imp.embedding for imp in film.implants]) for i, film in batch.films.items()},
                {i: str(e) for i, e in batch.errors.items()})

    return references, queries


def whole_film_embedder(encoder: Any) -> tuple[ReferenceEmbedder, Embedder]:
    """(references, queries) embedders of a whole-film open_clip encoder (how Raiox matched before identifying by
    shape): one vector per film either way."""

    def embed(films: Sequence[bytes]) -> tuple[dict[int, np.ndarray], dict[int, str]]:
        encoded = encoder.encode(films)
        return ({i: v[None, :] for i, v in encoded.embeddings.items()}, {i: str(e) for i, e in encoded.errors.items()})

    def references(films: Sequence[bytes], labels: Sequence[str]) -> tuple[dict[int, np.ndarray], dict[int, str]]:
        return embed(films)

    return references, embed


def evaluate(name: str, model_id: str, films: RenderedSet, references: ReferenceEmbedder, queries: Embedder, *,
             low_margin: float = 0.02, query_mask: Sequence[bool] | None = None,
             extra: tuple[list[bytes], list[str]] | None = None) -> EvalReport:
    """Top-1/top-3 of the set's new films against its reference films, overall and per slice. `extra` adds
    reference films (approved cases); `query_mask` keeps only some new films."""
    started = time.monotonic()
    ref_films, ref_labels = list(films.references), list(films.reference_labels)
    if extra:
        ref_films += extra[0]
        ref_labels += extra[1]
    ref_vectors, ref_errors = references(ref_films, ref_labels)
    kept = [i for i in range(len(ref_films)) if i not in ref_errors]
    matrix = np.concatenate([ref_vectors[i] for i in kept])
    labels = [ref_labels[i] for i in kept]
    positions = [i for i in range(len(films.queries)) if query_mask is None or query_mask[i]]
    query_vectors, _ = queries([films.queries[i] for i in positions])
    top1 = top3 = low = 0
    confusion: dict[str, Counter[str]] = {}
    slice_hits: dict[str, list[int]] = {}
    margins, wrong_margins = [], []
    tags = films.query_tags
    for number, index in enumerate(positions):
        truth = films.query_labels[index]
        ranked = rank_systems(query_vectors[number], matrix, labels) if number in query_vectors else []
        names = [label for label, _ in ranked]
        margin = ranked[0][1] - ranked[1][1] if len(ranked) > 1 else 1.0
        margins.append(margin)
        hit1, hit3 = bool(names) and names[0] == truth, truth in names[:3]
        top1 += hit1
        top3 += hit3
        low += margin < low_margin
        if not hit1:
            wrong_margins.append(margin)
        confusion.setdefault(truth, Counter())[names[0] if names else "-"] += 1
        for tag in tags[index] & set(SLICES):
            slice_hits.setdefault(tag, []).extend([hit1, hit3])
    total = max(1, len(positions))
    slices = {tag: {"queries": len(h) // 2, "top1": round(float(np.mean(h[0::2])), 4),
                    "top3": round(float(np.mean(h[1::2])), 4)} for tag, h in sorted(slice_hits.items())}
    return EvalReport(name, model_id, films.renderer, len(set(films.reference_labels)), len(positions),
                      top1 / total, top3 / total, low / total, slices,
                      {t: dict(c) for t, c in confusion.items()}, *suggest_margin(margins, wrong_margins),
                      seconds=time.monotonic() - started)


def segmentation(films: RenderedSet, identified: dict[int, Any]) -> dict[str, dict[str, float]]:
    """How often the identifier found the asked-for implant on a new film and, when it did, turned its platform
    up (the canonicaliser's guess, after the shape encoder's check), overall and per slice."""
    from raiox.tools.shape_data import nearest_finding, platform_up

    outcomes: dict[str, list[tuple[bool, bool]]] = {}
    for index, truth in enumerate(films.query_truths):
        film = identified.get(index)
        finding = nearest_finding([i.finding for i in film.implants], truth.implants[0]) if film else None
        outcome = (finding is not None, finding is not None and platform_up(finding, truth.implants[0]))
        for tag in ("all", *sorted(truth.tags & set(SLICES))):
            outcomes.setdefault(tag, []).append(outcome)
    rates = {}
    for tag, rows in outcomes.items():
        up = [u for f, u in rows if f]
        rates[tag] = {"films": len(rows), "found": round(sum(f for f, _ in rows) / len(rows), 4),
                      "platform_up": round(sum(up) / len(up), 4) if up else 0.0}
    return rates


def suggest_margin(margins: Sequence[float], wrong_margins: Sequence[float]) -> tuple[float, float]:
    """The low-confidence margin that flags 80 % of the wrong answers, and the share of all answers it flags."""
    if not wrong_margins:
        return 0.0, 0.0
    suggested = float(np.percentile(wrong_margins, 80))
    return suggested, float(np.mean(np.asarray(margins) < suggested))


def approvals_effect(name: str, model_id: str, films: RenderedSet, designs: Sequence[ImplantDesign],
                     base: EvalReport, references: ReferenceEmbedder, queries: Embedder, *,
                     approvals: int = 3) -> dict[str, Any]:
    """Learning from approvals, measured: the quarter of systems with the lowest top-1 in `base` get
    `approvals` approved films each as extra references; their new films are evaluated before and after."""
    per_system = {truth: row.get(truth, 0) / sum(row.values()) for truth, row in base.confusion.items()}
    weakest = set(sorted(per_system, key=lambda s: (per_system[s], s))[:max(1, len(per_system) // 4)])
    mask = [label in weakest for label in films.query_labels]
    render = render_function(films.renderer)
    extra: tuple[list[bytes], list[str]] = ([], [])
    for number, design in enumerate(designs):
        if design.system in weakest:
            _, at_query = split_sizes(design, 4)
            for n in range(approvals):
                extra[0].append(render(at_query[n % len(at_query)], APPROVAL_SEEDS + number * 100 + n,
                                       SceneOptions())[0])
                extra[1].append(design.system)
    before = evaluate(name, model_id, films, references, queries, query_mask=mask)
    after = evaluate(name, model_id, films, references, queries, query_mask=mask, extra=extra)
    return {"systems": sorted(weakest), "approvals_per_system": approvals,
            "before": {"top1": round(before.top1, 4), "top3": round(before.top3, 4)},
            "after": {"top1": round(after.top1, 4), "top3": round(after.top3, 4)}}


def evaluate_folder(services: Services, folder: Path, *, low_margin: float = 0.02) -> EvalReport:
    """Top-1/top-3 of a labelled folder (`<system>/<film>`) against the database's catalog, through the
    production matching query (a film's answer over every implant on it); names compare without regard to case."""
    from raiox.adapters.imaging import ImageError
    from raiox.embed.matching import match_image

    started = time.monotonic()
    films = sorted(path for path in folder.glob("*/*") if path.is_file() and not path.name.startswith("."))
    top1 = top3 = low = 0
    confusion: dict[str, Counter[str]] = {}
    margins, wrong_margins = [], []
    for path in films:
        truth = path.parent.name
        try:
            ranked = match_image(services, path.read_bytes())
        except ImageError as exc:
            log.warning("%s does not decode: %s", path, exc)
            ranked = []
        names = [c.system.lower() for c in ranked]
        margin = ranked[0].similarity - ranked[1].similarity if len(ranked) > 1 else 1.0
        margins.append(margin)
        top1 += bool(names) and names[0] == truth.lower()
        top3 += truth.lower() in names[:3]
        low += margin < low_margin
        if not names or names[0] != truth.lower():
            wrong_margins.append(margin)
        confusion.setdefault(truth, Counter())[ranked[0].system if ranked else "-"] += 1
    total = max(1, len(films))
    return EvalReport(str(folder), services.encoder.model_id, "folder", len(confusion), len(films), top1 / total,
                      top3 / total, low / total, {}, {t: dict(c) for t, c in confusion.items()},
                      *suggest_margin(margins, wrong_margins), seconds=time.monotonic() - started)


def write_film_folder(out: Path, designs: Sequence[ImplantDesign], *, films_per_system: int, seeds: str,
                      renderer: str = "flat", skip: int = 0, manifest: bool = False) -> int:
    """Rendered films as a lab's labelled folder, `out/<system>/<n>.png|jpg` (what `raiox train --folder` and
    `raiox eval --folder` read), for the systems of `designs` after the first `skip`: `reference` films (at
    the system's reference sizes, as eval's references) or `eval` films (other seeds, other sizes). With
    `manifest`, `out/catalog.jsonl` makes them a catalog (`raiox catalog import`). Returns the film count."""
    if seeds not in ("reference", "eval"):
        raise ValueError(f"seeds are `reference` or `eval`, not {seeds!r}")
    if films_per_system > 100:
        raise ValueError("at most 100 films per system (the next system's seeds follow)")
    render = render_function(renderer)
    lines = []
    for number, design in list(enumerate(designs))[skip:]:
        folder = out / design.system
        folder.mkdir(parents=True, exist_ok=True)
        at_reference, at_query = split_sizes(design, 4)
        sizes, first = (at_reference, REFERENCE_SEEDS) if seeds == "reference" else (at_query, QUERY_SEEDS)
        names = []
        for n in range(films_per_system):
            data, _ = render(sizes[n % len(sizes)], first + number * 100 + n, SceneOptions())
            extension = ".jpg" if data.startswith(b"\xff\xd8") else ".png"
            name = f"{n}{extension}"
            (folder / name).write_bytes(data)
            names.append(f"{design.system}/{name}")
        lengths, diameters = design.sizes
        lines.append(json.dumps({"manufacturer": design.manufacturer, "system": design.system, "images": names,
                                 "implant_type": design.implant_type, "connection": design.connection,
                                 "diameter_min_mm": min(diameters), "diameter_max_mm": max(diameters),
                                 "length_min_mm": min(lengths), "length_max_mm": max(lengths)}))
    if manifest:
        (out / "catalog.jsonl").write_text("\n".join(lines) + "\n")
    return len(lines) * films_per_system


def folder_films(folder: Path) -> list[tuple[str, bytes]]:
    """A labelled folder, `<system>/<film>` as `raiox eval --folder` reads it: (system, bytes) per film."""
    return [(path.parent.name, path.read_bytes()) for path in sorted(folder.glob("*/*"))
            if path.is_file() and not path.name.startswith(".")]


def database_films(services: Services) -> list[tuple[str, bytes]]:
    """The catalog's reference images (every model's, each image once) and approved cases' films, labelled
    by implant system ("manufacturer system"); objects that cannot be read are skipped with a warning."""
    with services.db.transaction() as conn:
        labelled = catalog.labelled_films(conn)
    films = []
    for film in labelled:
        try:
            films.append((film.label, services.store.get(film.storage_key)))
        except Exception as exc:  # noqa: BLE001 - a missing object is one film less, not a failed run
            log.warning("skipping %s: %s", film.storage_key, exc)
    return films
