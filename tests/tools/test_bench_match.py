"""`raiox bench match` on a tiny scale: both scenarios run end to end and report what the docs quote."""

from __future__ import annotations

import numpy as np

from raiox.tools.bench.match import MAIN, RETRAINED, bench_match, retrained_centres, synthetic_centres


def test_one_model_reports_latency_recall_and_index_size() -> None:
    report = bench_match((2_000,), queries=20, exact_queries=5, build_memory="64MB", workers=0)
    [row] = report["results"]
    assert row["references"] == 2_000 and row["implants"] == 200
    assert row["recall_at_3"] == 1.0 and row["exact"]["agrees_with_numpy"] == 1.0  # the exact answer is right
    assert row["index_mb"] > 0 and row["hnsw"]["p50_ms"] > 0 and row["exact"]["queries"] == 5
    assert row["table_mb"] > row["index_mb"] / 10 and report["server"]["shared_buffers"].endswith("B")


def test_two_models_compare_one_shared_graph_with_one_per_model() -> None:
    report = bench_match((3_000,), queries=20, two_models=True, minority=0.1, build_memory="64MB", workers=0)
    [row] = report["results"]
    assert row["models"] == {MAIN: {"references": 2_700, "implants": 270},
                             RETRAINED: {"references": 300, "implants": 30}}
    for layout in ("shared", "per_model"):
        for model in (MAIN, RETRAINED):
            assert row["layouts"][layout][model]["recall_at_3"] >= 0.95


def test_a_retrained_model_sees_the_same_implants_nearby() -> None:
    rng = np.random.default_rng(0)
    centres = synthetic_centres(50, rng)
    moved = retrained_centres(centres, rng)
    similarity = np.sum(centres * moved, axis=1)
    assert 0.9 < similarity.min() and similarity.max() < 0.99  # interleaved with, not equal to, the main model
