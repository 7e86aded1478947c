"""Identification quality: rendered evaluation sets, `raiox eval` (top-1/top-3) and `raiox train` (metric
learning of an open_clip image tower on rendered films of a catalog's systems)."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from raiox.adapters.encoder import Encoder, checkpoint_sidecar, random_model
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
    suggested = float(np.percentile(wrong_margins, 80)) if wrong_margins else 0.0
    return EvalReport(encoder.model_id, len(designs), total, top1 / total, top3 / total, low / total,
                      {truth: dict(counts) for truth, counts in confusion.items()},
                      suggested, float(np.mean(np.asarray(margins) < suggested)),
                      seconds=time.monotonic() - started)


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
    for path in films:
        truth = path.parent.name
        ranked = match_image(services, path.read_bytes())
        names = [c.system.lower() for c in ranked]
        top1 += bool(names) and names[0] == truth.lower()
        top3 += truth.lower() in names[:3]
        low += len(ranked) > 1 and ranked[0].similarity - ranked[1].similarity < low_margin
        confusion.setdefault(truth, Counter())[ranked[0].system if ranked else "-"] += 1
    total = max(1, len(films))
    return EvalReport(services.encoder.model_id, len(confusion), len(films), top1 / total, top3 / total,
                      low / total, {t: dict(c) for t, c in confusion.items()}, seconds=time.monotonic() - started)


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


def train(model_name: str, designs: Sequence[ImplantDesign], out: Path, *, pretrained: str | None = None,
          minutes: float = 10.0, films_per_system: int = 200, batch_size: int = 64, seed: int = 0,
          crop: bool = False, device: str = "auto", progress: bool = True) -> Path:
    """Metric learning (cosine softmax with a margin, CosFace) of the image tower: renders
    `films_per_system` films per system once, then trains on them with radiograph augmentations until
    `minutes` (rendering included) are up, the learning rate warming up and then decaying on a cosine over
    the remaining time. Writes a checkpoint Encoder.load takes, and a sidecar saying how films were
    prepared."""
    import math

    import open_clip
    import torch
    from tqdm import tqdm

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
    pixels_on_device, labels_on_device = torch.from_numpy(pixels).to(device), torch.from_numpy(labels).to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    visual = model.visual.train().to(memory_format=torch.channels_last)  # steps ×1.4 faster on this CPU
    classes = torch.nn.Parameter(torch.nn.functional.normalize(torch.randn(len(designs), 512, device=device), dim=-1))
    optimizer = torch.optim.AdamW([{"params": visual.parameters()}, {"params": [classes]}], lr=2e-3,
                                  weight_decay=1e-4)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    scale, margin = 16.0, 0.2
    train_started, steps, correct, seen = time.monotonic(), 0, 0, 0
    budget = max(deadline - train_started, 1.0)
    with tqdm(total=int(budget), desc="training", unit="s", disable=not progress) as bar:
        while steps == 0 or time.monotonic() < deadline:
            done = min(1.0, (time.monotonic() - train_started) / budget)
            factor = min(1.0, done / 0.03) * 0.5 * (1 + math.cos(math.pi * done))  # warm-up, then cosine decay
            for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                group["lr"] = base * factor
            chosen = torch.randint(len(labels), (batch_size,), device=device, generator=generator)
            batch = encoder.normalise(_augment(pixels_on_device[chosen], generator))
            batch = batch.contiguous(memory_format=torch.channels_last)
            target = labels_on_device[chosen]
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
                features = torch.nn.functional.normalize(visual(batch).float(), dim=-1)
            cosine = features @ torch.nn.functional.normalize(classes, dim=-1).T
            logits = scale * (cosine - margin * torch.nn.functional.one_hot(target, len(designs)))
            loss = torch.nn.functional.cross_entropy(logits, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            correct += int((cosine.argmax(dim=1) == target).sum())
            seen += len(target)
            if steps % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{correct / seen:.2f}", step=steps)
                correct = seen = 0
            bar.n = min(bar.total, int(time.monotonic() - train_started))
            bar.refresh()
    model.eval().to("cpu", memory_format=torch.contiguous_format)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)
    checkpoint_sidecar(out).write_text(json.dumps({"model": model_name, "crop_to_implant": crop, "steps": steps,
                                                   "films_per_system": films_per_system, "minutes": minutes,
                                                   "device": device, "seed": seed,
                                                   "systems": [d.system for d in designs]}, indent=1))
    log.info("trained %s for %d steps (%.1f min on %s); wrote %s", model_name, steps, minutes, device, out)
    return out
