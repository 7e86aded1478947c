"""Commands of the embed step: catalog import and listing, direct matching, the long-running worker."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from raiox.adapters.encoder import Encoder, EncoderUnavailable
from raiox.adapters.imaging import ImageError
from raiox.delivery.sweep import sweep
from raiox.embed.matching import match_image
from raiox.jobloop import default_worker_name
from raiox.repository import catalog
from raiox.services import get_services
from raiox.tools.catalog_import import ManifestError, import_manifest


def _encoder_or_exit() -> Encoder:
    """Load the configured encoder now, so a missing model is one clear error before any work starts."""
    try:
        return get_services().encoder
    except EncoderUnavailable as exc:
        raise click.ClickException(str(exc)) from None


@click.group("catalog")
def catalog_group() -> None:
    """The implant catalog: systems and their reference images."""


@catalog_group.command("import")
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--quiet", is_flag=True, help="No progress bars.")
def catalog_import(manifest: Path, quiet: bool) -> None:
    """Import MANIFEST (.csv or .jsonl: manufacturer, system, type, connection, notes, images).

    CSV separates several images of one row with `|`; paths are relative to the manifest. Importing the
    same manifest again changes nothing."""
    _encoder_or_exit()
    try:
        report = import_manifest(get_services(), manifest, progress=not quiet)
    except ManifestError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"{report.implants} implant rows, {report.images} images: {report.references_added} references "
        f"added, {report.references_present} already present (model {report.model_id})"
    )


@catalog_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def catalog_list(as_json: bool) -> None:
    """Implant systems with their reference-image counts per model id."""
    with get_services().db.transaction() as conn:
        rows = catalog.catalog_summary(conn)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, default=str))
        return
    if not rows:
        click.echo("the catalog is empty: raiox catalog import MANIFEST")
        return
    click.echo(f"{'manufacturer':<24} {'system':<28} {'refs':>5}  model")
    for row in rows:
        click.echo(f"{row['manufacturer'][:24]:<24} {row['system'][:28]:<28} {row['references']:>5}  "
                   f"{row['model_id'] or '-'}")


@click.command("match")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def match_command(image: Path, as_json: bool) -> None:
    """The top implant systems for IMAGE, without creating a case."""
    encoder = _encoder_or_exit()
    try:
        candidates = match_image(get_services(), image.read_bytes())
    except ImageError as exc:
        raise click.ClickException(f"{image}: {exc}") from None
    if as_json:
        click.echo(json.dumps({"model_id": encoder.model_id,
                               "candidates": [c.model_dump() for c in candidates]}))
        return
    if not candidates:
        click.echo(f"no references embedded by {encoder.model_id}: import a catalog first")
    for candidate in candidates:
        click.echo(f"{candidate.rank}. {candidate.manufacturer} {candidate.system}  "
                   f"similarity {candidate.similarity:.3f}")


@click.command("worker")
@click.option("--once", is_flag=True, help="Run until no embed or notify job is due, then exit.")
@click.option("--poll", default=2.0, show_default=True, help="Seconds between looks when idle.")
def worker_command(once: bool, poll: float) -> None:
    """Run due embed and notify jobs continuously (for a long-lived GPU container): the sweeper."""
    services = get_services()
    encoder = _encoder_or_exit()
    name = default_worker_name()
    click.echo(f"worker {name} with {encoder.model_id} on {encoder.device}", err=True)
    try:
        while True:
            report = sweep(services, worker=name, embed_here=True)
            if report.claimed:
                click.echo(json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%S"), **report.as_dict()}))
            elif once:
                return
            else:
                time.sleep(poll)
    except KeyboardInterrupt:
        click.echo("worker stopped", err=True)


@click.command("embed")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--model", default="ViT-B-32", show_default=True, help="open_clip model to time.")
@click.option("--pretrained", default=None, help="Weights (tag or path); default: random, fine for speed.")
@click.option("--images", default=64, show_default=True, help="Films in the batched runs.")
@click.option("--batch-size", default=32, show_default=True, help="Batch size of the pipeline run.")
@click.option("--model-batch-sizes", default="1,8,16,32,64", show_default=True,
              help="Batch sizes tried for the model-only rate.")
def bench_embed_command(as_json: bool, model: str, pretrained: str | None, images: int, batch_size: int,
                        model_batch_sizes: str) -> None:
    """Encoding throughput: one image at a time vs the batched pipeline vs the model alone."""
    from raiox.tools.bench import bench_embed

    settings = get_services().settings
    try:
        encoder = Encoder.load(model, pretrained, device=settings.raiox_device, batch_size=batch_size,
                               max_pixels=settings.raiox_max_image_pixels)
    except EncoderUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    report = bench_embed(encoder, images=images,
                         batch_sizes=tuple(int(size) for size in model_batch_sizes.split(",")))
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(f"{report['model_id']} on {report['device']}, {report['images']} films of 1024x1280")
    click.echo(f"one at a time:      {report['one_at_a_time_images_per_s']:8.2f} images/s")
    click.echo(f"batched pipeline:   {report['pipeline_images_per_s']:8.2f} images/s "
               f"(x{report['pipeline_vs_one_at_a_time']} vs one at a time)")
    click.echo(f"preprocessing only: {report['preprocess_only_images_per_s']:8.2f} images/s")
    best = report["model_only_best_batch_size"]
    click.echo(f"model only (b={best}): {report['model_only_images_per_s'][str(best)]:8.2f} images/s; "
               f"pipeline reaches {report['pipeline_vs_model_only']:.0%} of it")


@click.command("match")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--sizes", default="10000,100000", show_default=True, help="Reference counts to test.")
@click.option("--queries", default=200, show_default=True)
@click.option("--ef-search", default=64, show_default=True)
@click.option("--uniform", is_flag=True, help="Unstructured vectors (HNSW's worst case) instead of clustered ones.")
def bench_match_command(as_json: bool, sizes: str, queries: int, ef_search: int, uniform: bool) -> None:
    """Top-3 latency and recall@3, HNSW vs exact scan, on a scratch embedded database."""
    from raiox.tools.bench import bench_match

    report = bench_match(tuple(int(s) for s in sizes.split(",")), queries=queries, ef_search=ef_search,
                         structured=not uniform)
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(f"{report['data']} synthetic embeddings, {report['references_per_implant']} references per "
               f"implant, ef_search {report['ef_search']}, {report['queries']} queries")
    for row in report["results"]:
        click.echo(f"{row['references']:>8} refs: HNSW p50 {row['hnsw']['p50_ms']} ms p99 {row['hnsw']['p99_ms']} ms"
                   f" | exact p50 {row['exact']['p50_ms']} ms p99 {row['exact']['p99_ms']} ms"
                   f" | x{row['exact_over_hnsw_p50']} | recall@3 {row['recall_at_3']}"
                   f" | index build {row['index_build_s']} s")
