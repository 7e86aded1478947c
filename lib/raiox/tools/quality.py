"""Identification quality: rendered evaluation sets, `raiox eval` (top-1/top-3) and `raiox train` (metric
learning of an open_clip image tower on rendered films of a catalog's systems, or on a lab's own films)."""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from raiox.adapters.encoder import EMBEDDING_DIM, Encoder, checkpoint_sidecar, random_model, resolve_weights
from raiox.adapters.imaging import ImageError
from raiox.services import Services
from raiox.tools.render import ImplantDesign, demo_catalog, render

log = logging.getLogger(__name__)

# Render seeds in three disjoint ranges: references (system number * 100 + view), training films, and
# evaluation queries, which no reference or training film ever uses.
REFERENCE_SEEDS = range(0, 3)
TRAIN_SEEDS = range(1_000_000, 4_000_000)
APPROVAL_SEEDS = range(4_000_000, 5_000_000)  # films standing in for approved cases (learning from approvals)
EVAL_SEEDS = range(5_000_000, 6_000_000)

_MAKERS = ("Demo Aurora Dental", "Demo Kestrel Implants", "Demo Lumen Bio", "Demo Meridian Oral",
           "Demo Quartz Medical", "Demo Sable Systems")


def generated_catalog(count: int = 48, seed: int = 7) -> list[ImplantDesign]:
    """The twelve hand-made demo systems plus generated fictional ones, `count` in all (for eval at scale)."""
    rng = np.random.default_rng(seed)
    designs = list(demo_catalog())[:count]
    while len(designs) < count:
        number = len(designs)
        designs.append(ImplantDesign(
            manufacturer=_MAKERS[number % len(_MAKERS)],
            system=f"Gen {number:02d}",
            length_mm=float(rng.choice([6.5, 8.0, 10.0, 11.5, 13.0, 15.0])),
            diameter_mm=float(rng.choice([3.3, 3.75, 4.1, 4.5, 5.0, 5.5])),
            taper=float(rng.choice([0.0, 0.15, 0.3, 0.45])),
            thread_pitch_mm=float(rng.choice([0.6, 0.8, 1.0, 1.25])),
            thread_depth_mm=float(rng.choice([0.25, 0.35, 0.45])),
            thread_profile=str(rng.choice(["v", "square", "buttress"])),  # type: ignore[arg-type]
            collar_mm=float(rng.choice([0.4, 0.8, 1.5, 2.5])),
            microthreads=bool(rng.random() < 0.3),
            apex=str(rng.choice(["flat", "round", "pointed"])),  # type: ignore[arg-type]
            apex_vent=bool(rng.random() < 0.4),
            connection=str(rng.choice(["internal-hex", "conical", "external-hex"])),  # type: ignore[arg-type]
        ))
    return designs


def catalog_by_name(name: str) -> list[ImplantDesign]:
    """`demo` (12 systems) or `eval48`-style `eval<N>` (N systems: the demo ones plus generated ones)."""
    if name == "demo":
        return demo_catalog()
    if name.startswith("eval") and name[4:].isdigit():
        return generated_catalog(int(name[4:]))
    raise ValueError(f"unknown rendered catalog {name!r}: use `demo` or `eval<N>`, e.g. eval48")


@dataclass
class EvalReport:
    model_id: str
    systems: int
    queries: int
    top1: float
    top3: float
    low_confidence_rate: float
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)  # truth → predicted top-1 → count
    # Calibration: the margin below which 80 % of wrong top-1 answers fall (RAIOX_LOW_CONFIDENCE_MARGIN),
    # and the share of all answers it would flag.
    suggested_low_confidence_margin: float = 0.0
    flagged_at_suggested_margin: float = 0.0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def rank_systems(query: np.ndarray, references: np.ndarray, labels: Sequence[str]) -> list[tuple[str, float]]:
    """Systems by their best reference's cosine similarity, best first (what the SQL statement computes)."""
    similarity = references @ query
    best: dict[str, float] = {}
    for label, value in zip(labels, similarity.tolist(), strict=True):
        if value > best.get(label, -2.0):
            best[label] = value
    return sorted(best.items(), key=lambda item: -item[1])


