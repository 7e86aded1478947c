"""The open_clip image encoder: loaded once per process, batched, L2-normalised 512-d output with a model id."""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from raiox.imaging import DEFAULT_MAX_PIXELS, ImageError, load_radiograph
from raiox.settings import Settings

log = logging.getLogger(__name__)

EMBEDDING_DIM = 512  # the schema's vector(512)


class EncoderUnavailable(RuntimeError):
    """The configured model or its weights cannot be loaded; the message names the setting to change."""


def _register_model_configs() -> None:
    import open_clip

    open_clip.add_model_config(Path(str(resources.files("raiox") / "model_configs")))


def weights_digest(state_dict: dict[str, Any]) -> str:
    """sha256 over parameter names and bytes: the same weights give the same digest wherever they load."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().to("cpu").contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class EncodedBatch:
    """Embeddings for the images that decoded; errors (by input position) for those that did not."""

    embeddings: dict[int, np.ndarray]
    errors: dict[int, ImageError]


class Encoder:
    """An open_clip image tower ready for inference; a process keeps one (`Services.encoder`)."""

    def __init__(self, model: Any, preprocess: Any, *, model_name: str, model_id: str, device: str,
                 batch_size: int = 32, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.model = model
        self.preprocess = preprocess
        self.model_name = model_name
        self.model_id = model_id
        self.device = device
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.image_size = int(model.visual.image_size[0] if isinstance(model.visual.image_size, tuple)
                              else model.visual.image_size)
        # Decoding runs beside the model (PIL releases the GIL); a GPU box has the cores to spare.
        self._decode_pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 2),
                                               thread_name_prefix="raiox-decode")

    @classmethod
    def load(cls, model_name: str, pretrained: str | None, *, device: str = "auto", batch_size: int = 32,
             max_pixels: int = DEFAULT_MAX_PIXELS) -> Encoder:
        """`pretrained` is an open_clip tag (e.g. laion2b_s34b_b79k) or a checkpoint path; None means
        random weights, which only benchmarks may ask for (their model id says `random`)."""
        import open_clip
        import torch

        _register_model_configs()
        device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        if model_name not in open_clip.list_models():
            raise EncoderUnavailable(
                f"unknown open_clip model {model_name!r}: set RAIOX_CLIP_MODEL to one of open_clip.list_models()"
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # QuickGELU notes and the like
                model, _, preprocess = open_clip.create_model_and_transforms(
                    model_name,
                    pretrained=pretrained,
                    require_pretrained=pretrained is not None,
                    device="cpu",
                    # Letterbox instead of centre-crop: an implant near the film's edge must stay in view.
                    image_resize_mode="longest",
                )
        except Exception as exc:
            raise EncoderUnavailable(
                f"cannot load weights {pretrained!r} for open_clip model {model_name!r} "
                f"({type(exc).__name__}: {exc}); set RAIOX_CLIP_PRETRAINED to a pretrained tag that can be "
                "downloaded here or to a local checkpoint file"
            ) from exc
        output_dim = getattr(model.visual, "output_dim", None)
        if output_dim != EMBEDDING_DIM:
            raise EncoderUnavailable(
                f"open_clip model {model_name!r} embeds to {output_dim} dimensions, the catalog stores "
                f"{EMBEDDING_DIM}: set RAIOX_CLIP_MODEL to a {EMBEDDING_DIM}-d model such as ViT-B-32"
            )
        digest = weights_digest(model.state_dict())[:16]
        model_id = f"{model_name}@{digest}" if pretrained is not None else f"{model_name}@random-{digest}"
        model.eval().to(device)
        log.info("loaded open_clip %s (weights %s) on %s as %s", model_name, pretrained, device, model_id)
        return cls(model, preprocess, model_name=model_name, model_id=model_id, device=device,
                   batch_size=batch_size, max_pixels=max_pixels)

    @classmethod
    def from_settings(cls, settings: Settings) -> Encoder:
        return cls.load(
            settings.raiox_clip_model,
            settings.raiox_clip_pretrained,
            device=settings.raiox_device,
            batch_size=settings.raiox_embed_batch_size,
            max_pixels=settings.raiox_max_image_pixels,
        )

    def prepare(self, data: bytes) -> Any:
        """Bytes → the model's input tensor (decode, orient, window, letterbox, normalise)."""
        image = load_radiograph(data, max_pixels=self.max_pixels, draft_size=self.image_size)
        return self.preprocess(image)

    def encode_tensors(self, batch: Any) -> np.ndarray:
        """A stacked input batch → (n, 512) float32, each row of unit length."""
        import torch

        with torch.inference_mode():
            batch = batch.to(self.device, non_blocking=True)
            if self.device.startswith("cuda"):
                with torch.autocast("cuda", dtype=torch.float16):
                    features = self.model.encode_image(batch)
            else:
                features = self.model.encode_image(batch)
            features = torch.nn.functional.normalize(features.float(), dim=-1)
        return features.cpu().numpy().astype(np.float32)

    def _prepare_or_error(self, data: bytes) -> Any:
        try:
            return self.prepare(data)
        except ImageError as exc:
            return exc

    def encode(self, images: Sequence[bytes]) -> EncodedBatch:
        """Encode many images in batches; decoding of the next batch overlaps the model's current one."""
        import torch

        embeddings: dict[int, np.ndarray] = {}
        errors: dict[int, ImageError] = {}
        chunks = [range(start, min(start + self.batch_size, len(images)))
                  for start in range(0, len(images), self.batch_size)]
        submit = lambda chunk: [self._decode_pool.submit(self._prepare_or_error, images[i]) for i in chunk]  # noqa: E731
        pending = submit(chunks[0]) if chunks else []
        for number, chunk in enumerate(chunks):
            prepared = [future.result() for future in pending]
            pending = submit(chunks[number + 1]) if number + 1 < len(chunks) else []
            good = [(i, t) for i, t in zip(chunk, prepared, strict=True) if not isinstance(t, ImageError)]
            errors.update((i, t) for i, t in zip(chunk, prepared, strict=True) if isinstance(t, ImageError))
            if good:
                vectors = self.encode_tensors(torch.stack([tensor for _, tensor in good]))
                embeddings.update((i, vector) for (i, _), vector in zip(good, vectors, strict=True))
        return EncodedBatch(embeddings, errors)

    def encode_one(self, data: bytes) -> np.ndarray:
        """One image → its embedding; raises ImageError when it does not decode."""
        result = self.encode([data])
        if 0 in result.errors:
            raise result.errors[0]
        return result.embeddings[0]
