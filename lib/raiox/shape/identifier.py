"""Films in, implants out: decode each film, find and straighten its implants, measure them, embed their
crops, and compose one unit vector per implant (the embedding the catalog is searched with).

The crop's image model is the shape encoder (`RAIOX_CLIP_PRETRAINED=shipped`, or a checkpoint `raiox train`
wrote) or any open_clip model (`RAIOX_CLIP_MODEL` and a tag or checkpoint), which then embeds the canonical
crop instead of the whole film. With the shape encoder, the measured descriptor is part of the vector
(`RAIOX_DESCRIPTOR_WEIGHT` of the cosine) and its upside-down head overrules the canonicaliser's guess of
which end is the platform.
"""

from __future__ import annotations

import io
import logging
import math
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
from PIL import Image

from raiox.adapters.encoder import Encoder, EncoderUnavailable
from raiox.adapters.imaging import DEFAULT_MAX_PIXELS, ImageError, load_radiograph
from raiox.shape import network
from raiox.shape.attributes import ReadAttributes, read_attributes
from raiox.shape.canonical import (
    CROP_HEIGHT,
    CROP_WIDTH,
    FINDER_VERSION,
    Finding,
    canonical_crop,
    film_grey,
    find_implants,
)
from raiox.shape.descriptor import DESCRIPTOR_SIZE, ShapeDescriptor, describe

log = logging.getLogger(__name__)

EMBEDDING_DIM = 512  # the schema's vector(512)
SHIPPED = "shipped"
SHIPPED_SHAPE_ENCODER = Path(str(resources.files("raiox.shape") / "weights" / "shape-encoder.pt"))
# The descriptor's share of the cosine (RAIOX_DESCRIPTOR_WEIGHT's default): as the encoder learnt to read shape,
# a smaller share ranked better on every rendered held-out generator (docs/quality.md, "Ranking systems").
DEFAULT_DESCRIPTOR_WEIGHT = 0.05


@dataclass(frozen=True)
class IdentifiedImplant:
    """One implant on a film: where, its canonical crop, what was measured and read, and its vector."""

    position: int  # 0: the most implant-like on its film
    finding: Finding
    descriptor: ShapeDescriptor
    read: ReadAttributes | None  # the shape encoder's reading of the attributes (None for open_clip models)
    embedding: np.ndarray  # (512,) unit length
    turned: bool  # the encoder judged the canonicaliser's ends the wrong way round and turned the crop

    @property
    def found(self) -> bool:
        return self.finding.found

    def crop_png(self) -> bytes:
        out = io.BytesIO()
        Image.fromarray(self.finding.crop).save(out, format="PNG", optimize=False)
        return out.getvalue()

    def summary(self) -> dict[str, Any]:
        """What the review page shows for this implant (JSON-ready)."""
        f = self.finding
        return {
            "position": self.position, "found": f.found,
            "platform": [round(f.platform_xy[0], 1), round(f.platform_xy[1], 1)],
            "apex": [round(f.apex_xy[0], 1), round(f.apex_xy[1], 1)],
            "diameter_px": round(f.diameter_px, 1),
            "box": [[round(x, 1), round(y, 1)] for x, y in f.box],
            "measured": self.descriptor.summary(),
            "read": self.read.as_dict() if self.read else None,
            "turned": self.turned,
        }


@dataclass(frozen=True)
class IdentifiedFilm:
    width: int
    height: int
    implants: list[IdentifiedImplant]  # most implant-like first; one with found=False when none stood out

    @property
    def primary(self) -> IdentifiedImplant:
        return self.implants[0]


@dataclass(frozen=True)
class IdentifiedBatch:
    films: dict[int, IdentifiedFilm]
    errors: dict[int, ImageError] = field(default_factory=dict)


@dataclass(frozen=True)
class EncodedBatch:
    """One vector per film (its most implant-like implant) for the films that decoded; errors for the rest."""

    embeddings: dict[int, np.ndarray]
    errors: dict[int, ImageError]