def evaluate(encoder: Encoder, designs: Sequence[ImplantDesign], *, queries_per_system: int = 5,
             references_per_system: int = len(REFERENCE_SEEDS), low_margin: float = 0.02,
             query_systems: set[str] | None = None, approvals: dict[str, int] | None = None) -> EvalReport:
    """Top-1/top-3 over rendered queries (seeds unseen in training and references) of every system, or of
    `query_systems` only. `approvals` adds, per system, that many films as extra references, as approved
    cases become references in production. A result is low-confidence when its top similarity leads the
    second by less than `low_margin`."""
    started = time.monotonic()
    ref_films, ref_labels = [], []
    for number, design in enumerate(designs):
        seeds = [number * 100 + seed for seed in REFERENCE_SEEDS[:references_per_system]]
        seeds += [APPROVAL_SEEDS[number * 100 + n] for n in range((approvals or {}).get(design.system, 0))]
        ref_films += [render(design, seed=seed) for seed in seeds]
        ref_labels += [design.system] * len(seeds)
    encoded = encoder.encode(ref_films)
    references = np.stack([encoded.embeddings[i] for i in range(len(ref_films))])
    query_films, truths = [], []
    for number, design in enumerate(designs):
        if query_systems is not None and design.system not in query_systems:
            continue
        for q in range(queries_per_system):
            query_films.append(render(design, seed=EVAL_SEEDS[number * queries_per_system + q]))
            truths.append(design.system)
    queried = encoder.encode(query_films)
    top1 = top3 = low = 0
    confusion: dict[str, Counter[str]] = {}
    margins, wrong_margins = [], []
    for position, truth in enumerate(truths):
        ranked = rank_systems(queried.embeddings[position], references, ref_labels)
        margin = ranked[0][1] - ranked[1][1] if len(ranked) > 1 else 1.0
        margins.append(margin)
        top1 += ranked[0][0] == truth
        top3 += truth in [label for label, _ in ranked[:3]]
        low += margin < low_margin
        if ranked[0][0] != truth:
            wrong_margins.append(margin)
        confusion.setdefault(truth, Counter())[ranked[0][0]] += 1
    total = len(truths)
    return EvalReport(encoder.model_id, len(designs), total, top1 / total, top3 / total, low / total,
                      {truth: dict(counts) for truth, counts in confusion.items()},
                      *suggest_margin(margins, wrong_margins), seconds=time.monotonic() - started)


def suggest_margin(margins: Sequence[float], wrong_margins: Sequence[float]) -> tuple[float, float]:
    """The low-confidence margin that flags 80 % of the wrong answers, and the share of all answers it flags."""
    if not wrong_margins:
        return 0.0, 0.0
    suggested = float(np.percentile(wrong_margins, 80))
    return suggested, float(np.mean(np.asarray(margins) < suggested))


