"""The open_clip image encoder: loaded once, batched, L2-normalised 512-d output with a model id. Raiox embeds
implant crops with it when RAIOX_CLIP_MODEL names an open_clip model (raiox.shape.identifier); whole films only
as a baseline in evaluation."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from raiox.adapters.gpu_decode import device_decoder_for
from raiox.adapters.imaging import DEFAULT_MAX_PIXELS, ImageError, load_radiograph

log = logging.getLogger(__name__)

EMBEDDING_DIM = 512  # the schema's vector(512)


def _split_preprocess(preprocess: Any) -> tuple[Any, tuple[float, ...], tuple[float, ...]]:
    """open_clip's transform split into its PIL steps (resize, pad, mode) and Normalize's mean and std."""
    from torchvision.transforms import Compose, Normalize

    steps = list(preprocess.transforms)
    normalize = steps[-1]
    if not isinstance(normalize, Normalize) or "ToTensor" not in type(steps[-2]).__name__:
        raise EncoderUnavailable(f"unexpected open_clip preprocessing {preprocess}: expected … ToTensor, Normalize")
    return Compose(steps[:-2]), tuple(normalize.mean), tuple(normalize.std)


class EncoderUnavailable(RuntimeError):
    """The configured model or its weights cannot be loaded; the message names the setting to change."""


def _register_model_configs() -> None:
    import open_clip

    open_clip.add_model_config(Path(str(resources.files("raiox.adapters") / "model_configs")))


def checkpoint_sidecar(checkpoint: Path) -> Path:
    """`<checkpoint>.json`: the architecture (`model`) the checkpoint was trained as."""
    return checkpoint.with_name(checkpoint.name + ".json")


def resolve_weights(model_name: str, pretrained: str) -> tuple[str, str]:
    """(architecture, weights) to load for RAIOX_CLIP_MODEL and RAIOX_CLIP_PRETRAINED: a checkpoint with a
    sidecar brings its own architecture (the sidecar's `model`, which wins over RAIOX_CLIP_MODEL, with a warning
    when they differ); otherwise (an open_clip tag, a checkpoint without a sidecar) RAIOX_CLIP_MODEL names it and
    must be set."""
    weights = pretrained
    sidecar = checkpoint_sidecar(Path(weights))
    named = ""
    if sidecar.is_file():
        try:
            named = str(json.loads(sidecar.read_text()).get("model") or "")
        except (OSError, ValueError, AttributeError) as exc:
            raise EncoderUnavailable(f"cannot read {sidecar} ({exc}); fix or remove it, or set RAIOX_CLIP_MODEL "
                                     "and remove the sidecar") from None
    if named:
        if model_name and model_name != named:
            log.warning("RAIOX_CLIP_MODEL=%s ignored: the checkpoint %s was trained as %s (its sidecar says so)",
                        model_name, weights, named)
        return named, weights
    if not model_name:
        raise EncoderUnavailable(f"RAIOX_CLIP_PRETRAINED={pretrained!r} names no architecture (an open_clip tag, "
                                 "or a checkpoint without a .json sidecar): set RAIOX_CLIP_MODEL too")
    return model_name, weights


def random_model(model_name: str, *, seed: int = 0) -> Any:
    """An open_clip model with seeded random weights: baselines and speed benchmarks, never a trained model."""
    import open_clip
    import torch

    _register_model_configs()
    torch.manual_seed(seed)
    return open_clip.create_model(model_name)


def random_checkpoint(model_name: str, path: Path, *, seed: int = 0) -> Path:
    """random_model's weights written where a process that only takes a checkpoint path can load them."""
    import torch

    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(random_model(model_name, seed=seed).state_dict(), path)
    return path


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
        import torch  # here, not at module level: importing raiox must not pull torch into every function

        self._pixel_ops, mean, std = _split_preprocess(preprocess)
        self._mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self._std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255
        self.model_name = model_name
        self.model_id = model_id
        self.device = device
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.image_size = int(model.visual.image_size[0] if isinstance(model.visual.image_size, tuple)
                              else model.visual.image_size)
        # Decoding runs beside the model on every core (PIL releases the GIL): on a GPU box it is the bottleneck.
        self._decode_pool = ThreadPoolExecutor(max_workers=min(32, os.cpu_count() or 2),
                                               thread_name_prefix="raiox-decode")
        # On CUDA, baseline/progressive 8-bit JPEGs decode on the GPU instead (None: all on the CPU).
        self.device_decoder = device_decoder_for(device, self._pixel_ops, self.image_size, max_pixels=max_pixels)

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
                model = open_clip.create_model(model_name, pretrained=pretrained,
                                               require_pretrained=pretrained is not None, device="cpu")
        except Exception as exc:
            raise EncoderUnavailable(
                f"cannot load weights {pretrained!r} for open_clip model {model_name!r} "
                f"({type(exc).__name__}: {exc}); set RAIOX_CLIP_PRETRAINED to a pretrained tag that can be "
                "downloaded here or to a local checkpoint file"
            ) from exc
        return cls.from_model(model, model_name=model_name, random_weights=pretrained is None, device=device,
                              batch_size=batch_size, max_pixels=max_pixels)

    @classmethod
    def from_model(cls, model: Any, *, model_name: str, random_weights: bool = False, device: str = "cpu",
                   batch_size: int = 32, max_pixels: int = DEFAULT_MAX_PIXELS) -> Encoder:
        """Wrap an open_clip model. Its id names the architecture and a hash of the weights."""
        import open_clip

        output_dim = getattr(model.visual, "output_dim", None)
        if output_dim != EMBEDDING_DIM:
            raise EncoderUnavailable(
                f"open_clip model {model_name!r} embeds to {output_dim} dimensions, the catalog stores "
                f"{EMBEDDING_DIM}: set RAIOX_CLIP_MODEL to a {EMBEDDING_DIM}-d model such as ViT-B-32"
            )
        cfg = open_clip.get_model_preprocess_cfg(model)
        # Letterbox instead of centre-crop: an implant near the film's edge must stay in view.
        preprocess = open_clip.image_transform(cfg["size"], is_train=False, mean=cfg["mean"], std=cfg["std"],
                                               resize_mode="longest", interpolation=cfg["interpolation"])
        digest = weights_digest(model.state_dict())[:16]
        model_id = f"{model_name}@{'random-' if random_weights else ''}{digest}"
        model.eval().to(device)
        log.info("open_clip %s on %s as %s", model_name, device, model_id)
        return cls(model, preprocess, model_name=model_name, model_id=model_id, device=device,
                   batch_size=batch_size, max_pixels=max_pixels)

    def prepare(self, data: bytes) -> np.ndarray:
        """Bytes → letterboxed uint8 pixels (H, W, 3): decode, orient, window, resize. Pure PIL and numpy, so
        it runs on decode threads without touching torch's thread pool; normalising happens per batch."""
        image = load_radiograph(data, max_pixels=self.max_pixels, draft_size=self.image_size)
        return np.array(self._pixel_ops(image), dtype=np.uint8)  # a writable copy, as torch.from_numpy wants

    def normalise(self, pixels: Any) -> Any:
        """uint8 (n, H, W, 3) → the model's float input (n, 3, H, W), normalised on the device as open_clip's
        Normalize would."""
        batch = pixels.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        return (batch - self._mean) / self._std

    def encode_tensors(self, batch: Any) -> np.ndarray:
        """A stacked uint8 batch (n, H, W, 3) → (n, 512) float32, each row of unit length."""
        import torch

        with torch.inference_mode():
            batch = self.normalise(batch)
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
        embeddings: dict[int, np.ndarray] = {}
        errors: dict[int, ImageError] = {}
        chunks = [range(start, min(start + self.batch_size, len(images)))
                  for start in range(0, len(images), self.batch_size)]
        prepare: Callable[[bytes], Any] = self._prepare_or_error
        if self.device_decoder is not None:  # JPEGs it takes are routed on the threads, decoded per batch
            prepare = self.device_decoder.routed(prepare)

        def submit_on_threads(chunk: Sequence[int]) -> list[Any]:
            return [self._decode_pool.submit(prepare, images[i]) for i in chunk]

        submit: Callable[[Sequence[int]], list[Any]] = submit_on_threads
        if self.device_decoder is not None:
            submit = self.device_decoder.pipelined(submit_on_threads, cpu=self._prepare_or_error)
        pending = submit(chunks[0]) if chunks else []
        for number, chunk in enumerate(chunks):
            prepared = [future.result() for future in pending]
            pending = submit(chunks[number + 1]) if number + 1 < len(chunks) else []
            good = [(i, t) for i, t in zip(chunk, prepared, strict=True) if not isinstance(t, ImageError)]
            errors.update((i, t) for i, t in zip(chunk, prepared, strict=True) if isinstance(t, ImageError))
            if good:
                import torch

                ready = [pixels for _, pixels in good]
                vectors = self.encode_tensors(torch.stack(ready) if self.device_decoder is not None
                                              else torch.from_numpy(np.stack(ready)))
                embeddings.update((i, vector) for (i, _), vector in zip(good, vectors, strict=True))
        return EncodedBatch(embeddings, errors)

    def encode_one(self, data: bytes) -> np.ndarray:
        """One image → its embedding; raises ImageError when it does not decode."""
        result = self.encode([data])
        if 0 in result.errors:
            raise result.errors[0]
        return result.embeddings[0]
