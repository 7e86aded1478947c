"""`raiox bench embed`: encoder throughput one image at a time, through the batched pipeline, and model-only."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from raiox.adapters.encoder import Encoder
from raiox.tools.bench.common import machine, rate, synthetic_film


def _encode_all(encoder: Encoder, batches: list[Any]) -> None:
    for batch in batches:
        encoder.encode_tensors(batch)


def bench_embed(encoder: Encoder, *, images: int = 64, single: int = 16,
                batch_sizes: tuple[int, ...] = (1, 8, 16, 32, 64)) -> dict[str, Any]:
    """Images/s one at a time (the source manual's way), through the batched pipeline, and model-only."""
    films = [synthetic_film(seed) for seed in range(images)]
    encoder.encode(films[: encoder.batch_size])  # warm-up: first-call allocations, thread pools
    one_at_a_time = rate(single, lambda: [encoder.encode_one(f) for f in films[:single]])
    decoder = encoder.device_decoder
    decoded_before = decoder.decoded if decoder else 0
    pipeline = rate(images, lambda: encoder.encode(films))
    cpu_decode = None
    if decoder is not None:  # the same pipeline with every film decoded on the CPU: the baseline of GPU decoding
        encoder.device_decoder = None
        try:
            encoder.encode(films[: encoder.batch_size])
            cpu_decode = rate(images, lambda: encoder.encode(films))
        finally:
            encoder.device_decoder = decoder
    preprocess = rate(images, lambda: [encoder.prepare(f) for f in films])

    import torch

    tensors = torch.from_numpy(np.stack([encoder.prepare(f) for f in films]))
    model_only = {}
    for size in batch_sizes:
        batches = [tensors[i:i + size] for i in range(0, len(tensors), size)]
        model_only[size] = rate(len(tensors), partial(_encode_all, encoder, batches))
    best_size = max(model_only, key=lambda s: model_only[s])
    return {
        "benchmark": "embed",
        "model_id": encoder.model_id,
        "device": encoder.device,
        "film_size": [1024, 1280],
        "film_kib": round(sum(len(f) for f in films) / len(films) / 1024),
        "images": images,
        "pipeline_batch_size": encoder.batch_size,
        "one_at_a_time_images_per_s": round(one_at_a_time, 2),
        "pipeline_images_per_s": round(pipeline, 2),
        "device_jpeg_decode": decoder is not None,
        "device_decoded": decoder.decoded - decoded_before if decoder else 0,
        "pipeline_cpu_decode_images_per_s": round(cpu_decode, 2) if cpu_decode else None,
        "preprocess_only_images_per_s": round(preprocess, 2),
        "model_only_images_per_s": {str(k): round(v, 2) for k, v in model_only.items()},
        "model_only_best_batch_size": best_size,
        "pipeline_vs_model_only": round(pipeline / model_only[best_size], 3),
        "pipeline_vs_one_at_a_time": round(pipeline / one_at_a_time, 2),
        "machine": machine(),
    }