def approvals_effect(encoder: Encoder, designs: Sequence[ImplantDesign], base: EvalReport, *,
                     approvals: int = 3, queries_per_system: int = 5) -> dict[str, Any]:
    """Learning from approvals, measured: the quarter of systems with the lowest top-1 in `base` get
    `approvals` approved films each as extra references; their queries are evaluated before and after."""
    per_system = {truth: row.get(truth, 0) / sum(row.values()) for truth, row in base.confusion.items()}
    weakest = set(sorted(per_system, key=lambda s: (per_system[s], s))[:max(1, len(per_system) // 4)])
    before = evaluate(encoder, designs, queries_per_system=queries_per_system, query_systems=weakest)
    after = evaluate(encoder, designs, queries_per_system=queries_per_system, query_systems=weakest,
                     approvals={system: approvals for system in weakest})
    return {"systems": sorted(weakest), "approvals_per_system": approvals,
            "before": {"top1": round(before.top1, 4), "top3": round(before.top3, 4)},
            "after": {"top1": round(after.top1, 4), "top3": round(after.top3, 4)}}


def evaluate_folder(services: Services, folder: Path, *, low_margin: float = 0.02) -> EvalReport:
    """Top-1/top-3 of a labelled folder (`<system>/<film>`) against the database's catalog, through the
    production matching query; system names compare without regard to case."""
    from raiox.embed.matching import match_image

    started = time.monotonic()
    films = sorted(path for path in folder.glob("*/*") if path.is_file())
    top1 = top3 = low = 0
    confusion: dict[str, Counter[str]] = {}
    margins, wrong_margins = [], []
    for path in films:
        truth = path.parent.name
        ranked = match_image(services, path.read_bytes())
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
    return EvalReport(services.encoder.model_id, len(confusion), len(films), top1 / total, top3 / total,
                      low / total, {t: dict(c) for t, c in confusion.items()}, *suggest_margin(margins, wrong_margins),
                      seconds=time.monotonic() - started)


def write_film_folder(out: Path, designs: Sequence[ImplantDesign], *, films_per_system: int, seeds: str,
                      skip: int = 0, manifest: bool = False) -> int:
    """Rendered films as a lab's labelled folder, `out/<system>/<n>.png` (what `raiox train --folder` and
    `raiox eval --folder` read), for the systems of `designs` after the first `skip`: `reference` seeds (system
    number × 100 + n, as eval's references use) or `eval` seeds (never used by references or any training).
    With `manifest`, `out/catalog.jsonl` makes them a catalog (`raiox catalog import`). Returns the film count."""
    if seeds not in ("reference", "eval"):
        raise ValueError(f"seeds are `reference` or `eval`, not {seeds!r}")
    if films_per_system > 100:
        raise ValueError("at most 100 films per system (reference seeds of the next system follow)")
    lines = []
    for number, design in list(enumerate(designs))[skip:]:
        folder = out / design.system
        folder.mkdir(parents=True, exist_ok=True)
        names = []
        for n in range(films_per_system):
            seed = number * 100 + n if seeds == "reference" else EVAL_SEEDS[500_000 + number * 100 + n]
            (folder / f"{n}.png").write_bytes(render(design, seed=seed))
            names.append(f"{design.system}/{n}.png")
        lines.append(json.dumps({"manufacturer": design.manufacturer, "system": design.system, "images": names}))
    if manifest:
        (out / "catalog.jsonl").write_text("\n".join(lines) + "\n")
    return len(lines) * films_per_system


# Training ---------------------------------------------------------------------------------------


def _render_training_film(design: ImplantDesign, seed: int) -> bytes:
    """One training film; every fifth in 16 bits, as sensors deliver them (top level: pickled to workers)."""
    return render(design, seed=seed, bits=16 if seed % 5 == 0 else 8)


def render_training_set(encoder: Encoder, designs: Sequence[ImplantDesign], films_per_system: int, *,
                        seed: int = 0, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """`films_per_system` films of every system from training seeds, rendered on worker processes and
    prepared as the encoder prepares films (decode, crop, letterbox): grey uint8 (n, H, W) and labels (n,)."""
    import multiprocessing
    import os

    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    labels = np.arange(len(designs) * films_per_system) % len(designs)
    seeds = rng.choice(len(TRAIN_SEEDS), size=len(labels), replace=False)
    # spawn, not fork: the parent holds torch's thread pools, which a forked child must not inherit.
    workers = ProcessPoolExecutor(max_workers=os.cpu_count() or 2, mp_context=multiprocessing.get_context("spawn"))
    pixels = np.empty((len(labels), encoder.image_size, encoder.image_size), dtype=np.uint8)
    with workers as pool, tqdm(total=len(labels), desc="rendering", unit="film", disable=not progress) as bar:
        films = pool.map(_render_training_film, [designs[label] for label in labels],
                         [TRAIN_SEEDS[int(s)] for s in seeds], chunksize=16)
        for position, film in enumerate(films):
            pixels[position] = encoder.prepare(film)[:, :, 0]
            bar.update()
    return pixels, labels


def _augment(grey: Any, generator: Any) -> Any:
    """Radiograph augmentations of a uint8 batch (n, H, W) on its device → float (n, H, W, 3) in 0…255: mirror
    image, small rotation, zoom and shift, exposure (contrast, brightness, gamma) and sensor noise."""
    import torch

    n = grey.shape[0]
    device = grey.device
    uniform = lambda low, high: low + (high - low) * torch.rand(n, device=device, generator=generator)  # noqa: E731
    x = grey.float().unsqueeze(1) / 255
    angle = uniform(-0.1, 0.1)
    zoom = uniform(0.9, 1.1) * torch.where(torch.rand(n, device=device, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 0, 1] = zoom * torch.cos(angle), -torch.sin(angle)  # negative zoom on x: mirror
    theta[:, 1, 0], theta[:, 1, 1] = zoom.abs() * torch.sin(angle), torch.cos(angle)
    theta[:, :, 2] = torch.stack([uniform(-0.06, 0.06), uniform(-0.06, 0.06)], dim=1)
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    x = torch.nn.functional.grid_sample(x, grid, padding_mode="zeros", align_corners=False)
    x = x.clamp(0, 1) ** uniform(0.7, 1.4).view(n, 1, 1, 1)
    x = x * uniform(0.8, 1.2).view(n, 1, 1, 1) + uniform(-0.08, 0.08).view(n, 1, 1, 1)
    x = x + uniform(0.0, 0.04).view(n, 1, 1, 1) * torch.randn(x.shape, device=device, generator=generator)
    return (x.clamp(0, 1) * 255).expand(-1, 3, -1, -1).permute(0, 2, 3, 1)


def _fit(encoder: Encoder, pixels: np.ndarray, labels: np.ndarray, classes: int, *, deadline: float,
         batch_size: int = 64, lr: float = 2e-3, seed: int = 0, class_init: str = "random",
         progress: bool = True) -> int:
    """Metric learning of the encoder's image tower in place (cosine softmax with a margin, CosFace) on prepared
    grey films (n, H, W) with radiograph augmentations, until `deadline` (time.monotonic()): the learning rate
    warms up, then decays on a cosine over the time left. `class_init="mean"` (fine-tuning) starts each class
    at its films' mean embedding, with the classes learning 5× faster than the tower; `random` (from scratch)
    starts them anywhere. Returns the number of steps."""

    import torch
    from tqdm import tqdm

    device = encoder.device
    pixels_on_device, labels_on_device = torch.from_numpy(pixels).to(device), torch.from_numpy(labels).to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    visual = encoder.model.visual.train().to(memory_format=torch.channels_last)  # steps ×1.4 faster on CPU
    if class_init == "mean":
        visual.eval()  # batch-norm statistics as the encoder will embed
        initial, class_lr = _class_means(encoder, pixels_on_device, labels_on_device, classes), lr * 5
        visual.train()
    else:
        initial = torch.nn.functional.normalize(torch.randn(classes, EMBEDDING_DIM, device=device), dim=-1)
        class_lr = lr
    centres = torch.nn.Parameter(initial)
    optimizer = torch.optim.AdamW([{"params": visual.parameters()}, {"params": [centres], "lr": class_lr}], lr=lr,
                                  weight_decay=1e-4)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    scale, margin = 16.0, 0.2
    started, steps, correct, seen = time.monotonic(), 0, 0, 0
    budget = max(deadline - started, 1.0)
    with tqdm(total=int(budget), desc="training", unit="s", disable=not progress) as bar:
        while steps == 0 or time.monotonic() < deadline:
            done = min(1.0, (time.monotonic() - started) / budget)
            _schedule(optimizer, base_lrs, done)
            chosen = torch.randint(len(labels), (batch_size,), device=device, generator=generator)
            batch = encoder.normalise(_augment(pixels_on_device[chosen], generator))
            batch = batch.contiguous(memory_format=torch.channels_last)
            target = labels_on_device[chosen]
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
                features = torch.nn.functional.normalize(visual(batch).float(), dim=-1)
            loss, right = _cosface_step(optimizer, features, centres, target, scale=scale, margin=margin)
            steps += 1
            correct += right
            seen += len(target)
            if steps % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{correct / seen:.2f}", step=steps)
                correct = seen = 0
            bar.n = min(bar.total, int(time.monotonic() - started))
            bar.refresh()
    encoder.model.eval().to(memory_format=torch.contiguous_format)
    return steps


def _schedule(optimizer: Any, base_lrs: list[float], done: float) -> None:
    """Learning rates for the fraction `done` of the time budget: a warm-up, then a cosine decay."""
    factor = min(1.0, done / 0.03) * 0.5 * (1 + math.cos(math.pi * done))
    for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
        group["lr"] = base * factor


def _cosface_step(optimizer: Any, features: Any, centres: Any, target: Any, *, scale: float,
                  margin: float) -> tuple[Any, int]:
    """One step of cosine softmax with a margin (CosFace) on normalised features: the loss, and how many of
    the batch the class centres already classify right."""
    import torch

    cosine = features @ torch.nn.functional.normalize(centres, dim=-1).T
    margins = margin * torch.nn.functional.one_hot(target, centres.shape[0])
    loss = torch.nn.functional.cross_entropy(scale * (cosine - margins), target)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss, int((cosine.argmax(dim=1) == target).sum())


def _class_means(encoder: Encoder, pixels: Any, labels: Any, classes: int) -> Any:
    """Each class's mean embedding (unit length) of its un-augmented films: fine-tuning's starting classes."""
    import torch

    sums = torch.zeros(classes, EMBEDDING_DIM, device=encoder.device)
    with torch.no_grad():
        for start in range(0, len(labels), 64):
            batch = encoder.normalise(pixels[start:start + 64, :, :, None].expand(-1, -1, -1, 3))
            sums.index_add_(0, labels[start:start + 64],
                            torch.nn.functional.normalize(encoder.model.visual(batch).float(), dim=-1))
    return torch.nn.functional.normalize(sums, dim=-1)


def can_tune_head(encoder: Encoder) -> bool:
    """The image tower is open_clip's ModifiedResNet (raiox-small-rn, RN50 …): a convolutional trunk, then an
    attention pool whose value and output projections `_fit_head` can train on their own."""
    visual = encoder.model.visual
    return all(hasattr(visual, name) for name in ("stem", "layer1", "layer2", "layer3", "layer4", "attnpool"))


def _trunk(visual: Any, batch: Any) -> Any:
    """ModifiedResNet's convolutional trunk: feature maps (n, C, h, w) before the attention pool."""
    return visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(batch)))))


def pool_mixtures(pool: Any, maps: Any) -> Any:
    """What open_clip's AttentionPool2d mixes before its value projection: per head, the tokens (the maps'
    mean first, positions added) weighted by that head's attention from the mean token, (n, heads, C). Only
    the mean token's output is kept by the pool, and attention weights sum to 1, so the pool's output is
    `pool_output(pool, pool_mixtures(pool, maps))`: with the query and key projections fixed, the value and
    output projections can learn from these mixtures without running the trunk or the attention again."""
    import math

    import torch

    n, channels = maps.shape[:2]
    tokens = maps.reshape(n, channels, -1).permute(2, 0, 1)  # (hw, n, C)
    tokens = torch.cat([tokens.mean(dim=0, keepdim=True), tokens]) + pool.positional_embedding[:, None, :]
    heads = pool.num_heads
    width = channels // heads
    query = pool.q_proj(tokens[0]).view(n, heads, width) / math.sqrt(width)
    keys = pool.k_proj(tokens).view(len(tokens), n, heads, width)
    weights = torch.softmax(torch.einsum("nhd,tnhd->nht", query, keys), dim=-1)
    return torch.einsum("nht,tnc->nhc", weights, tokens)


def pool_output(pool: Any, mixtures: Any) -> Any:
    """The attention pool's output from `pool_mixtures`: each head's value projection of its mixture, then the
    output projection (c_proj) over the heads side by side."""
    import torch

    n, heads, channels = mixtures.shape
    width = channels // heads
    values = torch.einsum("nhc,hdc->nhd", mixtures, pool.v_proj.weight.view(heads, width, channels))
    return pool.c_proj((values + pool.v_proj.bias.view(heads, width)).reshape(n, channels))


def _fit_head(encoder: Encoder, pixels: np.ndarray, labels: np.ndarray, classes: int, *, deadline: float,
              batch_size: int = 64, lr: float = 5e-4, seed: int = 0, augment_share: float = 0.5,
              progress: bool = True) -> int:
    """Fine-tuning for a slow CPU. For `augment_share` of the time left, the encoder runs forward only over
    augmented copies of the films (radiograph augmentations, as `_fit`), keeping what the attention pool mixes
    (pool_mixtures, float16); then the pool's value and output projections (about a third of raiox-small-rn's
    weights) learn from those, CosFace with each class starting at its films' mean embedding, until
    `deadline`. The convolutional trunk and the attention weights stay as they were. A step then costs
    milliseconds instead of seconds, so a few minutes give thousands. Returns the number of steps."""

    import torch
    from tqdm import tqdm

    device = encoder.device
    visual = encoder.model.visual.eval()
    pool = visual.attnpool
    pixels_on_device, labels_on_device = torch.from_numpy(pixels).to(device), torch.from_numpy(labels).to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    centres = torch.nn.Parameter(_class_means(encoder, pixels_on_device, labels_on_device, classes))
    started = time.monotonic()
    augment_until = started + max(deadline - started, 0.0) * augment_share
    mixtures, targets = [], []
    with torch.no_grad(), tqdm(total=int(augment_until - started), desc="augmenting", unit="s",
                               disable=not progress) as bar:
        for start in range(0, len(labels), batch_size):  # every film once as it is
            batch = encoder.normalise(pixels_on_device[start:start + batch_size, :, :, None].expand(-1, -1, -1, 3))
            mixtures.append(pool_mixtures(pool, _trunk(visual, batch)).half())
            targets.append(labels_on_device[start:start + batch_size])
        while time.monotonic() < augment_until:
            chosen = torch.randint(len(labels), (batch_size,), device=device, generator=generator)
            batch = encoder.normalise(_augment(pixels_on_device[chosen], generator))
            mixtures.append(pool_mixtures(pool, _trunk(visual, batch)).half())
            targets.append(labels_on_device[chosen])
            bar.set_postfix(films=sum(len(t) for t in targets))
            bar.n = min(bar.total, int(time.monotonic() - started))
            bar.refresh()
    cached, cached_labels = torch.cat(mixtures), torch.cat(targets)
    del mixtures
    trained = [pool.v_proj.weight, pool.v_proj.bias, pool.c_proj.weight, pool.c_proj.bias]
    optimizer = torch.optim.AdamW([{"params": trained}, {"params": [centres], "lr": lr * 5}], lr=lr,
                                  weight_decay=1e-4)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    scale, margin = 16.0, 0.2
    head_started, steps, correct, seen = time.monotonic(), 0, 0, 0
    budget = max(deadline - head_started, 1.0)
    with tqdm(total=int(budget), desc=f"training on {len(cached_labels)} augmented films", unit="s",
              disable=not progress) as bar:
        while steps == 0 or time.monotonic() < deadline:
            done = min(1.0, (time.monotonic() - head_started) / budget)
            _schedule(optimizer, base_lrs, done)
            chosen = torch.randint(len(cached_labels), (batch_size,), device=device, generator=generator)
            target = cached_labels[chosen]
            features = torch.nn.functional.normalize(pool_output(pool, cached[chosen].float()), dim=-1)
            loss, right = _cosface_step(optimizer, features, centres, target, scale=scale, margin=margin)
            steps += 1
            correct += right
            seen += len(target)
            if steps % 100 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{correct / seen:.2f}", step=steps)
                correct = seen = 0
            bar.n = min(bar.total, int(time.monotonic() - head_started))
            bar.refresh()
    encoder.model.eval()
    return steps


def _save(encoder: Encoder, out: Path, sidecar: dict[str, Any]) -> Path:
    """The weights, and the sidecar naming the architecture (so RAIOX_CLIP_PRETRAINED=<out> alone loads them)
    and how films were prepared, with how they were made."""
    import torch

    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.to("cpu") for k, v in encoder.model.state_dict().items()}, out)
    checkpoint_sidecar(out).write_text(json.dumps({"model": encoder.model_name, "crop_to_implant": encoder.crop,
                                                   **sidecar}, indent=1))
    return out


