"""Training the shape encoder on cached canonical crops (`raiox.tools.shape_data`): batches of many systems ×
several films each, each film at its own size, augmented as segmentation and exposure vary; cosine softmax
with a margin over the training systems plus supervised contrast within the batch, auxiliary heads that read
the shape attributes, and a head that tells an upside-down crop. Checkpoints every few minutes; resumes."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from raiox.shape import network
from raiox.shape.attributes import BINARIES, CLASSES, REGRESSIONS
from raiox.tools.shape_data import RENDERERS, load_cache

log = logging.getLogger(__name__)


@dataclass
class ShapeTraining:
    cache: Path
    out: Path
    config: str = "raiox-shape-s"
    steps: int = 12_000  # the learning-rate schedule's length; a run may stop earlier on time and resume
    minutes: float | None = None
    systems_per_batch: int = 24
    films_per_system: int = 4
    lr: float = 2e-3
    renderers: Sequence[str] = RENDERERS
    seed: int = 0
    checkpoint_minutes: float = 5.0
    val_systems: int = 120
    init: Path | None = None  # start from these weights (fine-tuning) instead of random ones
    log_every: int = 25
    extra: dict[str, Any] = field(default_factory=dict)


def augment(crops: Any, generator: Any) -> Any:
    """Crops (n, H, W) uint8 → float (n, H, W) in 0…255, varied as another film of the same implant would be:
    the canonicaliser's jitter (small tilt, scale, shift, mirror), exposure (gamma, contrast, brightness),
    blur and sensor noise."""
    import torch

    n, height, width = crops.shape
    device = crops.device

    def rand(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, device=device, generator=generator)

    x = crops.float().unsqueeze(1) / 255
    angle = rand(-0.07, 0.07)
    scale = rand(0.9, 1.1)
    aspect = rand(0.94, 1.06)
    mirror = torch.where(torch.rand(n, device=device, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=device)
    ratio = height / width  # grid coordinates are normalised per axis: rotate in pixels
    theta[:, 0, 0] = scale * aspect * torch.cos(angle) * mirror
    theta[:, 0, 1] = -scale * torch.sin(angle) * ratio
    theta[:, 1, 0] = scale * aspect * torch.sin(angle) / ratio * mirror
    theta[:, 1, 1] = scale * torch.cos(angle)
    theta[:, 0, 2] = rand(-0.08, 0.08)
    theta[:, 1, 2] = rand(-0.07, 0.07)
    grid = torch.nn.functional.affine_grid(theta, [n, 1, height, width], align_corners=False)
    x = torch.nn.functional.grid_sample(x, grid, padding_mode="border", align_corners=False)
    x = _vary_look(x, rand, generator)
    x = x.clamp(1e-4, 1) ** rand(0.6, 1.6).view(n, 1, 1, 1)
    x = (x - 0.5) * rand(0.75, 1.25).view(n, 1, 1, 1) + 0.5 + rand(-0.1, 0.1).view(n, 1, 1, 1)
    sigma = float(torch.rand(1, generator=generator)) * 1.3
    if sigma > 0.3:
        radius = int(math.ceil(2 * sigma))
        taps = torch.exp(-torch.arange(-radius, radius + 1, device=device, dtype=torch.float32) ** 2 / (2 * sigma**2))
        taps = taps / taps.sum()
        x = torch.nn.functional.conv2d(x, taps.view(1, 1, 1, -1), padding=(0, radius))
        x = torch.nn.functional.conv2d(x, taps.view(1, 1, -1, 1), padding=(radius, 0))
    x = x + rand(0.0, 0.05).view(n, 1, 1, 1) * torch.randn(x.shape, device=device, generator=generator)
    return (x.clamp(0, 1) * 255).squeeze(1)


def _vary_look(x: Any, rand: Any, generator: Any) -> Any:
    """Another film generator's look of the same crop: the metal saturated to white (a denser exposure, as
    film and most digital sensors show titanium; only the outline's threads remain), a sharpened edge, uneven
    bone density at two scales. Each applied to a random part of the batch, so the encoder learns the outline
    and profile that every look shares rather than one renderer's shading."""
    import torch

    n, _, height, width = x.shape
    device = x.device

    def some(share: float) -> Any:
        return (torch.rand(n, device=device, generator=generator) < share).float().view(n, 1, 1, 1)

    def smooth_noise(rows: int, cols: int) -> Any:
        noise = torch.randn(n, 1, rows, cols, device=device, generator=generator)
        return torch.nn.functional.interpolate(noise, size=(height, width), mode="bilinear", align_corners=False)

    # Saturate: the brightest 3–20 % of the crop goes to white, never the bone around it (well above the median).
    ordered = x.flatten(1).sort(dim=1).values
    rank = (rand(0.8, 0.97) * (ordered.shape[1] - 1)).long().view(n, 1)
    median = ordered[:, ordered.shape[1] // 2].view(n, 1)
    ceiling = torch.maximum(ordered.gather(1, rank), median + 0.25)
    ceiling = ceiling.clamp(max=1.0).view(n, 1, 1, 1)
    floor = rand(0.0, 0.25).view(n, 1, 1, 1) * ceiling
    saturated = ((x - floor) / (ceiling - floor)).clamp(0, 1)
    x = torch.lerp(x, saturated, some(0.45))
    # Sharpen: the edge overshoots as a processed digital film's does.
    blurred = torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)
    x = x + some(0.3) * rand(0.3, 1.5).view(n, 1, 1, 1) * (x - blurred)
    # Bone: slow density changes and fine trabecular texture, mostly where the crop is not metal.
    x = x + some(0.5) * rand(0.0, 0.15).view(n, 1, 1, 1) * smooth_noise(6, 2)
    x = x + some(0.5) * rand(0.0, 0.08).view(n, 1, 1, 1) * smooth_noise(64, 16) * (1 - x).clamp(0, 1)
    x = torch.lerp(x, _tone_curve(x.clamp(0, 1), generator), some(0.4))
    return x.clamp(0, 1)


