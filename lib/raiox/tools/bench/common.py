"""What every benchmark shares: the machine it ran on, latency percentiles, a periapical-sized film to time."""

from __future__ import annotations

import io
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image


def machine() -> dict[str, Any]:
    import torch

    return {
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
    }


def synthetic_film(seed: int, size: tuple[int, int] = (1024, 1280)) -> bytes:
    """A periapical-sized greyscale JPEG (dark noisy film, bright post); bytes to time, not to match."""
    rng = np.random.default_rng(seed)
    width, height = size
    film = rng.normal(70, 15, size=(height, width))
    left = int(rng.integers(width // 4, width // 2))
    film[height // 5: height * 4 // 5, left:left + width // 8] = 235
    out = io.BytesIO()
    Image.fromarray(np.clip(film, 0, 255).astype(np.uint8), mode="L").save(out, format="JPEG", quality=90)
    return out.getvalue()


def rate(count: int, run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return count / (time.perf_counter() - start)


def latency_summary(samples: list[float]) -> dict[str, float]:
    """p50 and p99 in milliseconds of durations in seconds."""
    ordered = sorted(samples)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 3),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3)}