def train(model_name: str, designs: Sequence[ImplantDesign], out: Path, *, pretrained: str | None = None,
          minutes: float = 10.0, films_per_system: int = 200, batch_size: int = 64, seed: int = 0,
          crop: bool = False, device: str = "auto", lr: float = 2e-3, progress: bool = True) -> Path:
    """Metric learning (cosine softmax with a margin, CosFace) of the image tower on rendered films: renders
    `films_per_system` films per system once, then trains on them with radiograph augmentations until
    `minutes` (rendering included) are up. Writes a checkpoint and its sidecar (RAIOX_CLIP_PRETRAINED=<out>
    alone then loads it)."""
    import open_clip
    import torch

    from raiox.adapters.encoder import _register_model_configs

    started = time.monotonic()
    deadline = started + minutes * 60
    _register_model_configs()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    if pretrained is None:
        model = random_model(model_name, seed=seed)
    else:
        torch.manual_seed(seed)
        model = open_clip.create_model(model_name, pretrained=pretrained, require_pretrained=True)
    encoder = Encoder.from_model(model, model_name=model_name, device=device, crop=crop)
    pixels, labels = render_training_set(encoder, designs, films_per_system, seed=seed, progress=progress)
    torch.manual_seed(seed)
    steps = _fit(encoder, pixels, labels, len(designs), deadline=deadline, batch_size=batch_size, lr=lr,
                 seed=seed, progress=progress)
    _save(encoder, out, {"steps": steps, "films_per_system": films_per_system, "minutes": minutes,
                         "device": device, "seed": seed, "systems": [d.system for d in designs]})
    log.info("trained %s for %d steps (%.1f min on %s); wrote %s", model_name, steps, minutes, device, out)
    return out