def _tone_curve(x: Any, generator: Any, knots: int = 6) -> Any:
    """Each crop's grey levels through its own random rising curve (piecewise linear, `knots` pieces): film,
    sensor and processing each map dose to grey in their own way, beyond what gamma and contrast vary."""
    import torch

    n = x.shape[0]
    steps = 0.25 + torch.rand(n, knots, device=x.device, generator=generator)
    levels = torch.cat([torch.zeros(n, 1, device=x.device), steps.cumsum(1)], 1)
    levels = levels / levels[:, -1:]
    flat = x.flatten(1) * knots
    piece = flat.floor().clamp(max=knots - 1).long()
    low, high = levels.gather(1, piece), levels.gather(1, piece + 1)
    return (low + (flat - piece) * (high - low)).view_as(x)


def _losses(model: Any, centres: Any, batch: Any, labels: Any, targets: Any,
            upside: Any) -> tuple[Any, dict[str, float]]:
    import torch
    import torch.nn.functional as F

    n = len(labels)
    embedding, heads, flip_logits = model(torch.cat([batch, upside]))
    embedding, heads = embedding[:n], heads[:n]
    cosine = embedding @ F.normalize(centres, dim=-1).T
    margin = 0.25 * F.one_hot(labels, centres.shape[0])
    cosface = F.cross_entropy(24.0 * (cosine - margin), labels)
    supcon = _supcon(embedding, labels)
    r, b = len(REGRESSIONS), len(BINARIES)
    regression = F.smooth_l1_loss(heads[:, :r] * 5, targets[:, :r] * 5)
    binary = F.binary_cross_entropy_with_logits(heads[:, r:r + b], targets[:, r:r + b])
    position = r + b
    classes: torch.Tensor | float = 0.0
    for k, options in enumerate(CLASSES.values()):
        classes = classes + F.cross_entropy(heads[:, position:position + len(options)], targets[:, r + b + k].long())
        position += len(options)
    flipped = torch.cat([torch.zeros(n, device=batch.device), torch.ones(len(upside), device=batch.device)])
    orientation = F.binary_cross_entropy_with_logits(flip_logits, flipped)
    attributes = regression + binary + classes / len(CLASSES)
    total = cosface + supcon + 0.5 * attributes + 0.3 * orientation
    right = float((cosine.argmax(1) == labels).float().mean())
    parts = {"loss": total, "cosface": cosface, "supcon": supcon, "attributes": attributes, "orientation": orientation}
    return total, {**{k: float(v.detach()) for k, v in parts.items()}, "train_top1": right}


def renderer_balance(renderers: np.ndarray) -> np.ndarray:
    """Each film's chance of being drawn among one system's films: every generator in the cache equally likely,
    however many films each rendered of the system (a cache that adds films of one generator does not drown
    the other)."""
    kinds, inverse, counts = np.unique(renderers, return_inverse=True, return_counts=True)
    chance = 1.0 / (len(kinds) * counts[inverse])
    return np.asarray(chance / chance.sum(), dtype=np.float64)


