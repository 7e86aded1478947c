"""The shape encoder: a small convolutional network over canonical crops (platform up, one diameter wide)
with generalised-mean pooling, giving an embedding, the shape attributes it reads, and whether the crop
is upside down. Configs live beside it (`shape_configs/*.json`), the shipped weights in `weights/`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from raiox.shape.attributes import HEAD_SIZE
from raiox.shape.canonical import CROP_HEIGHT, CROP_WIDTH


@dataclass(frozen=True)
class ShapeNetConfig:
    """An architecture: channel widths of the stem and the three stages after it, and the embedding's size."""

    widths: tuple[int, int, int, int] = (24, 48, 96, 160)
    embed_dim: int = 256

    @classmethod
    def named(cls, name: str) -> ShapeNetConfig:
        path = resources.files("raiox.shape") / "shape_configs" / f"{name}.json"
        if not path.is_file():
            raise KeyError(name)
        return cls.of(json.loads(path.read_text()))

    @classmethod
    def of(cls, fields: dict[str, Any]) -> ShapeNetConfig:
        """From its fields as a config file or a checkpoint's sidecar holds them."""
        return cls(widths=tuple(fields["widths"]), embed_dim=fields["embed_dim"])


def config_names() -> list[str]:
    folder = resources.files("raiox.shape") / "shape_configs"
    return sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json"))


def build(config: ShapeNetConfig) -> Any:
    """A ShapeNet module with random weights (torch is imported here, not when raiox.shape is)."""
    import torch
    from torch import nn

    class Block(nn.Module):
        """Two 3×3 convolutions with batch norm, a shortcut (strided 1×1 when the shape changes)."""

        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.a = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn_a = nn.BatchNorm2d(cout)
            self.b = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn_b = nn.BatchNorm2d(cout)
            self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                         if stride != 1 or cin != cout else nn.Identity())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.bn_a(self.a(x)))
            return torch.relu(self.bn_b(self.b(y)) + self.skip(x))

    class GeM(nn.Module):
        """Generalised-mean pooling over the last two axes, its exponent learnt (3 at the start)."""

        def __init__(self) -> None:
            super().__init__()
            self.p = nn.Parameter(torch.tensor(3.0))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.clamp(min=1e-6).pow(self.p).mean(dim=(-2, -1)).pow(1.0 / self.p)

    class ShapeNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            w = config.widths
            # One strided 5×5 convolution reads the full-resolution crop (threads 4–15 px apart) into half size.
            self.stem = nn.Sequential(nn.Conv2d(1, w[0], 5, 2, 2, bias=False), nn.BatchNorm2d(w[0]),
                                      nn.ReLU(inplace=True))
            self.stages = nn.Sequential(Block(w[0], w[1], 2), Block(w[1], w[2], 2), Block(w[2], w[2], 1),
                                        Block(w[2], w[3], 2), Block(w[3], w[3], 1))
            self.pool_all, self.pool_platform = GeM(), GeM()
            features = 2 * w[3]
            self.embed = nn.Linear(features, config.embed_dim)
            self.attributes = nn.Linear(features, HEAD_SIZE)
            self.upside_down = nn.Linear(features, 1)

        def features(self, crops: torch.Tensor) -> torch.Tensor:
            """uint8 or float crops (n, H, W) in 0…255 → pooled features (n, 2 × widths[-1])."""
            x = (crops.float().unsqueeze(1) - 110.0) / 70.0
            maps = self.stages(self.stem(x))
            # The platform's region (the crop's top quarter: collar, connection, what sits on it) is pooled on
            # its own too, so the embedding keeps which end a feature belongs to.
            top = maps[:, :, : max(1, maps.shape[2] // 4)]
            return torch.cat([self.pool_all(maps), self.pool_platform(top)], dim=1)

        def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """(unit embeddings, attribute head, upside-down logit) for a batch of crops."""
            features = self.features(crops)
            embedding = torch.nn.functional.normalize(self.embed(features), dim=-1)
            return embedding, self.attributes(features), self.upside_down(features).squeeze(-1)

    return ShapeNet()


def for_inference(model: Any) -> Any:
    """A copy of a ShapeNet in evaluation mode that gives the same outputs in fewer passes: each batch norm folded
    into the convolution before it, the tensors in channels-last order (measured faster on the CPU for a film's
    few crops, docs/benchmarks.md)."""
    import copy

    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(model).eval()
    fused.stem[0] = fuse_conv_bn_eval(fused.stem[0], fused.stem[1])
    fused.stem[1] = torch.nn.Identity()
    for block in fused.stages:
        block.a, block.bn_a = fuse_conv_bn_eval(block.a, block.bn_a), torch.nn.Identity()
        block.b, block.bn_b = fuse_conv_bn_eval(block.b, block.bn_b), torch.nn.Identity()
        skip: Any = block.skip  # a strided 1×1 convolution and its batch norm, or the identity
        if not isinstance(block.skip, torch.nn.Identity):
            block.skip = fuse_conv_bn_eval(skip[0], skip[1])
    return fused.to(memory_format=torch.channels_last)


def save(model: Any, config: ShapeNetConfig, path: Path, *, meta: dict[str, Any]) -> None:
    """Weights in half precision (a few MB) and a sidecar naming the architecture and how they were made."""
    import torch

    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    sidecar = {"kind": "raiox-shape", "config": {**asdict(config), "widths": list(config.widths)},
               "crop": [CROP_HEIGHT, CROP_WIDTH], **meta}
    path.with_name(path.name + ".json").write_text(json.dumps(sidecar, indent=1) + "\n")


def load(path: Path) -> tuple[Any, ShapeNetConfig, dict[str, Any]]:
    """A saved ShapeNet in evaluation mode (float32), its config and its sidecar."""
    import torch

    sidecar = json.loads(path.with_name(path.name + ".json").read_text())
    config = ShapeNetConfig.of(sidecar["config"])
    model = build(config)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.eval(), config, sidecar


def checkpoint_config(path: Path) -> ShapeNetConfig:
    """The architecture a checkpoint's sidecar names."""
    return ShapeNetConfig.of(json.loads(path.with_name(path.name + ".json").read_text())["config"])


def is_shape_checkpoint(path: Path) -> bool:
    """Whether `path` is a shape encoder checkpoint (its sidecar says so)."""
    sidecar = path.with_name(path.name + ".json")
    try:
        return sidecar.is_file() and json.loads(sidecar.read_text()).get("kind") == "raiox-shape"
    except (OSError, ValueError):
        return False


def digest(model: Any) -> str:
    """sha256 over parameter names and values, as stored (half precision): one id wherever they load."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().cpu()
        value = value.half() if value.is_floating_point() else value
        h.update(name.encode())
        h.update(value.contiguous().view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return h.hexdigest()