# Training on a lab's own films ---------------------------------------------------------------------


@dataclass
class FilmSet:
    """Films prepared as the encoder prepares them: grey uint8 (n, H, W), class per film, class names."""

    pixels: np.ndarray
    labels: np.ndarray
    names: list[str]

    def subset(self, keep: np.ndarray) -> FilmSet:
        return FilmSet(self.pixels[keep], self.labels[keep], self.names)


@dataclass
class FilmTrainReport:
    out: Path
    films: int
    systems: int
    steps: int
    seconds: float
    held_out: dict[str, dict[str, float]] = field(default_factory=dict)  # before / after: top1, top3, queries
    tuned: str = "all"  # `head`: the attention-pool head on a frozen trunk (_fit_head); `all`: every weight


def folder_films(folder: Path) -> list[tuple[str, bytes]]:
    """A labelled folder, `<system>/<film>` as `raiox eval --folder` reads it: (system, bytes) per film."""
    return [(path.parent.name, path.read_bytes()) for path in sorted(folder.glob("*/*"))
            if path.is_file() and not path.name.startswith(".")]


def database_films(services: Services) -> list[tuple[str, bytes]]:
    """The catalog's reference images (every model's, each image once) and approved cases' films, labelled
    by implant system ("manufacturer system"); objects that cannot be read are skipped with a warning."""
    with services.db.transaction() as conn:
        rows = conn.execute(
            """
            SELECT DISTINCT ON (films.sha256, films.implant_id) films.storage_key,
                   implants.manufacturer || ' ' || implants.system AS label
              FROM (SELECT implant_id, storage_key, sha256 FROM reference_images
                    UNION ALL
                    SELECT d.implant_id, ci.storage_key, ci.sha256
                      FROM review_decisions d JOIN case_images ci ON ci.case_id = d.case_id
                     WHERE d.decision = 'approved' AND ci.status = 'stored' AND ci.storage_key IS NOT NULL
                   ) films
              JOIN implants ON implants.id = films.implant_id
             ORDER BY films.sha256, films.implant_id
            """
        ).fetchall()
    films = []
    for row in rows:
        try:
            films.append((row["label"], services.store.get(row["storage_key"])))
        except Exception as exc:  # noqa: BLE001 - a missing object is one film less, not a failed run
            log.warning("skipping %s: %s", row["storage_key"], exc)
    return films