def _schedule(step: int, steps: int, warmup: int = 300) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))


def validate(model: Any, crops: np.ndarray, upside: np.ndarray, systems: np.ndarray, *,
             references: int = 2) -> dict[str, float]:
    """Retrieval among held-out systems (their first `references` films are the catalog, the rest queries) and
    how often the upside-down head is right."""
    import torch

    model.eval()
    with torch.inference_mode():
        vectors, flips = [], []
        for start in range(0, len(crops), 256):
            e, _, f = model(torch.from_numpy(np.concatenate([crops[start:start + 256], upside[start:start + 256]])))
            half = len(crops[start:start + 256])
            vectors.append(e[:half].numpy())
            flips.append(np.concatenate([f[:half].numpy() < 0, f[half:].numpy() > 0]))
    model.train()
    embeddings = np.concatenate(vectors)
    is_reference = np.zeros(len(systems), dtype=bool)
    for system in np.unique(systems):
        is_reference[np.flatnonzero(systems == system)[:references]] = True
    refs, ref_systems = embeddings[is_reference], systems[is_reference]
    queries, truths = embeddings[~is_reference], systems[~is_reference]
    similarity = queries @ refs.T
    top1 = top3 = 0
    for row, truth in zip(similarity, truths, strict=True):
        best: dict[int, float] = {}
        for value, system in zip(row, ref_systems, strict=True):
            best[int(system)] = max(best.get(int(system), -2.0), float(value))
        ranked = sorted(best, key=lambda s: -best[s])
        top1 += ranked[0] == truth
        top3 += truth in ranked[:3]
    total = max(1, len(truths))
    return {"val_top1": top1 / total, "val_top3": top3 / total,
            "val_orientation": float(np.concatenate(flips).mean())}


