"""`raiox bench …`: the benchmarks, each reporting its baseline from the same run (add --json for one line)."""

from __future__ import annotations

import json

import click

from raiox.adapters.encoder import Encoder, EncoderUnavailable
from raiox.settings import Settings
from raiox.tools.commands.common import pass_settings


def positive_numbers(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    """A comma-separated list of whole numbers above 0, refused before any benchmark starts."""
    try:
        numbers = tuple(int(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: whole numbers separated by commas, e.g. 1,8,16") from None
    if not numbers or min(numbers) < 1:
        raise click.BadParameter(f"{value!r}: every number must be 1 or more")
    return numbers


@click.group("bench")
def bench_group() -> None:
    """Benchmarks; each reports its baseline from the same run. Add --json for one JSON line."""


@bench_group.command("embed")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--model", default="ViT-B-32", show_default=True, help="open_clip model to time.")
@click.option("--pretrained", default=None, help="Weights (tag or path); default: random, fine for speed.")
@click.option("--images", default=64, show_default=True, type=click.IntRange(1), help="Films in the batched runs.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1),
              help="Batch size of the pipeline run.")
@click.option("--model-batch-sizes", default="1,8,16,32,64", show_default=True, callback=positive_numbers,
              help="Batch sizes tried for the model-only rate.")
@pass_settings
def bench_embed_command(settings: Settings, as_json: bool, model: str, pretrained: str | None, images: int,
                        batch_size: int, model_batch_sizes: tuple[int, ...]) -> None:
    """Encoding throughput: one image at a time vs the batched pipeline vs the model alone (on CUDA also the
    pipeline with GPU JPEG decoding against the same with CPU decoding)."""
    from raiox.tools.bench.embed import bench_embed

    try:
        encoder = Encoder.load(model, pretrained, device=settings.raiox_device, batch_size=batch_size,
                               max_pixels=settings.raiox_max_image_pixels)
    except EncoderUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    report = bench_embed(encoder, images=images,
                         batch_sizes=model_batch_sizes)
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(f"{report['model_id']} on {report['device']}, {report['images']} films of 1024x1280")
    click.echo(f"one at a time:      {report['one_at_a_time_images_per_s']:8.2f} images/s")
    click.echo(f"batched pipeline:   {report['pipeline_images_per_s']:8.2f} images/s "
               f"(x{report['pipeline_vs_one_at_a_time']} vs one at a time; JPEGs decoded on "
               f"{'the GPU' if report['device_jpeg_decode'] else 'the CPU'})")
    if report["pipeline_cpu_decode_images_per_s"] is not None:
        click.echo(f"  same, CPU decoding: {report['pipeline_cpu_decode_images_per_s']:8.2f} images/s (baseline)")
    click.echo(f"preprocessing only: {report['preprocess_only_images_per_s']:8.2f} images/s")
    best = report["model_only_best_batch_size"]
    click.echo(f"model only (b={best}): {report['model_only_images_per_s'][str(best)]:8.2f} images/s; "
               f"pipeline reaches {report['pipeline_vs_model_only']:.0%} of it")


@bench_group.command("identify")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--films", default=24, show_default=True, type=click.IntRange(4), help="Rendered films per generator.")
@pass_settings
def bench_identify_command(settings: Settings, as_json: bool, films: int) -> None:
    """Milliseconds per film for the configured identifier (RAIOX_CLIP_MODEL / RAIOX_CLIP_PRETRAINED): one film
    at a time and batched, with the time of each stage (decode, find and straighten, describe, encoder)."""
    from raiox.shape.identifier import ShapeIdentifier
    from raiox.tools.bench.identify import bench_identify

    try:
        identifier = ShapeIdentifier.from_settings(settings)
    except EncoderUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    report = bench_identify(identifier, films=films)
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(f"{report['model_id']} on {report['device']}, {films} rendered films per generator")
    for renderer, result in report["renderers"].items():
        stages = ", ".join(f"{name} {ms} ms" for name, ms in result["stages_ms"].items())
        click.echo(f"{renderer}: {result['one_at_a_time_ms']} ms per film one at a time, "
                   f"{result['batched_ms']} ms batched ({result['pixels_per_film'] / 1e6:.2f} Mpx, "
                   f"{result['implants_per_film']} implants per film; {stages})")


@bench_group.command("match")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--sizes", default="10000,100000", show_default=True, callback=positive_numbers,
              help="Reference counts to test.")
@click.option("--queries", default=200, show_default=True, type=click.IntRange(1))
@click.option("--ef-search", default="64", show_default=True, callback=positive_numbers,
              help="hnsw.ef_search; several (64,128) measure one model's index at each, the first in the table.")
@click.option("--uniform", is_flag=True, help="Unstructured vectors (HNSW's worst case) instead of clustered ones.")
@click.option("--two-models", is_flag=True,
              help="Two models in one table (--minority of the references under a retrained one): one shared "
                   "HNSW graph (the layout before migration 0005, the baseline) against one index per model.")
@click.option("--minority", default=0.1, show_default=True, type=click.FloatRange(0.01, 0.5),
              help="With --two-models: the retrained model's share of the references.")
@click.option("--exact-queries", default=50, show_default=True, type=click.IntRange(1),
              help="Queries timed with the exact scan (recall is measured on every query, against an exact "
                   "answer computed while loading).")
@click.option("--build-memory", default="1GB", show_default=True, help="maintenance_work_mem of index builds.")
@click.option("--build-workers", default=2, show_default=True, type=click.IntRange(0),
              help="max_parallel_maintenance_workers of index builds.")
@click.option("--shared-buffers", default=None, help="shared_buffers of the scratch server (default: pgserver's).")
def bench_match_command(as_json: bool, sizes: tuple[int, ...], queries: int, ef_search: tuple[int, ...],
                        uniform: bool, two_models: bool, minority: float, exact_queries: int, build_memory: str,
                        build_workers: int, shared_buffers: str | None) -> None:
    """Top-3 latency and recall@3 of matching against an exact answer, on a scratch embedded database."""
    from raiox.tools.bench.match import bench_match

    first_ef, *more_ef = ef_search
    report = bench_match(sizes, queries=queries, ef_search=first_ef,
                         more_ef_search=tuple(more_ef), structured=not uniform, two_models=two_models,
                         minority=minority,
                         exact_queries=exact_queries, build_memory=build_memory, workers=build_workers,
                         shared_buffers=shared_buffers)
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(f"{report['data']} synthetic embeddings, {report['references_per_implant']} references per "
               f"implant, ef_search {report['ef_search']}, {report['queries']} queries, "
               f"shared_buffers {report['server']['shared_buffers']}")
    for result in report["results"]:
        if report["scenario"] == "one_model":
            hnsw = result["hnsw"]
            click.echo(f"{result['references']:>8} refs: HNSW p50 {hnsw['p50_ms']} ms p99 {hnsw['p99_ms']} ms"
                       f" | exact p50 {result['exact']['p50_ms']} ms p99 {result['exact']['p99_ms']} ms"
                       f" | x{result['exact_over_hnsw_p50']} | recall@3 {result['recall_at_3']}"
                       f" | index build {result['index_build_s']} s, {result['index_mb']} MB")
            for other in result["ef_search_sweep"][1:]:
                click.echo(f"{'':>14}ef_search {other['ef_search']}: p50 {other['p50_ms']} ms p99 {other['p99_ms']} "
                           f"ms | recall@3 {other['recall_at_3']}")
            continue
        for layout, measured in result["layouts"].items():
            click.echo(f"{result['references']:>8} refs, {layout:<9} index ({measured['index_build_s']} s, "
                       f"{measured['index_mb']} MB):")
            for model_id, counts in result["models"].items():
                m = measured[model_id]
                click.echo(f"    {model_id:<16} {counts['references']:>8} refs: p50 {m['p50_ms']} ms "
                           f"p99 {m['p99_ms']} ms | recall@3 {m['recall_at_3']} | "
                           f"{m['exact_fallbacks']} exact fallbacks")


@bench_group.command("webhook")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line.")
@click.option("--requests", "count", default=100, show_default=True, type=click.IntRange(1),
              help="Requests per scenario and concurrency.")
def bench_webhook_command(as_json: bool, count: int) -> None:
    """Ack latency of the webhook (loopback, throw-away embedded database and local objects).

    Scenarios: `refused` (wrong token: the HTTP stack alone, the baseline), `new` (record the case and its
    fetch job in one transaction; the film is fetched after the answer) and `duplicate` (the repeat fast
    path), each with 1 and 16 concurrent clients."""
    from raiox.tools.bench.webhook import bench_webhook

    report = bench_webhook(count=count)
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(f"{'scenario':<10} {'clients':>7} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>7}  statuses")
    for result in report["results"]:
        click.echo(f"{result['scenario']:<10} {result['concurrency']:>7} {result['requests']:>8} {result['p50_ms']:>8} "
                   f"{result['p99_ms']:>8} {result['throughput_rps']:>7}  {result['statuses']}")


@bench_group.command("intake")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line.")
@click.option("--scenarios", default="isolated,in_process,unguarded", show_default=True,
              help="Comma-separated: isolated, in_process, unguarded (the baseline: header limits lifted).")
@click.option("--scale", default=1, show_default=True, type=click.IntRange(1, 4),
              help="Multiplies the inflating bombs (1: a 1 GiB deflated DICOM and a 1 GiB RLE segment).")
def bench_intake_command(as_json: bool, scenarios: str, scale: int) -> None:
    """Peak memory of intake under a bomb mix (one bomb of each codec and four good films, submitted by URL and
    fetched eight at once) and `/health` latency meanwhile, each scenario in a fresh process: `isolated`
    (decoding in child processes, the default), `in_process` (header limits only) and `unguarded` (the
    baseline: decoding in the process with the header limits lifted)."""
    from raiox.tools.bench.intake import SCENARIOS, bench_intake

    chosen = [name.strip() for name in scenarios.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SCENARIOS]
    if unknown:
        raise click.BadParameter(f"unknown scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    report = bench_intake(scenarios=chosen, scale=scale)
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo("mix: " + ", ".join(f"{name} {size / 1e6:.2f} MB" for name, size in report["mix_bytes"].items()))
    for result in report["results"]:
        if "error" in result:
            click.echo(f"{result['scenario']}: failed ({result['error']})\n{result['stderr_tail']}")
            continue
        busy, idle = result["health_during_fetch"], result["health_idle"]
        click.echo(f"{result['scenario']:<11} peak RSS {result['peak_rss_mib']:7.0f} MiB (before fetch "
                   f"{result['peak_rss_before_fetch_mib']:.0f}), "
                   f"children's peak {result['children_peak_rss_mib']:.0f} MiB, fetch {result['fetch_seconds']} s, "
                   f"/health p50 {busy.get('p50_ms')} ms max {busy.get('max_ms')} ms "
                   f"(idle p50 {idle.get('p50_ms')} ms)")
        for film, outcome in result["films"].items():
            click.echo(f"    {film:<18} {outcome}")


@bench_group.command("pipeline")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line.")
@click.option("--submissions", default=20, show_default=True, type=click.IntRange(1, 500),
              help="Submissions timed from webhook to `ready`, one at a time.")
@click.option("--model", default="raiox-tiny-vit", show_default=True, help="open_clip model of dev, worker and match.")
@click.option("--pretrained", default=None, help="Its weights (tag or path); default: seeded random (speed only).")
@click.option("--cold-runs", default=3, show_default=True, type=click.IntRange(1, 20),
              help="Fresh `raiox match` processes timed.")
def bench_pipeline_command(as_json: bool, submissions: int, model: str, pretrained: str | None,
                           cold_runs: int) -> None:
    """Webhook-to-ready p50/p99 through `raiox dev` + a worker vs the webhook ack alone; embed cold start
    (process start to first result of `raiox match`) vs a warm match in one process."""
    from raiox.tools.bench.pipeline import bench_pipeline

    report = bench_pipeline(submissions=submissions, model=model, pretrained=pretrained, cold_runs=cold_runs)
    if as_json:
        click.echo(json.dumps(report))
        return
    flow, cold = report["webhook_to_ready"], report["cold_start"]
    click.echo(f"{report['model_id']} on {report['device']}, {flow['submissions']} films of 1024x1280, "
               f"{flow['server']}")
    click.echo(f"{'':<28} {'p50 ms':>9} {'p99 ms':>9}")
    click.echo(f"{'webhook ack (baseline)':<28} {flow['ack']['p50_ms']:>9} {flow['ack']['p99_ms']:>9}")
    click.echo(f"{'webhook to ready':<28} {flow['ready']['p50_ms']:>9} {flow['ready']['p99_ms']:>9}  "
               f"x{flow['ready_over_ack_p50']} the ack")
    click.echo(f"cold start (fresh `raiox match`, median of {cold['runs']}): {cold['process_to_first_result_s']} s; "
               f"warm match p50 {cold['warm_match_p50_ms']} ms (x{cold['cold_over_warm']})")