def prepare_films(encoder: Encoder, films: Sequence[tuple[str, bytes]], *, progress: bool = True) -> FilmSet:
    """Decode and prepare every film as the encoder will (films that do not decode are skipped, logged)."""
    from tqdm import tqdm

    names = sorted({label for label, _ in films})
    index = {name: number for number, name in enumerate(names)}
    pixels, labels = [], []
    for label, data in tqdm(films, desc="preparing", unit="film", disable=not progress):
        try:
            pixels.append(encoder.prepare(data)[:, :, 0])
        except ImageError as exc:
            log.warning("skipping a film of %s: %s", label, exc)
            continue
        labels.append(index[label])
    if not pixels:
        raise ValueError("no film decodes")
    return FilmSet(np.stack(pixels), np.asarray(labels, dtype=np.int64), names)


def split_held_out(films: FilmSet, fraction: float, *, seed: int = 0) -> tuple[FilmSet, FilmSet | None]:
    """Per system, `fraction` of its films (rounded down, never its last one) set aside to measure training."""
    if fraction <= 0:
        return films, None
    rng = np.random.default_rng(seed)
    held = np.zeros(len(films.labels), dtype=bool)
    for label in np.unique(films.labels):
        members = rng.permutation(np.flatnonzero(films.labels == label))
        held[members[:min(int(len(members) * fraction), len(members) - 1)]] = True
    if not held.any():
        return films, None
    return films.subset(~held), films.subset(held)