class CropModel(Protocol):
    kind: str
    name: str

    def run(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """uint8 crops (n, H, W) → (embeddings (n, d), attribute heads or None, upside-down logits or None)."""
        ...

    def weights_digest(self) -> str: ...


class ShapeModel:
    """The shape encoder (raiox.shape.network) on canonical crops."""

    kind = "shape"

    def __init__(self, model: Any, name: str, device: str = "cpu") -> None:
        self.model = model.eval().to(device)  # what the model id's digest names
        self._net = network.for_inference(self.model) if device == "cpu" else self.model
        self.name = name
        self.device = device

    def run(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        import torch

        with torch.inference_mode():
            embedding, heads, upside = self._net(torch.from_numpy(np.ascontiguousarray(crops)).to(self.device))
        return embedding.float().cpu().numpy(), heads.float().cpu().numpy(), upside.float().cpu().numpy()

    def weights_digest(self) -> str:
        return network.digest(self.model)


class ClipCropModel:
    """An open_clip image tower on canonical crops, each letterboxed into the model's square input."""

    kind = "clip"

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.name = encoder.model_name

    def run(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        import torch

        pixels = [np.asarray(self.encoder._pixel_ops(Image.fromarray(c).convert("RGB")), dtype=np.uint8) for c in crops]
        return self.encoder.encode_tensors(torch.from_numpy(np.stack(pixels))), None, None

    def weights_digest(self) -> str:
        return self.encoder.model_id.split("@", 1)[-1]


class ShapeIdentifier:
    """Loaded once per process (`Services.encoder`); thread-safe for `identify` and `encode`."""

    def __init__(self, model: CropModel, *, descriptor_weight: float = DEFAULT_DESCRIPTOR_WEIGHT,
                 max_pixels: int = DEFAULT_MAX_PIXELS, batch_size: int = 64, max_implants: int = 4,
                 random_weights: bool = False) -> None:
        self.model = model
        self.descriptor_weight = descriptor_weight if model.kind == "shape" else 0.0
        self.max_pixels = max_pixels
        self.batch_size = batch_size
        self.max_implants = max_implants
        digest = model.weights_digest()[:16]
        prefix = "random-" if random_weights else ""
        finder = f"+find{FINDER_VERSION}"
        suffix = f"{finder}-d{self.descriptor_weight:.2f}" if model.kind == "shape" else f"{finder}-crop"
        self.model_name = model.name
        self.model_id = f"{model.name}@{prefix}{digest}{suffix}"
        self.device = str(getattr(model, "device", None) or getattr(getattr(model, "encoder", None), "device", "cpu"))
        self._pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 2), thread_name_prefix="raiox-film")

    # Loading -------------------------------------------------------------------------------------------------

    @classmethod
    def from_settings(cls, settings: Any) -> ShapeIdentifier:
        """The configured identifier: the shipped shape encoder unless RAIOX_CLIP_PRETRAINED names another."""
        return cls.load(settings.raiox_clip_model, settings.raiox_clip_pretrained, device=settings.raiox_device,
                        batch_size=settings.raiox_embed_batch_size, max_pixels=settings.raiox_max_image_pixels,
                        descriptor_weight=settings.raiox_descriptor_weight)

    @classmethod
    def load(cls, model_name: str, pretrained: str, *, device: str = "auto", batch_size: int = 64,
             max_pixels: int = DEFAULT_MAX_PIXELS,
             descriptor_weight: float = DEFAULT_DESCRIPTOR_WEIGHT) -> ShapeIdentifier:
        device = _device(device)
        weights = SHIPPED_SHAPE_ENCODER if pretrained.strip() in ("", SHIPPED) else Path(pretrained)
        if (pretrained.strip() in ("", SHIPPED) or weights.suffix == ".pt") and network.is_shape_checkpoint(weights):
            try:
                net, _, sidecar = network.load(weights)
            except Exception as exc:
                raise EncoderUnavailable(f"cannot load the shape encoder {weights} ({type(exc).__name__}: {exc}); "
                                            "set RAIOX_CLIP_PRETRAINED to another checkpoint") from exc
            name = str(sidecar.get("name") or "raiox-shape")
            if model_name and model_name != name and model_name in network.config_names():
                log.warning("RAIOX_CLIP_MODEL=%s ignored: %s is a %s shape encoder", model_name, weights, name)
            return cls(ShapeModel(net, name, device), descriptor_weight=descriptor_weight, max_pixels=max_pixels,
                       batch_size=batch_size)
        from raiox.adapters.encoder import resolve_weights

        if not weights.exists() and pretrained.strip() in ("", SHIPPED):
            raise EncoderUnavailable(f"the shipped shape encoder is missing ({weights}); reinstall Raiox or set "
                                     "RAIOX_CLIP_PRETRAINED to a checkpoint")
        architecture, resolved = resolve_weights(model_name, str(weights))
        encoder = Encoder.load(architecture, resolved, device=device, batch_size=batch_size, max_pixels=max_pixels)
        return cls(ClipCropModel(encoder), max_pixels=max_pixels, batch_size=batch_size)

    # Identifying ---------------------------------------------------------------------------------------------

    def _canonical(self, data: bytes, spacing: tuple[float, float] | None) -> tuple[np.ndarray, list[Finding],
                                                                                   list[ShapeDescriptor]]:
        """The film's grey levels (kept to crop again from the other end), its findings and their measures."""
        grey = film_grey(load_radiograph(data, max_pixels=self.max_pixels, grey=True))
        findings = find_implants(grey, limit=self.max_implants)
        mm = (spacing[0] + spacing[1]) / 2 if spacing else None
        return grey, findings, [describe(f.crop, diameter_px=f.diameter_px, mm_per_px=mm) for f in findings]

    def _canonical_or_error(self, data: bytes, spacing: tuple[float, float] | None) -> Any:
        try:
            return self._canonical(data, spacing)
        except ImageError as exc:
            return exc

    def identify(self, images: Sequence[bytes],
                 spacings: Sequence[tuple[float, float] | None] | None = None) -> IdentifiedBatch:
        """Every implant of every film (decoding and canonicalising on threads, the model in batches)."""
        spacings = list(spacings) if spacings is not None else [None] * len(images)
        prepared = list(self._pool.map(self._canonical_or_error, images, spacings))
        errors = {i: p for i, p in enumerate(prepared) if isinstance(p, ImageError)}
        good = [(i, p) for i, p in enumerate(prepared) if not isinstance(p, ImageError)]
        crops = [f.crop for _, (_, findings, _) in good for f in findings]
        embeddings, heads, upside = self._run(np.stack(crops) if crops else np.zeros((0, CROP_HEIGHT, CROP_WIDTH),
                                                                                     np.uint8))
        films: dict[int, IdentifiedFilm] = {}
        cursor = 0
        turn: list[tuple[int, int, np.ndarray, Finding]] = []  # (film, implant) the encoder wants turned
        results: dict[int, list[list[Any]]] = {}
        for i, (grey, findings, descriptors) in good:
            rows = []
            for k, (finding, descriptor) in enumerate(zip(findings, descriptors, strict=True)):
                head = heads[cursor] if heads is not None else None
                flip = upside is not None and finding.found and upside[cursor] > 0
                rows.append([finding, descriptor, head, embeddings[cursor], False])
                if flip:
                    turn.append((i, k, grey, finding))
                cursor += 1
            results[i] = rows
        if turn:  # the ends swapped: crop again from the other end, measure and embed that
            turned = [_turned(grey, finding) for _, _, grey, finding in turn]
            again, again_heads, _ = self._run(np.stack([f.crop for f in turned]))
            for n, ((i, k, _, _), finding) in enumerate(zip(turn, turned, strict=True)):
                mm = results[i][k][1].mm_per_px
                results[i][k] = [finding, describe(finding.crop, diameter_px=finding.diameter_px, mm_per_px=mm),
                                 again_heads[n] if again_heads is not None else None, again[n], True]
        for i, (grey, _, _) in good:
            implants = [IdentifiedImplant(k, finding, descriptor, read_attributes(head) if head is not None else None,
                                          self._compose(vector, descriptor), turned)
                        for k, (finding, descriptor, head, vector, turned) in enumerate(results[i])]
            films[i] = IdentifiedFilm(grey.shape[1], grey.shape[0], implants)
        return IdentifiedBatch(films, errors)

    def identify_in_chunks(self, images: Sequence[bytes], *,
                           on_chunk: Callable[[int], object] | None = None) -> IdentifiedBatch:
        """`identify` over many films, `batch_size` at a time so that only one chunk's films are decoded at once
        (positions as given); `on_chunk` hears how many films each chunk took."""
        films: dict[int, IdentifiedFilm] = {}
        errors: dict[int, ImageError] = {}
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            batch = self.identify(chunk)
            films.update({start + i: film for i, film in batch.films.items()})
            errors.update({start + i: error for i, error in batch.errors.items()})
            if on_chunk is not None:
                on_chunk(len(chunk))
        return IdentifiedBatch(films, errors)

    def _run(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        if len(crops) == 0:
            return np.zeros((0, 1), np.float32), None, None
        size = self.batch_size
        parts = [self.model.run(crops[start:start + size]) for start in range(0, len(crops), size)]
        embeddings = np.concatenate([p[0] for p in parts])
        heads = np.concatenate([p[1] for p in parts]) if parts[0][1] is not None else None
        upside = np.concatenate([p[2] for p in parts]) if parts[0][2] is not None else None
        return embeddings, heads, upside

    def _compose(self, vector: np.ndarray, descriptor: ShapeDescriptor) -> np.ndarray:
        """The searchable vector: the image model's embedding and (shape encoder only) the descriptor, each of
        unit length, weighted so that the cosine of two vectors is (1 - w) · cos(embeddings) + w · cos(descriptors)."""
        out = np.zeros(EMBEDDING_DIM, dtype=np.float32)
        vector = vector / max(float(np.linalg.norm(vector)), 1e-9)
        if self.model.kind != "shape":
            out[:len(vector)] = vector[:EMBEDDING_DIM]
            return out / max(float(np.linalg.norm(out)), 1e-9)
        w = self.descriptor_weight
        out[:len(vector)] = math.sqrt(1 - w) * vector
        if w > 0:
            d = descriptor.vector()
            out[len(vector):len(vector) + DESCRIPTOR_SIZE] = math.sqrt(w) * d / max(float(np.linalg.norm(d)), 1e-9)
        return out / max(float(np.linalg.norm(out)), 1e-9)

    def encode(self, images: Sequence[bytes]) -> EncodedBatch:
        """The most implant-like implant's vector per film (catalog references, evaluation)."""
        batch = self.identify(images)
        return EncodedBatch({i: film.primary.embedding for i, film in batch.films.items()}, batch.errors)

    def encode_one(self, data: bytes) -> np.ndarray:
        """One film → its primary implant's vector; raises ImageError when it does not decode."""
        result = self.encode([data])
        if 0 in result.errors:
            raise result.errors[0]
        return result.embeddings[0]


# A reference film stands for its first implant unless another agrees with the system's other reference films by
# more than this (agreement: the mean, over the other films, of the best cosine with any of their implants): the
# implant a lab labelled is not always the one in the film's middle (docs/quality.md, "Ranking systems").
REFERENCE_AGREEMENT_MARGIN = 0.2
System = TypeVar("System", bound=Hashable)  # how a caller names a system: a catalog implant id, a label


def reference_choices(films: Mapping[int, IdentifiedFilm], systems: Sequence[System],
                      stored: Mapping[System, Sequence[np.ndarray]] | None = None) -> dict[int, IdentifiedImplant]:
    """The implant each identified reference film stands for (`films` by position, `systems[position]` its
    system), each system's films weighed together and with its `stored` references (`reference_implants`)."""
    members: dict[System, list[int]] = {}
    for position in sorted(films):
        members.setdefault(systems[position], []).append(position)
    chosen = {}
    for system, positions in members.items():
        vectors = [np.stack([implant.embedding for implant in films[position].implants]) for position in positions]
        for position, k in zip(positions, reference_implants(vectors, (stored or {}).get(system, ())), strict=True):
            chosen[position] = films[position].implants[k]
    return chosen


def reference_implants(films: Sequence[np.ndarray], stored: Sequence[np.ndarray] = ()) -> list[int]:
    """For one system's reference films, each an (implants, d) array of vectors (first implant first), which
    implant each film stands for; `stored` are the system's references kept before (one vector each)."""
    chosen = []
    for k, vectors in enumerate(films):
        rest = [other for j, other in enumerate(films) if j != k] + [vector[None, :] for vector in stored]
        if len(vectors) < 2 or not rest:
            chosen.append(0)
            continue
        agreement = np.mean([(vectors @ other.T).max(axis=1) for other in rest], axis=0)
        best = int(np.argmax(agreement))
        chosen.append(best if agreement[best] > agreement[0] + REFERENCE_AGREEMENT_MARGIN else 0)
    return chosen


def _turned(grey: np.ndarray, finding: Finding) -> Finding:
    crop = canonical_crop(grey, finding.apex_xy, finding.platform_xy, finding.diameter_px)
    return Finding(crop, finding.apex_xy, finding.platform_xy, finding.diameter_px, finding.found, finding.score,
                   finding.orientation_margin)


def _device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