def train_shape(run: ShapeTraining, *, progress: bool = True) -> dict[str, Any]:
    """Train (or go on training) the shape encoder; writes `run.out` (weights and sidecar) at every checkpoint
    and `run.out` + `.ckpt` (everything needed to resume). Returns the last log line."""
    import torch

    torch.set_num_threads(os.cpu_count() or 2)
    torch.manual_seed(run.seed)
    data = load_cache(run.cache, run.renderers)
    systems = data["systems"]
    names = sorted(set(systems.tolist()))
    val = set(names[-run.val_systems:]) if run.val_systems else set()
    is_val = np.isin(systems, list(val))
    train_index = np.flatnonzero(~is_val)
    classes = {system: k for k, system in enumerate(sorted(set(systems[train_index].tolist())))}
    labels_all = np.asarray([classes.get(int(s), -1) for s in systems])
    rows_of_class: dict[int, list[int]] = {}
    for position in train_index:
        rows_of_class.setdefault(int(labels_all[position]), []).append(int(position))
    usable = [c for c, rows in rows_of_class.items() if len(rows) >= 2]
    by_class = {c: np.asarray(rows_of_class[c]) for c in usable}
    chances = {c: renderer_balance(data["renderer"][rows]) for c, rows in by_class.items()}
    crops = torch.from_numpy(data["crops"])
    upside = torch.from_numpy(data["upside_down"])
    attributes = torch.from_numpy(data["attributes"])
    config = network.ShapeNetConfig.named(run.config)
    model = network.build(config)
    if run.init is not None:
        initial, _, _ = network.load(run.init)
        model.load_state_dict(initial.state_dict())
    model = model.to(memory_format=torch.channels_last).train()
    centres = torch.nn.Parameter(torch.nn.functional.normalize(torch.randn(len(classes), config.embed_dim), dim=-1))
    optimizer = torch.optim.AdamW([{"params": model.parameters()}, {"params": [centres], "lr": run.lr * 5}],
                                  lr=run.lr, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(run.seed)
    rng = np.random.default_rng(run.seed)
    checkpoint = run.out.with_name(run.out.name + ".ckpt")
    step, history = 0, []
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        centres.data.copy_(state["centres"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        rng = np.random.default_rng(state["numpy_seed"])
        step, history = state["step"], state.get("history", [])
        log.info("resuming at step %d of %d", step, run.steps)
    base = [group["lr"] for group in optimizer.param_groups]
    started = time.monotonic()
    deadline = started + run.minutes * 60 if run.minutes else math.inf
    last_checkpoint = started
    window: list[dict[str, float]] = []

    def save_checkpoint() -> dict[str, Any]:
        metrics = validate(model, data["crops"][is_val], data["upside_down"][is_val], systems[is_val]) if val else {}
        line = {"step": step, **{k: round(float(np.mean([w[k] for w in window])), 4) for k in window[0]},
                **{k: round(v, 4) for k, v in metrics.items()}} if window else {"step": step, **metrics}
        history.append(line)
        meta = {"steps": step, "schedule_steps": run.steps, "films": int(len(train_index)), "systems": len(classes),
                "renderers": list(run.renderers), "seed": run.seed, "history": history[-50:], **run.extra}
        network.save(model, config, run.out, meta={"name": run.config, **meta})
        torch.save({"model": model.state_dict(), "centres": centres.detach(), "optimizer": optimizer.state_dict(),
                    "generator": generator.get_state(), "numpy_seed": int(rng.integers(0, 2**31 - 1)),
                    "step": step, "history": history, "run": {k: str(v) for k, v in asdict(run).items()}},
                   checkpoint.with_suffix(".tmp"))
        checkpoint.with_suffix(".tmp").replace(checkpoint)
        print(json.dumps(line), flush=True)
        return line

    line: dict[str, Any] = {}
    class_ids = np.asarray(list(by_class))
    first_step, timer = step, time.monotonic()
    while step < run.steps and time.monotonic() < deadline:
        factor = _schedule(step, run.steps)
        for group, lr in zip(optimizer.param_groups, base, strict=True):
            group["lr"] = lr * factor
        chosen = rng.choice(class_ids, size=min(run.systems_per_batch, len(class_ids)), replace=False)
        index = np.concatenate([rng.choice(by_class[c], size=run.films_per_system, p=chances[c],
                                           replace=len(by_class[c]) < run.films_per_system) for c in chosen])
        batch = augment(crops[index], generator).contiguous()
        flip_index = index[rng.choice(len(index), size=len(index) // 4, replace=False)]
        flipped = augment(upside[flip_index], generator)
        labels = torch.from_numpy(labels_all[index]).long()
        loss, parts = _losses(model, centres, batch, labels, attributes[index], flipped)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        window.append(parts)
        if progress and step % run.log_every == 0:
            recent = {k: round(float(np.mean([w[k] for w in window[-run.log_every:]])), 3) for k in parts}
            print(json.dumps({"step": step, "lr": round(base[0] * factor, 6), **recent,
                              "s_per_step": round((time.monotonic() - timer) / max(1, step - first_step), 2)}),
                  flush=True)
        if time.monotonic() - last_checkpoint > run.checkpoint_minutes * 60:
            line = save_checkpoint()
            window = []
            last_checkpoint = time.monotonic()
    if window or not line:
        line = save_checkpoint()
    return line


def average_checkpoints(paths: Sequence[Path], out: Path) -> dict[str, Any]:
    """One encoder whose weights are the mean of several of one architecture (a "model soup": runs trained on from
    one start stay close enough to average, and the mean can carry over to unseen looks better than either, as
    run 8's did in docs/quality.md). Returns the sidecar written beside `out`."""
    models = [network.load(path) for path in paths]
    config = models[0][1]
    if any(other != config for _, other, _ in models[1:]):
        raise ValueError("the checkpoints to average are of different architectures")
    model = models[0][0]
    model.load_state_dict(_weighted([m.state_dict() for m, _, _ in models], [1 / len(models)] * len(models)))
    kept = ("steps", "schedule_steps", "films", "systems", "renderers", "history")
    meta = {"name": models[0][2].get("name", "raiox-shape"), "averaged": [
        {"path": path.name, **{k: sidecar[k] for k in kept if k in sidecar}}
        for path, (_, _, sidecar) in zip(paths, models, strict=True)]}
    network.save(model, config, out, meta=meta)
    return meta


def _weighted(states: Sequence[dict[str, Any]], shares: Sequence[float]) -> dict[str, Any]:
    """Weights of one architecture combined, share by share; counters (not floating point) kept from the first."""
    return {key: sum(share * state[key] for state, share in zip(states, shares, strict=True))
            if value.is_floating_point() else value for key, value in states[0].items()}


# Fine-tuning on a lab's own films ---------------------------------------------------------------------------


@dataclass
class FineTuneReport:
    out: Path
    films: int
    systems: int
    steps: int
    seconds: float
    held_out: dict[str, dict[str, float]] = field(default_factory=dict)  # before / after → top1, top3, queries

    @property
    def harmed(self) -> bool:
        """Whether the held-out films matched worse after training than before (top-1 first, then top-3)."""
        before, after = self.held_out.get("before"), self.held_out.get("after")
        return before is not None and after is not None and (after["top1"], after["top3"]) < (before["top1"],
                                                                                               before["top3"])


@dataclass
class _Crops:
    crops: np.ndarray  # (n, H, W) uint8
    descriptors: np.ndarray  # (n, DESCRIPTOR_SIZE)
    labels: np.ndarray
    names: list[str]

    def subset(self, keep: np.ndarray) -> _Crops:
        return _Crops(self.crops[keep], self.descriptors[keep], self.labels[keep], self.names)


def _lab_crops(identifier: Any, films: Sequence[tuple[str, bytes]], progress: bool) -> _Crops:
    """The implant each film stands for, canonicalised as matching sees it and chosen as a catalog reference's
    is (`reference_choices`: the first implant unless the system's other films agree with another); films that
    do not decode are skipped with a warning."""
    from tqdm import tqdm

    from raiox.shape.identifier import reference_choices

    names = sorted({label for label, _ in films})
    index = {name: number for number, name in enumerate(names)}
    with tqdm(total=len(films), desc="finding implants", unit="film", disable=not progress) as bar:
        batch = identifier.identify_in_chunks([data for _, data in films], on_chunk=bar.update)
    for position, error in sorted(batch.errors.items()):
        log.warning("skipping a film of %s: %s", films[position][0], error)
    if not batch.films:
        raise ValueError("no film decodes")
    chosen = reference_choices(batch.films, [label for label, _ in films])
    positions = sorted(chosen)
    return _Crops(np.stack([chosen[p].finding.crop for p in positions]),
                  np.stack([chosen[p].descriptor.vector() for p in positions]),
                  np.asarray([index[films[p][0]] for p in positions], dtype=np.int64), names)


def _split(films: _Crops, fraction: float, seed: int) -> tuple[_Crops, _Crops | None]:
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


def _vectors(model: Any, films: _Crops, descriptor_weight: float) -> np.ndarray:
    """What matching compares: the embedding and the descriptor, weighted (ShapeIdentifier._compose)."""
    import torch

    model.eval()
    with torch.inference_mode():
        parts = [model(torch.from_numpy(films.crops[i:i + 128]))[0].numpy() for i in range(0, len(films.crops), 128)]
    embedding = np.concatenate(parts)
    descriptors = films.descriptors / np.linalg.norm(films.descriptors, axis=1, keepdims=True).clip(1e-9)
    return np.concatenate([math.sqrt(1 - descriptor_weight) * embedding, math.sqrt(descriptor_weight) * descriptors],
                          axis=1)


def _retrieval(model: Any, references: _Crops, queries: _Crops, descriptor_weight: float) -> dict[str, float]:
    from raiox.tools.quality import rank_systems

    refs = _vectors(model, references, descriptor_weight)
    labels = [references.names[n] for n in references.labels]
    top1 = top3 = 0
    for vector, label in zip(_vectors(model, queries, descriptor_weight), queries.labels.tolist(), strict=True):
        ranked = [name for name, _ in rank_systems(vector, refs, labels)[:3]]
        top1 += ranked[0] == queries.names[label]
        top3 += queries.names[label] in ranked
    return {"top1": round(top1 / len(queries.labels), 4), "top3": round(top3 / len(queries.labels), 4),
            "queries": len(queries.labels)}


# Measured on a lab's films (docs/quality.md, "Learning the lab's own films"): fine-tuning all the way at 1e-3
# forgot what carries across sizes; a fifth of that rate, the batch statistics kept and the result 30 % of the
# way from the starting encoder to the trained one kept the new films' top-1 within a point of where it was.
FINE_TUNING_LR = 2e-4
FINE_TUNING_MIX = 0.3


def fine_tune_on_films(films: Sequence[tuple[str, bytes]], out: Path, *, start: Path, source: str,
                       minutes: float = 8.0, held_out: float = 0.25, lr: float = FINE_TUNING_LR,
                       mix: float = FINE_TUNING_MIX, seed: int = 0, descriptor_weight: float = 0.15,
                       progress: bool = True) -> FineTuneReport:
    """Fine-tune the shape encoder `start` on a lab's labelled films within `minutes` (finding the implants
    included): cosine softmax with a margin, each system's class starting at its films' mean embedding, plus
    supervised contrast, with the crops augmented as in training and the batch-norm statistics kept; the result
    is `mix` of the way from `start` to the trained weights. `held_out` of each system's films are left out and
    matched against the rest before and after, as a new film is matched against the catalog."""
    import torch

    from raiox.shape.identifier import ShapeIdentifier, ShapeModel

    torch.set_num_threads(os.cpu_count() or 2)
    started = time.monotonic()
    deadline = started + minutes * 60
    model, config, sidecar = network.load(start)
    identifier = ShapeIdentifier(ShapeModel(model, str(sidecar.get("name", "raiox-shape"))),
                                 descriptor_weight=descriptor_weight)
    prepared = _lab_crops(identifier, films, progress)
    if len(prepared.names) < 2:
        raise ValueError(f"training needs films of at least 2 systems; found {len(prepared.names)}")
    training, queries = _split(prepared, held_out, seed)
    report = FineTuneReport(out, len(training.labels), len(prepared.names), 0, 0.0)
    if queries is not None:
        report.held_out["before"] = _retrieval(model, training, queries, descriptor_weight)
    initial = {name: value.clone() for name, value in model.state_dict().items()}
    crops = torch.from_numpy(training.crops)
    labels = torch.from_numpy(training.labels)
    classes = len(prepared.names)
    with torch.no_grad():
        model.eval()
        embedded = torch.cat([model(crops[i:i + 128])[0] for i in range(0, len(crops), 128)])
        sums = torch.zeros(classes, config.embed_dim).index_add_(0, labels, embedded)
    centres = torch.nn.Parameter(torch.nn.functional.normalize(sums, dim=-1))
    optimizer = torch.optim.AdamW([{"params": model.parameters()}, {"params": [centres], "lr": lr * 5}], lr=lr,
                                  weight_decay=1e-4)
    base = [group["lr"] for group in optimizer.param_groups]
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    by_class = {c: np.flatnonzero(training.labels == c) for c in np.unique(training.labels)}
    class_ids = np.asarray(list(by_class))
    per_class, batch_classes = 4, min(24, len(class_ids))
    budget = max(1.0, deadline - time.monotonic())
    begun = time.monotonic()
    steps = 0
    _train_all_but_batch_statistics(model)
    while steps == 0 or time.monotonic() < deadline:
        done = min(1.0, (time.monotonic() - begun) / budget)
        factor = min(1.0, done / 0.05) * 0.5 * (1 + math.cos(math.pi * done))
        for group, rate in zip(optimizer.param_groups, base, strict=True):
            group["lr"] = rate * factor
        chosen = rng.choice(class_ids, size=batch_classes, replace=False)
        index = np.concatenate([rng.choice(by_class[c], size=per_class, replace=len(by_class[c]) < per_class)
                                for c in chosen])
        batch = augment(crops[index], generator).contiguous()
        target = labels[index]
        embedding, _, _ = model(batch)
        cosine = embedding @ torch.nn.functional.normalize(centres, dim=-1).T
        margin = 0.2 * torch.nn.functional.one_hot(target, classes)
        loss = torch.nn.functional.cross_entropy(20.0 * (cosine - margin), target) + _supcon(embedding, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
        if progress and steps % 20 == 0:
            print(json.dumps({"step": steps, "loss": round(float(loss), 3),
                              "minutes": round((time.monotonic() - started) / 60, 1)}), flush=True)
    model.eval()
    model.load_state_dict(_weighted([model.state_dict(), initial], [mix, 1 - mix]))
    report.steps = steps
    if queries is not None:
        report.held_out["after"] = _retrieval(model, training, queries, descriptor_weight)
    report.seconds = time.monotonic() - started
    network.save(model, config, out, meta={
        "name": str(sidecar.get("name", "raiox-shape")), "started_from": str(start), "source": source,
        "steps": steps, "minutes": minutes, "lr": lr, "mix": mix, "seed": seed, "films": report.films,
        "held_out": report.held_out, "systems": prepared.names if classes <= 200 else classes})
    return report


def _train_all_but_batch_statistics(model: Any) -> None:
    """Training mode with each batch-norm layer's running statistics kept: a lab's few films per system are not
    the films the encoder learnt them on, and the statistics they would leave behind move every embedding."""
    import torch

    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


def _supcon(embedding: Any, labels: Any, temperature: float = 0.1) -> Any:
    """Supervised contrast within a batch: each film pulled towards its system's other films."""
    import torch

    n = len(labels)
    eye = torch.eye(n)
    logits = embedding @ embedding.T / temperature - 1e9 * eye
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]).float() - eye
    return (-(log_prob * positives).sum(1) / positives.sum(1).clamp(min=1)).mean()