def retrieval_accuracy(encoder: Encoder, references: FilmSet, queries: FilmSet) -> dict[str, float]:
    """Top-1/top-3 of `queries` against `references` (a system's best reference counts), as matching ranks."""
    import torch

    def embed(pixels: np.ndarray) -> np.ndarray:
        return np.concatenate([encoder.encode_tensors(torch.from_numpy(np.repeat(pixels[i:i + 64, :, :, None], 3,
                                                                                 axis=3)))
                               for i in range(0, len(pixels), 64)])

    refs, labels = embed(references.pixels), [references.names[n] for n in references.labels]
    top1 = top3 = 0
    for vector, label in zip(embed(queries.pixels), queries.labels.tolist(), strict=True):
        ranked = [name for name, _ in rank_systems(vector, refs, labels)[:3]]
        top1 += ranked[0] == queries.names[label]
        top3 += queries.names[label] in ranked
    return {"top1": round(top1 / len(queries.labels), 4), "top3": round(top3 / len(queries.labels), 4),
            "queries": len(queries.labels)}


def train_on_films(films: Sequence[tuple[str, bytes]], out: Path, *, model_name: str, pretrained: str,
                   source: str, minutes: float = 8.0, held_out: float = 0.25, batch_size: int = 64,
                   lr: float | None = None, tune: str = "all", seed: int = 0, device: str = "auto",
                   progress: bool = True) -> FilmTrainReport:
    """Fine-tune the encoder `model_name`/`pretrained` (the shipped one by default: resolve_weights) on a lab's
    labelled films within `minutes` (loading and preparing included): CosFace with each system's class starting
    at its films' mean embedding; `tune` `all` trains every weight (_fit), `head` the attention pool's value
    and output projections on a frozen trunk (_fit_head). `held_out` of each system's films are
    left out of training and matched against the rest before and after, as a new film is matched against the
    catalog. Writes a checkpoint and its sidecar."""
    import torch

    if tune not in ("all", "head"):
        raise ValueError(f"tune is `all` or `head`, not {tune!r}")
    started = time.monotonic()
    deadline = started + minutes * 60
    model_name, weights = resolve_weights(model_name, pretrained)
    torch.manual_seed(seed)
    encoder = Encoder.load(model_name, weights, device=device)
    prepared = prepare_films(encoder, films, progress=progress)
    if len(prepared.names) < 2:
        raise ValueError(f"training needs films of at least 2 systems; found {len(prepared.names)}")
    trained_on, queries = split_held_out(prepared, held_out, seed=seed)
    report = FilmTrainReport(out, len(trained_on.labels), len(prepared.names), 0, 0.0)
    if queries is not None:
        report.held_out["before"] = retrieval_accuracy(encoder, trained_on, queries)
    head_only = tune == "head"
    if head_only and not can_tune_head(encoder):
        raise ValueError(f"{model_name} has no attention pool to tune on its own: tune `all` its weights")
    fit = _fit_head if head_only else _fit
    extra = {} if head_only else {"class_init": "mean"}
    rate = lr if lr is not None else (5e-4 if head_only else 1e-3)
    report.steps = fit(encoder, trained_on.pixels, trained_on.labels, len(prepared.names), deadline=deadline,
                       batch_size=batch_size, lr=rate, seed=seed, progress=progress, **extra)
    report.tuned = "head" if head_only else "all"
    if queries is not None:
        report.held_out["after"] = retrieval_accuracy(encoder, trained_on, queries)
    report.seconds = time.monotonic() - started
    _save(encoder, out, {"steps": report.steps, "tuned": report.tuned, "minutes": minutes,
                         "device": encoder.device, "seed": seed, "lr": rate, "batch_size": batch_size,
                         "started_from": weights, "source": source,
                         "films": report.films, "held_out": report.held_out,
                         "systems": prepared.names if len(prepared.names) <= 200 else len(prepared.names)})
    log.info("trained %s on %d films of %d systems for %d steps; wrote %s", model_name, report.films,
             report.systems, report.steps, out)
    return report
